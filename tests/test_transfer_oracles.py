"""Oracles for transfer learning, weights files, checkpoints and run folders: cases the main tests leave open.

Each test pins one behaviour a plausible one-line slip would break (found by mutating dlfund/train/freezing.py,
transfer.py, weights.py, checkpoint.py and train/saved_run.py); the comments say which.
"""

import dataclasses
import json
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import dlfund
from dlfund import checkpoint
from dlfund.checkpoint import CheckpointError, CheckpointStore, CheckpointWarning
from dlfund.data import Normalization
from dlfund.models import MLP


def small_cnn(num_classes=3, seed=0):
    return dlfund.models.CNN(
        (8, 8, 1), channels=(4, 8), dense=(16,), num_classes=num_classes, batch_norm=True, rngs=nnx.Rngs(seed)
    )


def weights(model):
    return dlfund.weights.flat_arrays(model)


# --- freezing ---------------------------------------------------------------------------------------------------


def test_a_batch_norm_layer_is_held_only_when_all_of_its_parameters_are_frozen():
    """Keras's rule: a layer half frozen (its scale fixed, its bias training) still trains, so its statistics move."""
    model = small_cnn()
    scale_only = dlfund.create_train_state(model, key=jax.random.key(0), freeze="norms/*/scale")
    assert scale_only.freezing.frozen == ("norms/0/scale", "norms/1/scale")
    assert scale_only.freezing.held_norms == ()
    whole = dlfund.create_train_state(model, key=jax.random.key(0), freeze=["norms/0"])
    assert whole.freezing.held_norms == ("norms/0",)


def test_an_empty_freeze_list_freezes_nothing_and_slashes_around_a_pattern_do_not_matter():
    model = small_cnn()
    for nothing in ([], ()):
        assert dlfund.create_train_state(model, key=jax.random.key(0), freeze=nothing).freezing is None
    frozen = dlfund.train.freezing.frozen_paths
    assert (
        frozen(model, "convs/")
        == frozen(model, "/convs")
        == frozen(model, "convs")
        == (
            "convs/0/kernel",
            "convs/1/kernel",
        )
    )


@pytest.mark.parametrize("rate", [0, 0.0, float("inf"), float("nan"), True])
def test_a_learning_rate_must_be_positive_and_finite(rate):
    # A rate of 0 would leave the parameters in the optimizer (moments, weight decay scaled to 0): say freeze.
    with pytest.raises(ValueError, match="must be a positive number"):
        dlfund.create_train_state(small_cnn(), key=jax.random.key(0), learning_rates={"head": rate})


# --- from_pretrained ----------------------------------------------------------------------------------------------


NORM = Normalization(mean=np.float32(3.0), std=np.float32(2.0), scale=1.0)


def test_a_given_normalization_is_kept_for_a_model_source_and_a_recorded_one_wins_for_a_run_folder(tmp_path):
    source = small_cnn(10)
    given = dlfund.transfer.from_pretrained(source, num_classes=3, rngs=nnx.Rngs(1), normalization=NORM)
    assert given.normalization is NORM
    assert dlfund.transfer.from_pretrained(source, num_classes=3, rngs=nnx.Rngs(1)).normalization is None
    # A run folder's record (written by hand here: no training needed) wins over the argument.
    recorded = Normalization(mean=np.full((1, 1, 1), 0.5, np.float32), std=np.full((1, 1, 1), 4.0, np.float32))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps({"data": {"normalization": recorded.to_dict()}}))
    path = dlfund.save_weights(tmp_path / "run" / "weights.safetensors", source)
    from_run = dlfund.transfer.from_pretrained(path, num_classes=3, rngs=nnx.Rngs(1), normalization=NORM)
    np.testing.assert_array_equal(from_run.normalization.mean, recorded.mean)
    np.testing.assert_array_equal(from_run.normalization.std, recorded.std)


