"""Tests for the offline builders added beside digits (iris, wine, digits_rows, sines), regression datasets, the
persistence baseline and the lazy split readers."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from dlfund.data import Dataset, Normalization, SplitReader, load, open_splits, persistence_mse
from dlfund.data.builders.sines import generate_sines

# sha256 of generate_sines(2000, 32, 20261124)'s x and y bytes, first 16 hex digits (measured once).
SINES_DIGEST = "18dbbf676b7337e5"
# name -> (N, input_shape, class names, (train, val, test) sizes at val_fraction=0.1)
TABULAR = {
    "iris": (150, (4,), ("setosa", "versicolor", "virginica"), (108, 12, 30)),
    "wine": (178, (13,), ("class_0", "class_1", "class_2"), (128, 14, 36)),
}


@pytest.fixture(scope="module")
def prepared_dir(tmp_path_factory) -> Path:
    data_dir = tmp_path_factory.mktemp("tfds")
    for name in ("iris", "wine", "digits", "digits_rows", "sines"):
        load(name, data_dir=data_dir)
    return data_dir


def _sklearn(name: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_iris, load_wine

    data = {"iris": load_iris, "wine": load_wine}[name]()
    return data.data.astype(np.float32), data.target


@pytest.mark.parametrize("name", sorted(TABULAR))
def test_tabular_datasets_sizes_classes_and_per_feature_normalization(prepared_dir, name):
    n, input_shape, class_names, sizes = TABULAR[name]
    ds = load(name, data_dir=prepared_dir)
    assert ds.task == "classification"
    assert ds.input_shape == input_shape
    assert ds.class_names == class_names
    assert ds.num_classes == len(class_names)
    assert [len(y) for _, y in ds.splits().values()] == list(sizes)
    assert sum(sizes) == n
    for x, y in ds.splits().values():
        assert x.dtype == np.float32 and y.dtype == np.int32
        assert set(np.unique(y)) == set(range(len(class_names)))  # stratified: every class in every split
    # One mean/std per feature, fitted on the final train split only.
    assert ds.normalization.mean.shape == input_shape
    x_raw, y_raw = _sklearn(name)
    train_raw = ds.normalization.invert(ds.train[0]).astype(np.float64)
    np.testing.assert_allclose(ds.normalization.mean, train_raw.mean(axis=0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ds.train[0].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(ds.train[0].std(axis=0), 1.0, rtol=1e-4)
    assert np.abs(ds.normalization.mean - x_raw.mean(axis=0)).max() > 1e-3  # not the statistics of all data
    # Together the splits are the source data exactly once (as a multiset: iris has duplicate flowers),
    # with the right labels.
    stored = np.concatenate([ds.normalization.invert(x) for x, _ in ds.splits().values()])
    labels = np.concatenate([y for _, y in ds.splits().values()])
    order_found = np.lexsort(np.round(stored, 2).T[::-1])
    order_source = np.lexsort(np.round(x_raw, 2).T[::-1])
    np.testing.assert_allclose(stored[order_found], x_raw[order_source], rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(np.bincount(labels), np.bincount(y_raw))


@pytest.mark.parametrize("name", ["iris", "wine", "digits_rows", "sines"])
def test_builders_are_deterministic_across_independent_preparations(prepared_dir, tmp_path, name):
    fresh = load(name, data_dir=tmp_path)
    reference = load(name, data_dir=prepared_dir)
    for split in ("train", "val", "test"):
        for a, b in zip(fresh.splits()[split], reference.splits()[split], strict=True):
            np.testing.assert_array_equal(a, b)
    # The fixed test split does not depend on the seed; the validation split does.
    other = load(name, data_dir=prepared_dir, seed=1)
    if reference.target_normalization is None:
        np.testing.assert_array_equal(other.test[1], reference.test[1])
    else:  # normalized with the seed's train statistics: compare stored values
        np.testing.assert_allclose(
            other.target_normalization.invert(other.test[1]),
            reference.target_normalization.invert(reference.test[1]),
            atol=1e-5,
        )
    np.testing.assert_allclose(
        other.normalization.invert(other.test[0]), reference.normalization.invert(reference.test[0]), atol=1e-4
    )
    assert not np.array_equal(other.val[0], reference.val[0])


def test_digits_rows_are_the_digits_read_row_by_row(prepared_dir):
    rows = load("digits_rows", data_dir=prepared_dir)
    digits = load("digits", data_dir=prepared_dir)
    assert rows.input_shape == (8, 8)  # (T, F)
    assert rows.class_names == digits.class_names
    for split in ("train", "val", "test"):
        (x_rows, y_rows), (x_digits, y_digits) = rows.splits()[split], digits.splits()[split]
        # Same examples in the same order, same labels: the same fixed test split and the same carve.
        np.testing.assert_array_equal(y_rows, y_digits)
        np.testing.assert_allclose(
            rows.normalization.invert(x_rows), digits.normalization.invert(x_digits)[..., 0], atol=1e-4
        )
    # One ink statistic, as for the digits images.
    assert rows.normalization.mean.size == 1
    np.testing.assert_allclose(rows.normalization.mean.item(), digits.normalization.mean.item(), rtol=1e-6)


def test_sines_is_a_regression_dataset(prepared_dir):
    ds = load("sines", data_dir=prepared_dir)
    assert ds.task == "regression"
    assert ds.num_classes is None
    assert ds.class_names == ()
    assert ds.input_shape == (32, 1)
    assert [len(y) for _, y in ds.splits().values()] == [1440, 160, 400]
    for x, y in ds.splits().values():
        assert x.dtype == np.float32 and y.dtype == np.float32
        assert y.shape == (len(x),)
        assert np.isfinite(x).all() and np.isfinite(y).all()
    # Targets share the inputs' units: the target map is the input map in scalar form.
    assert ds.target_normalization.mean.shape == ()
    assert ds.target_normalization.mean == ds.normalization.mean.item()
    assert ds.target_normalization.std == ds.normalization.std.item()
    np.testing.assert_allclose(ds.train[0].mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(ds.train[0].std(), 1.0, rtol=1e-4)
    assert "regression" in repr(ds) and "y (N,) float32" in repr(ds)


def test_sines_values_are_pinned():
    # The data must not change with a NumPy upgrade: its random numbers come from PCG64's raw stream.
    x, y = generate_sines(2000, 32, 20261124)
    assert x.shape == (2000, 32, 1) and y.shape == (2000,)
    assert x.dtype == np.float32 and y.dtype == np.float32
    digest = hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()[:16]
    assert digest == SINES_DIGEST
    # Each series continues smoothly into its target (steps of at most a few units of noise and slope).
    assert np.abs(y - x[:, -1, 0]).max() < 2.0
    again_x, again_y = generate_sines(2000, 32, 20261124)
    np.testing.assert_array_equal(again_x, x)
    np.testing.assert_array_equal(again_y, y)
    other_x, _ = generate_sines(2000, 32, 1)
    assert not np.array_equal(other_x, x)


def test_persistence_baseline_matches_an_independent_computation(prepared_dir):
    import tensorflow_datasets as tfds

    ds = load("sines", data_dir=prepared_dir)
    baseline = persistence_mse(ds)
    # Independently: the stored test records, the last window value against the next one, in plain Python,
    # then in the dataset's normalized units (divided by the input std squared; scale is 1).
    source = tfds.data_source("sines", split="test", data_dir=os.fspath(prepared_dir))
    total = 0.0
    for i in range(len(source)):
        record = source[i]
        total += (float(record["window"][-1, 0]) - float(record["target"])) ** 2
    raw_mse = total / len(source)
    assert baseline == pytest.approx(raw_mse / ds.normalization.std.item() ** 2, rel=1e-5)
    # The same through the normalized arrays directly: the forecast is x[:, -1, 0].
    x, y = ds.test
    assert baseline == pytest.approx(float(np.mean((x[:, -1, 0].astype(np.float64) - y) ** 2)), rel=1e-5)
    # A meaningful bar: far better than predicting the mean, and a linear autoregression on the train windows
    # (sums of sines obey linear recurrences) beats it by a wide margin.
    assert baseline < 0.6 * float(np.var(y))
    x_train, y_train = ds.train
    design = np.c_[x_train[:, :, 0], np.ones(len(x_train))]
    weights, *_ = np.linalg.lstsq(design, y_train, rcond=None)
    linear_mse = float(np.mean((np.c_[x[:, :, 0], np.ones(len(x))] @ weights - y) ** 2))
    assert linear_mse < 0.5 * baseline


def test_persistence_baseline_rejects_what_it_cannot_score(prepared_dir):
    with pytest.raises(ValueError, match="needs a regression dataset"):
        persistence_mse(load("iris", data_dir=prepared_dir))
    with pytest.raises(ValueError, match="split must be one of"):
        persistence_mse(load("sines", data_dir=prepared_dir), split="validation")


def test_regression_dataset_trains_with_fit(prepared_dir):
    from flax import nnx

    import dlfund

    ds = load("sines", data_dir=prepared_dir)
    model = dlfund.models.MLP(32, (32,), 1, rngs=nnx.Rngs(0))
    result = dlfund.fit(model, ds, loss="mse", metrics=(), epochs=3, batch_size=64, progress=False)
    assert len(result.history["val_loss"]) == 3  # validated on the regression val split every epoch
    loss = dlfund.evaluate(result.model, ds.test, loss="mse")["loss"]
    assert np.isfinite(loss)


# ---------------------------------------------------------------------------------------------- split readers


@pytest.mark.parametrize("name", ["digits", "sines"])
def test_open_splits_gives_what_load_gives(prepared_dir, name):
    readers = open_splits(name, data_dir=prepared_dir, seed=2, chunk_size=100)
    ds = load(name, data_dir=prepared_dir, seed=2)
    assert readers.task == ds.task
    assert readers.input_shape == ds.input_shape
    np.testing.assert_allclose(readers.normalization.mean, ds.normalization.mean, rtol=1e-6)
    np.testing.assert_allclose(readers.normalization.std, ds.normalization.std, rtol=1e-6)
    loaded = readers.load()
    for split in ("train", "val", "test"):
        reader: SplitReader = getattr(readers, split)
        x, y = ds.splits()[split]
        assert len(reader) == len(y)
        np.testing.assert_allclose(loaded.splits()[split][0], x, atol=1e-5)
        np.testing.assert_allclose(loaded.splits()[split][1], y, atol=1e-5)
        # Lazily, by index range, list, slice and negative index: the same values at the same positions.
        np.testing.assert_allclose(reader.read(range(10, 20))[0], x[10:20], atol=1e-5)
        np.testing.assert_allclose(reader.read([5, 1, 3])[1], y[[5, 1, 3]], atol=1e-5)
        np.testing.assert_allclose(reader.read(slice(0, 7, 2))[0], x[0:7:2], atol=1e-5)
        np.testing.assert_allclose(reader.read([-1])[0], x[-1:], atol=1e-5)


def test_split_reader_raw_reads_and_edge_cases(prepared_dir):
    readers = open_splits("digits", data_dir=prepared_dir)
    x_raw, y = readers.test.read_raw(range(3))
    assert x_raw.dtype == np.uint8 and x_raw.shape == (3, 8, 8, 1)
    assert y.dtype == np.int32
    assert x_raw.max() <= 16
    empty_x, empty_y = readers.test.read([])
    assert empty_x.shape == (0, 8, 8, 1) and empty_y.shape == (0,)
    with pytest.raises(IndexError):
        readers.test.read([len(readers.test)])
    with pytest.raises(TypeError, match="indices must be"):
        readers.test.read([[0, 1]])
    unfitted = readers.test.with_normalization(None)
    with pytest.raises(ValueError, match="no normalization yet"):
        unfitted.read([0])
    sub = readers.train.subset(range(4))
    np.testing.assert_array_equal(sub.read()[0], readers.train.read(range(4))[0])
    assert [len(x) for x, _ in readers.train.chunks(500)] == [500, 500, 294]


# ------------------------------------------------------------------------------------- normalization, Dataset


def test_chunked_fit_equals_the_whole_array_fit():
    rng = np.random.default_rng(0)
    x = (rng.normal(loc=3.0, scale=2.0, size=(9000, 5, 3)) * [1, 10, 100]).astype(np.float32)
    fitted = Normalization.fit(x, axis=(0, 1), scale=0.5)  # crosses the 4096-example chunk boundary twice
    expected = x.astype(np.float64) * 0.5
    np.testing.assert_allclose(fitted.mean, expected.mean(axis=(0, 1), keepdims=True)[0], rtol=1e-6)
    np.testing.assert_allclose(fitted.std, expected.std(axis=(0, 1), keepdims=True)[0], rtol=1e-6)
    chunks = Normalization.fit_chunks([x[:1], x[1:7000], x[7000:7000], x[7000:]], axis=(0, 1), scale=0.5)
    np.testing.assert_allclose(chunks.mean, fitted.mean, rtol=1e-6)
    np.testing.assert_allclose(chunks.std, fitted.std, rtol=1e-6)
    with pytest.raises(ValueError, match="empty split"):
        Normalization.fit(x[:0], axis=(0,))


def test_dataset_checks_the_task_it_claims():
    x = np.zeros((4, 2), np.float32)
    norm = Normalization.identity()
    regression = Dataset(
        "r",
        (x, np.zeros(4, np.float32)),
        (x, np.zeros(4, np.float32)),
        (x, np.zeros(4, np.float32)),
        None,
        (2,),
        (),
        norm,
    )
    assert regression.task == "regression"
    with pytest.raises(ValueError, match="expected x float32 and y float32"):
        Dataset(
            "r",
            (x, np.zeros(4, np.int32)),
            (x, np.zeros(4, np.int32)),
            (x, np.zeros(4, np.int32)),
            None,
            (2,),
            (),
            norm,
        )
    with pytest.raises(ValueError, match="has no class names"):
        Dataset("r", regression.train, regression.val, regression.test, None, (2,), ("a",), norm)
    labels = (x, np.zeros(4, np.int32))
    with pytest.raises(ValueError, match="target_normalization must be None"):
        Dataset("c", labels, labels, labels, 2, (2,), ("a", "b"), norm, target_normalization=norm)
    with pytest.raises(ValueError, match="one mean and std"):
        Normalization(mean=np.zeros(2, np.float32), std=np.ones(2, np.float32)).scalar()
