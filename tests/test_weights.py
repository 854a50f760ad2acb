import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import dlfund
from dlfund.models import MLP


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_save_load_round_trip_gives_identical_predictions(tmp_path, suffix):
    model = MLP(6, (8,), 3, batch_norm=True, rngs=nnx.Rngs(0))
    model(jax.random.normal(jax.random.key(0), (16, 6)))  # move the batch-norm statistics off their init
    model.eval()
    path = dlfund.save_weights(tmp_path / f"w{suffix}", model)
    clone = MLP(6, (8,), 3, batch_norm=True, rngs=nnx.Rngs(1))
    clone.eval()
    x = jnp.ones((4, 6))
    assert not np.allclose(clone(x), model(x))
    dlfund.load_weights(path, clone)
    np.testing.assert_array_equal(clone(x), model(x))
    header = dlfund.weights.read_header(path)
    assert header["model"] == "MLP" and header["config"]["hidden"] == [8] and header["format_version"] == 1


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_loading_into_another_shape_names_the_parameter_and_both_shapes(tmp_path, suffix):
    path = dlfund.save_weights(tmp_path / f"w{suffix}", MLP(6, (8,), 3, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"'dense/0/bias': the model has shape \(16,\), .* has shape \(8,\)"):
        dlfund.load_weights(path, MLP(6, (16,), 3, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="no parameter 'norms/0/bias'"):
        dlfund.load_weights(path, MLP(6, (8,), 3, batch_norm=True, rngs=nnx.Rngs(0)))


class Custom(nnx.Module):
    """A user's module: a scalar parameter, bfloat16 weights and Flax's own dropout with its random stream."""

    def __init__(self, rngs):
        self.dense = nnx.Linear(3, 2, param_dtype=jnp.bfloat16, rngs=rngs)
        self.temperature = nnx.Param(jnp.array(2.0))
        self.dropout = nnx.Dropout(0.1, rngs=rngs)

    def __call__(self, x):
        return self.dropout(self.dense(x)) / self.temperature


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_scalars_bfloat16_and_random_streams_round_trip(tmp_path, suffix):
    # Each once failed: a scalar saved as shape (1,) by safetensors, bfloat16 unreadable from .npz ("No cast
    # function available"), and the dropout's PRNG key not convertible to NumPy at all.
    model = Custom(nnx.Rngs(0))
    model.temperature[...] = jnp.array(3.0)
    path = dlfund.save_weights(tmp_path / f"w{suffix}", model)
    clone = Custom(nnx.Rngs(1))
    dlfund.load_weights(path, clone)
    assert clone.temperature[...].shape == () and float(clone.temperature[...]) == 3.0
    assert clone.dense.kernel[...].dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(clone.dense.kernel[...]), np.asarray(model.dense.kernel[...]))
    assert sorted(dlfund.weights.flat_arrays(model)) == ["dense/bias", "dense/kernel", "temperature"]
    expected_version = 2 if suffix == ".npz" else 1  # .npz with raw bfloat16 bits: older readers refuse it
    assert dlfund.weights.read_header(path)["format_version"] == expected_version


def test_newer_format_is_refused(tmp_path):
    path = tmp_path / "w.npz"
    np.savez(path, __dlfund__=np.array('{"format_version": 99}'))
    with pytest.raises(ValueError, match="newer dlfund"):
        dlfund.load_weights(path, MLP(6, (8,), 3, rngs=nnx.Rngs(0)))


def test_a_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "w.npz"
    model = MLP(6, (8,), 3, rngs=nnx.Rngs(0))
    dlfund.save_weights(path, model)
    before = path.read_bytes()

    def broken_savez(file, **arrays):
        file.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        dlfund.save_weights(path, model)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["w.npz"]


def test_safetensors_files_are_plain_safetensors(tmp_path):
    from safetensors.numpy import load_file

    model = MLP(6, (8,), 3, rngs=nnx.Rngs(0))
    arrays = load_file(dlfund.save_weights(tmp_path / "w.safetensors", model))
    np.testing.assert_array_equal(arrays["dense/0/kernel"], model.dense[0].kernel[...])


def test_unknown_suffix_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"\.safetensors or \.npz"):
        dlfund.save_weights(tmp_path / "w.pt", MLP(6, (8,), 3, rngs=nnx.Rngs(0)))


def test_files_load_without_pickle(tmp_path):
    path = dlfund.save_weights(tmp_path / "w.npz", MLP(6, (8,), 3, rngs=nnx.Rngs(0)))
    with np.load(path, allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)
