"""Data that stays on the host: the streamed path trains like the device-resident one, checks what it reads."""

import logging

import jax
import numpy as np
import pytest
from flax import nnx

import dlfund
from dlfund.models import MLP
from dlfund.train import sources


def problem(n=200):
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=2.0, size=(3, 4))
    y = rng.integers(0, 3, size=n).astype(np.int32)
    x = (centers[y] + rng.normal(size=(n, 4))).astype(np.float32)
    return (x[:160], y[:160]), (x[160:], y[160:])


def fit(data, **kwargs):
    model = MLP(4, (16,), 3, dropout=0.2, rngs=nnx.Rngs(0))
    options = {"epochs": 3, "batch_size": 16, "learning_rate": 0.01, "progress": False, **kwargs}
    return dlfund.fit(model, data, **options)


def leaves(result):
    return [np.asarray(a) for a in jax.tree.leaves(nnx.state(result.model))]


class Reader:
    """A minimal lazy source, like dlfund.data.SplitReader: len, input_shape, read(indices)."""

    def __init__(self, x, y):
        self.x, self.y, self.input_shape, self.reads = x, y, x.shape[1:], 0

    def __len__(self):
        return len(self.x)

    def read(self, indices=None):
        self.reads += 1
        indices = slice(None) if indices is None else indices
        return self.x[indices], self.y[indices]


def test_streamed_and_device_resident_training_give_the_same_result():
    train, val = problem()
    resident = fit(train, validation_data=val, execution="loop")
    streamed = fit(train, validation_data=val, data_placement="stream")
    scanned = fit(train, validation_data=val)
    assert streamed.execution == "stream" and streamed.config["data_placement"] == "stream"
    assert resident.config["data_placement"] == "device"
    # Same step program, same batches in the same order: the same numbers.
    assert streamed.history == resident.history
    for a, b in zip(leaves(streamed), leaves(resident), strict=True):
        np.testing.assert_array_equal(a, b)
    # The scanned epoch is another XLA program: equal up to float rounding.
    np.testing.assert_allclose(streamed.history["loss"], scanned.history["loss"], rtol=1e-5)
    np.testing.assert_allclose(streamed.history["val_loss"], scanned.history["val_loss"], rtol=1e-5)


def test_a_lazy_reader_streams_or_is_read_once_onto_the_device():
    train, val = problem()
    reader = Reader(*train)
    streamed = fit(reader, validation_data=Reader(*val), data_placement="stream")
    assert reader.reads == 3 * (160 // 16)  # one read per batch, every epoch
    reader = Reader(*train)
    placed = fit(reader, validation_data=val)  # small: auto puts it on the device
    assert placed.config["data_placement"] == "device" and reader.reads == 1
    np.testing.assert_allclose(placed.history["loss"], streamed.history["loss"], rtol=1e-5)


def test_auto_placement_streams_what_exceeds_the_budget_and_logs_it(monkeypatch, caplog):
    monkeypatch.setattr(sources, "DEVICE_DATA_FRACTION", 1e-12)
    train, _ = problem()
    with caplog.at_level(logging.INFO, logger="dlfund"):
        result = fit(train, epochs=1)
    assert result.execution == "stream"
    assert "training data placement: stream" in caplog.text and "exceed the device budget" in caplog.text


def test_choose_placement():
    assert sources.choose_placement(10, budget=100)[0] == "device"
    assert sources.choose_placement(1000, budget=100)[0] == "stream"
    assert sources.choose_placement(10, "stream", budget=100)[0] == "stream"
    with pytest.raises(ValueError, match="Known: auto, device, stream"):
        sources.choose_placement(10, "disk")


def test_streamed_batches_are_checked_as_they_are_read():
    (x, y), _ = problem()
    bad_x = x.copy()
    bad_x[37, 1] = np.nan
    with pytest.raises(ValueError, match=r"train inputs contain NaN/Inf values .*streamed batch"):
        fit(Reader(bad_x, y), data_placement="stream")
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\); found \[7\]"):
        fit(Reader(x, np.where(y == 2, 7, y)), data_placement="stream")
    with pytest.raises(ValueError, match=r"contain 1 NaN/Inf values .*example 37"):
        fit(Reader(bad_x, y))  # small enough for the device: read and checked before training
    with pytest.raises(ValueError, match="needs the training data on the device"):
        fit((x, y), data_placement="stream", execution="scan")


def test_a_reader_without_input_shape_is_told_what_it_lacks():
    (x, y), _ = problem()

    class Shapeless:  # only what HostSource's first version asked for: len and read
        def __len__(self):
            return len(x)

        def read(self, indices=None):
            return x[indices], y[indices]

    message = r"reader \(Shapeless: read and len\) without input_shape"
    with pytest.raises(TypeError, match=message):
        fit(Shapeless(), data_placement="stream")
    with pytest.raises(TypeError, match=message):
        dlfund.evaluate(MLP(4, (16,), 3, rngs=nnx.Rngs(0)), Shapeless())


def test_evaluate_reads_a_lazy_split_batch_by_batch():
    train, val = problem()
    result = fit(train)
    reader = Reader(*val)
    report = dlfund.evaluate(result.model, reader, batch_size=16)
    expected = dlfund.evaluate(result.model, val)
    assert reader.reads == 3  # 40 examples in batches of 16: the last one padded and masked
    assert report["num_examples"] == 40
    for key in ("loss", "accuracy", "f1_macro"):
        assert report[key] == pytest.approx(expected[key], rel=1e-5)
    assert report["confusion_matrix"] == expected["confusion_matrix"]


def test_fit_on_open_splits(tmp_path):
    readers = dlfund.data.open_splits("iris", data_dir=tmp_path)
    model = MLP(4, (16,), 3, rngs=nnx.Rngs(0))
    result = dlfund.fit(model, readers, epochs=2, batch_size=16, data_placement="stream", progress=False)
    assert result.config["num_train"] == len(readers.train) and "val_loss" in result.history
    assert dlfund.evaluate(model, readers.test)["num_examples"] == len(readers.test)