def test_the_pretrained_model_comes_back_in_eval_mode():
    """Batch norm on its running statistics: an example's output does not depend on its batch, and calling the
    model does not move the statistics (in train mode both would happen)."""
    pretrained = dlfund.transfer.from_pretrained(small_cnn(10), num_classes=3, rngs=nnx.Rngs(1))
    model = pretrained.model
    before = weights(model)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(6, 8, 8, 1)), jnp.float32)
    np.testing.assert_allclose(np.asarray(model(x[:2])), np.asarray(model(x))[:2], rtol=1e-5, atol=1e-6)
    assert all(np.array_equal(before[name], value) for name, value in weights(model).items())


def test_normalize_like_maps_every_split_of_a_dataset_through_its_own_stored_values():
    rng = np.random.default_rng(0)
    x_raw = rng.integers(0, 17, size=(120, 4)).astype(np.float32)
    target = dlfund.data.from_arrays(x_raw, np.arange(120) % 3, name="target")
    prepared = dlfund.transfer.normalize_like(target, NORM)
    assert prepared.normalization is NORM
    for split in ("train", "val", "test"):  # each split its own examples, not another split's
        x, y = getattr(target, split)
        np.testing.assert_allclose(getattr(prepared, split)[0], NORM.apply(target.normalization.invert(x)), rtol=1e-6)
        np.testing.assert_array_equal(getattr(prepared, split)[1], y)


