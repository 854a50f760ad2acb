"""The Orbax checkpoint store: retention, integrity checks, interrupted saves, format versions."""

import os
import shutil
import warnings

import numpy as np
import pytest

from dlfund import checkpoint
from dlfund.checkpoint import CheckpointError, CheckpointStore, CheckpointWarning

NOISE = np.random.default_rng(0).normal(size=(64, 32)).astype(np.float32)  # incompressible, so files are large


def items(value):
    return {"model": {"w": NOISE + value, "b": np.arange(3, dtype=np.int32)}}


TARGET = items(0.0)


def test_save_restore_and_retention_keeps_latest_and_best(tmp_path):
    with CheckpointStore(tmp_path, keep=2, monitor="val_loss", mode="min") as store:
        for step, val_loss in zip(range(1, 6), [0.9, 0.2, 0.5, 0.6, 0.7]):
            store.save(step, items(float(step)), {"epoch": step}, {"val_loss": val_loss})
        store.wait()
        assert store.steps() == [2, 4, 5]  # the latest two and the best (val_loss 0.2 at step 2)
        restored, meta = store.restore(2, TARGET)
        assert meta["epoch"] == 2 and meta["format_version"] == checkpoint.FORMAT_VERSION
        np.testing.assert_array_equal(restored["model"]["w"], NOISE + 2.0)
        assert (tmp_path / "5" / checkpoint.INTEGRITY_FILE).exists()


def test_mode_max_keeps_the_highest(tmp_path):
    with CheckpointStore(tmp_path, keep=1, monitor="val_accuracy", mode="max") as store:
        for step, accuracy in zip(range(1, 4), [0.5, 0.9, float("nan")]):
            store.save(step, items(1.0), {}, {"val_accuracy": accuracy})
        store.wait()
        assert store.steps() == [2, 3]