def test_normalize_like_reads_every_split_of_lazy_readers_through_the_new_map(tmp_path):
    readers = dlfund.data.open_splits("iris", data_dir=tmp_path)
    prepared = dlfund.transfer.normalize_like(readers, NORM)
    assert prepared.normalization is NORM
    for split in ("train", "val", "test"):
        x, y = getattr(readers, split).read()
        new_x, new_y = getattr(prepared, split).read()
        np.testing.assert_allclose(new_x, NORM.apply(readers.normalization.invert(x)), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(new_y, y)


# --- weights files ------------------------------------------------------------------------------------------------


class Encoder(nnx.Module):
    def __init__(self, rngs):
        self.first = nnx.Linear(3, 4, rngs=rngs)


class EncoderDecoder(Encoder):
    def __init__(self, rngs):
        super().__init__(rngs)
        self.second = nnx.Linear(4, 2, rngs=rngs)


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_a_file_with_more_parameters_than_the_model_is_refused(tmp_path, suffix):
    # Silently dropping them would hide a file of another architecture that merely starts like the model.
    path = dlfund.save_weights(tmp_path / f"w{suffix}", EncoderDecoder(nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"has parameters the model does not: \['second/bias', 'second/kernel'\]"):
        dlfund.load_weights(path, Encoder(nnx.Rngs(1)))


def test_loading_keeps_the_models_own_dtypes(tmp_path):
    """A float32 file into a bfloat16 layer gives bfloat16 weights (rounded), not float32 ones that would change
    the layer's computation and its compiled programs."""
    source = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    path = dlfund.save_weights(tmp_path / "w.safetensors", source)
    target = nnx.Linear(3, 2, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(1))
    with warnings.catch_warnings():
        # Cast before assigning: JAX's implicit float32 -> bfloat16 cast warns that it will become an error.
        warnings.simplefilter("error")
        dlfund.load_weights(path, target)
    assert target.kernel[...].dtype == jnp.bfloat16 and target.bias[...].dtype == jnp.bfloat16
    np.testing.assert_array_equal(target.kernel[...], source.kernel[...].astype(jnp.bfloat16))


def test_a_dropout_rate_is_a_setting_not_a_weight(tmp_path):
    """Weights files hold no dropout rate, and loading leaves the model's own rate alone."""
    source = MLP(6, (8,), 3, dropout=0.5, rngs=nnx.Rngs(0))
    assert sorted(weights(source)) == ["dense/0/bias", "dense/0/kernel", "head/bias", "head/kernel"]
    target = MLP(6, (8,), 3, dropout=0.1, rngs=nnx.Rngs(1))
    dlfund.load_weights(dlfund.save_weights(tmp_path / "w.npz", source), target)
    assert dlfund.weights.model_config(target)["dropout"] == pytest.approx(0.1)


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_saving_over_a_file_replaces_it_whole(tmp_path, suffix):
    """An atomic replace: a reader that has the previous file open keeps reading it, complete; an in-place rewrite
    would hand it the new (or half-written) bytes."""
    path = tmp_path / f"w{suffix}"
    dlfund.save_weights(path, MLP(6, (8,), 3, rngs=nnx.Rngs(0)))
    before = path.read_bytes()
    with open(path, "rb") as reader:
        dlfund.save_weights(path, MLP(6, (8,), 3, rngs=nnx.Rngs(1)))
        assert reader.read() == before
    assert path.read_bytes() != before
    assert os.listdir(tmp_path) == [path.name]


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_the_next_weights_format_is_already_refused(tmp_path, suffix):
    # The test in test_weights.py uses version 99; the boundary is the version right after this one.
    path = dlfund.save_weights(tmp_path / f"w{suffix}", MLP(6, (8,), 3, rngs=nnx.Rngs(0)))
    if suffix == ".npz":
        with np.load(path) as npz:
            arrays = dict(npz)
        header = json.loads(str(arrays["__dlfund__"]))
        header["format_version"] = dlfund.weights.FORMAT_VERSION + 1
        arrays["__dlfund__"] = np.array(json.dumps(header))
        np.savez(path, **arrays)
    else:
        from safetensors.numpy import load_file, save_file

        header = dlfund.weights.read_header(path)
        header["format_version"] = dlfund.weights.FORMAT_VERSION + 1
        save_file(load_file(path), path, metadata={"__dlfund__": json.dumps(header)})
    with pytest.raises(ValueError, match="newer dlfund"):
        dlfund.load_weights(path, MLP(6, (8,), 3, rngs=nnx.Rngs(0)))


# --- checkpoints ----------------------------------------------------------------------------------------------


NOISE = np.random.default_rng(0).normal(size=(64, 32)).astype(np.float32)


def items(value):
    return {"model": {"w": NOISE + value, "b": np.arange(3, dtype=np.int32)}}


TARGET = items(0.0)


def test_a_checkpoint_with_a_missing_file_is_damage_and_the_previous_one_is_used(tmp_path):
    with CheckpointStore(tmp_path) as store:
        store.save(1, items(1.0), {"epoch": 1})
        store.save(2, items(2.0), {"epoch": 2})
    record = json.loads((tmp_path / "2" / checkpoint.INTEGRITY_FILE).read_text())
    largest = max(record, key=lambda name: record[name]["size"])
    os.remove(tmp_path / "2" / largest)
    with CheckpointStore(tmp_path) as store, pytest.warns(CheckpointWarning, match="is missing"):
        step, restored, _ = store.restore_latest(TARGET)
    assert step == 1
    np.testing.assert_array_equal(restored["model"]["w"], NOISE + 1.0)


def test_a_set_aside_checkpoint_leaves_the_store_and_its_step_can_be_saved_again(tmp_path):
    with CheckpointStore(tmp_path) as store:
        store.save(1, items(1.0), {"epoch": 1})
        store.save(2, items(2.0), {"epoch": 2})
    (tmp_path / "2" / checkpoint.INTEGRITY_FILE).write_text("{not json")
    with CheckpointStore(tmp_path) as store:
        with pytest.warns(CheckpointWarning):
            assert store.restore_latest(TARGET)[0] == 1
        assert store.steps() == [1]  # the store no longer lists the step it moved away
        store.save(2, items(5.0), {"epoch": 2})  # training redoes epoch 2
        store.wait()
        assert store.steps() == [1, 2]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            step, restored, _ = store.restore_latest(TARGET)
    assert step == 2
    np.testing.assert_array_equal(restored["model"]["w"], NOISE + 5.0)


def test_the_best_checkpoint_is_still_kept_after_the_store_is_reopened(tmp_path):
    """A resumed run opens a new store: its retention must still know which old checkpoint was the best."""
    with CheckpointStore(tmp_path, keep=1, monitor="val_loss", mode="min") as store:
        for step, val_loss in [(1, 0.9), (2, 0.1), (3, 0.5)]:
            store.save(step, items(float(step)), {}, {"val_loss": val_loss})
    with CheckpointStore(tmp_path, keep=1, monitor="val_loss", mode="min") as store:
        for step, val_loss in [(4, 0.6), (5, 0.7)]:
            store.save(step, items(float(step)), {}, {"val_loss": val_loss})
        store.wait()
        assert store.steps() == [2, 5]


def test_the_next_checkpoint_format_is_already_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "FORMAT_VERSION", checkpoint.FORMAT_VERSION + 1)
    with CheckpointStore(tmp_path) as store:
        store.save(1, items(1.0), {})
    monkeypatch.undo()
    with CheckpointStore(tmp_path) as store, pytest.raises(CheckpointError, match="newer dlfund"):
        store.restore_latest(TARGET)


# --- run folders ----------------------------------------------------------------------------------------------


def test_a_regression_run_predicts_and_evaluates_in_the_targets_own_units(tmp_path):
    """Oracle: the in-memory model on normalized inputs, its outputs mapped back by the target normalization."""
    rng = np.random.default_rng(0)
    x_raw = rng.normal(loc=5.0, scale=3.0, size=(80, 3)).astype(np.float32)
    y_raw = (x_raw @ np.array([1.0, -2.0, 0.5], np.float32) + 40.0).astype(np.float32)
    arrays = dlfund.data.from_arrays(x_raw, y_raw, task="regression")
    targets = Normalization(mean=np.float32(40.0), std=np.float32(8.0))
    ds = dataclasses.replace(
        arrays,
        **{split: (x, targets.apply(y)) for split, (x, y) in arrays.splits().items()},
        target_normalization=targets,
    )
    model = MLP(3, (8,), 1, rngs=nnx.Rngs(0))
    dlfund.fit(model, ds, loss="mse", metrics=(), epochs=2, batch_size=16, run_dir=tmp_path / "r", progress=False)
    run = dlfund.load_run(tmp_path / "r")
    assert run.num_classes is None and run.target_normalization is not None
    x_test_raw = ds.normalization.invert(ds.test[0])
    y_test_raw = targets.invert(ds.test[1])
    outputs = dlfund.predict(model, ds.test[0])
    np.testing.assert_allclose(run.predict(x_test_raw), targets.invert(outputs), rtol=1e-5, atol=1e-4)
    expected = float(np.mean((outputs[:, 0] - ds.test[1]) ** 2))  # the loss in the normalized units it trained in
    assert run.evaluate(x_test_raw, y_test_raw)["loss"] == pytest.approx(expected, rel=1e-4)


def test_a_run_rebuilds_its_smoothed_loss_and_its_selected_epoch(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 4)).astype(np.float32)
    y = (np.arange(90) % 3).astype(np.int32)
    ds = dlfund.data.from_arrays(x, y, name="blobs", class_names=("c", "b", "a"))  # not in sorted order
    stopper = dlfund.EarlyStopping(patience=10, restore_best=True)
    result = dlfund.fit(MLP(4, (8,), 3, rngs=nnx.Rngs(0)), ds, epochs=3, batch_size=16, label_smoothing=0.2,
                        early_stopping=stopper, run_dir=tmp_path / "r", progress=False)  # fmt: skip
    run = dlfund.load_run(tmp_path / "r")
    assert run.class_names == ("c", "b", "a")
    assert run.history.selected_epoch == result.best_epoch and run.history.restored_best
    # Oracle: optax's cross-entropy against labels smoothed by 0.2, on the run's own model.
    x_test, y_test = ds.test
    logits = dlfund.predict(run.model, x_test)
    smoothed = optax.smooth_labels(jax.nn.one_hot(y_test, 3), 0.2)
    expected = float(optax.softmax_cross_entropy(logits, smoothed).mean())
    assert run.evaluate(ds.normalization.invert(x_test), y_test)["loss"] == pytest.approx(expected, rel=1e-5)


def test_reinitialize_names_layers_by_path_not_by_prefix():
    # "dense/1" is the second hidden layer, not also the eleventh ("dense/10").
    source = MLP(4, (4,) * 11, 3, rngs=nnx.Rngs(0))
    pretrained = dlfund.transfer.from_pretrained(source, num_classes=2, rngs=nnx.Rngs(1), reinitialize="dense/1")
    assert set(pretrained.initialized) == {"dense/1/bias", "dense/1/kernel", "head/bias", "head/kernel"}
    np.testing.assert_array_equal(weights(pretrained.model)["dense/10/kernel"], weights(source)["dense/10/kernel"])