def _damage(step_dir, how):
    data_files = [p for p in step_dir.rglob("*") if p.is_file() and p.parent.name == "d" and p.stat().st_size > 1000]
    target = max(data_files, key=lambda p: p.stat().st_size)
    raw = bytearray(target.read_bytes())
    if how == "truncate":
        target.write_bytes(raw[: len(raw) // 2])
    else:
        raw[len(raw) // 2] ^= 0xFF
        target.write_bytes(bytes(raw))


@pytest.mark.parametrize("how", ["truncate", "flip"])
def test_a_damaged_latest_checkpoint_is_reported_and_the_previous_one_used(tmp_path, how):
    with CheckpointStore(tmp_path) as store:
        store.save(1, items(1.0), {"epoch": 1})
        store.save(2, items(2.0), {"epoch": 2})
    _damage(tmp_path / "2", how)
    with CheckpointStore(tmp_path) as store, pytest.warns(CheckpointWarning, match="checkpoint 2 .* damaged"):
        step, restored, meta = store.restore_latest(TARGET)
    assert step == 1 and meta["epoch"] == 1
    np.testing.assert_array_equal(restored["model"]["w"], NOISE + 1.0)
    assert sorted(os.listdir(tmp_path)) == ["1", "2.damaged"]  # set aside, not deleted


def test_loading_a_model_from_a_damaged_run_changes_nothing_on_disk(tmp_path):
    """Training sets a damaged checkpoint aside (it saves that step again); reading a model must not rename files
    in a folder it only reads (a shared or read-only one)."""
    from flax import nnx

    import dlfund

    x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    run_dir = tmp_path / "run"
    dlfund.fit(dlfund.models.MLP(4, (8,), 2, rngs=nnx.Rngs(0)), (x, y), epochs=2, progress=False, run_dir=run_dir)
    os.remove(run_dir / "weights.safetensors")  # as in a run that never finished: load_model reads checkpoints
    _damage(run_dir / "checkpoints" / "2", "truncate")
    before = sorted(os.listdir(run_dir / "checkpoints"))
    with pytest.warns(CheckpointWarning, match="checkpoint 2 .* damaged"):
        model = dlfund.load_model(run_dir)
    assert sorted(os.listdir(run_dir / "checkpoints")) == before == ["1", "2"]
    epoch_1 = dlfund.load_model(run_dir / "checkpoints" / "1")
    np.testing.assert_array_equal(dlfund.predict(model, x), dlfund.predict(epoch_1, x))


def test_an_interrupted_save_is_ignored_and_reported(tmp_path):
    with CheckpointStore(tmp_path) as store:
        store.save(1, items(1.0), {"epoch": 1})
    shutil.copytree(tmp_path / "1", tmp_path / "2.orbax-checkpoint-tmp")  # what a SIGKILL mid-save leaves
    with CheckpointStore(tmp_path) as store:
        assert store.steps() == [1]
        with pytest.warns(CheckpointWarning, match="unfinished save"):
            step, _, _ = store.restore_latest(TARGET)
    assert step == 1


def test_an_unverified_checkpoint_still_restores(tmp_path):
    # A process stopped between Orbax's commit and the integrity record: the commit makes it complete.
    with CheckpointStore(tmp_path) as store:
        store.save(1, items(1.0), {"epoch": 1})
    os.remove(tmp_path / "1" / checkpoint.INTEGRITY_FILE)
    with CheckpointStore(tmp_path) as store, warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.restore_latest(TARGET)[0] == 1


def test_partial_restore_of_named_items(tmp_path):
    with CheckpointStore(tmp_path) as store:
        store.save(1, {**items(1.0), "optimizer": {"m": np.ones(5, np.float32)}}, {})
        store.wait()
        assert store.items(1) == ["model", "optimizer"]
        restored, _ = store.restore(1, {"model": TARGET["model"], "missing": {"x": np.zeros(1)}})
        assert set(restored) == {"model"}


def test_a_newer_format_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "FORMAT_VERSION", 99)
    with CheckpointStore(tmp_path) as store:
        store.save(1, items(1.0), {})
    monkeypatch.setattr(checkpoint, "FORMAT_VERSION", 1)
    with CheckpointStore(tmp_path) as store, pytest.raises(CheckpointError, match="newer dlfund"):
        store.restore_latest(TARGET)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="keep"):
        CheckpointStore(tmp_path, keep=0)
    with pytest.raises(ValueError, match="mode"):
        CheckpointStore(tmp_path, mode="best")
    with CheckpointStore(tmp_path) as store, pytest.raises(ValueError, match="reserved"):
        store.save(1, {"meta": {}}, {})


def test_a_damaged_integrity_record_makes_the_checkpoint_unusable(tmp_path):
    with CheckpointStore(tmp_path) as store:
        store.save(1, items(1.0), {"epoch": 1})
        store.save(2, items(2.0), {"epoch": 2})
    (tmp_path / "2" / checkpoint.INTEGRITY_FILE).write_text("{not json")
    with CheckpointStore(tmp_path) as store, pytest.warns(CheckpointWarning, match="integrity record .* damaged"):
        assert store.restore_latest(TARGET)[0] == 1


def test_a_sound_checkpoint_that_does_not_fit_is_an_error_not_damage(tmp_path):
    with CheckpointStore(tmp_path) as store:
        store.save(1, items(1.0), {"epoch": 1})
    other = {"model": {"w": np.zeros((8, 8), np.float32), "b": np.arange(3, dtype=np.int32)}}
    with CheckpointStore(tmp_path) as store, pytest.raises(CheckpointError, match="does not fit"):
        store.restore_latest(other)
    assert sorted(os.listdir(tmp_path)) == ["1"]  # nothing set aside


def test_a_checkpoint_restores_into_the_targets_dtype(tmp_path):
    # Orbax casts stored arrays to the target's dtype, which is why _check_fits compares shapes only: float32
    # weights restore into a bfloat16 model (rounded to it), and an int32 array into an int32 target unchanged.
    import jax.numpy as jnp

    with CheckpointStore(tmp_path) as store:
        store.save(1, items(1.0), {"epoch": 1})
    half = {"model": {"w": np.zeros((64, 32), jnp.bfloat16), "b": np.zeros(3, np.int32)}}
    with CheckpointStore(tmp_path) as store:
        restored, _ = store.restore(1, half)
    assert restored["model"]["w"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(restored["model"]["w"]), (NOISE + 1.0).astype(jnp.bfloat16))
    np.testing.assert_array_equal(restored["model"]["b"], np.arange(3))
