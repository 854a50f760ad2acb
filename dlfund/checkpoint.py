"""Model weights as a safe, self-describing file (NumPy ``.npz``, loaded without pickle), written atomically.

Each array is stored under its path in the model (``"dense/0/kernel"``); a JSON header records the format version
and the model's class and constructor arguments. Loading into a model of another shape fails with the first
mismatching parameter path and both shapes.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
from flax import nnx

from dlfund import io as io_lib

FORMAT_VERSION = 1
_HEADER = "__dlfund__"


def _flat_arrays(model: nnx.Module) -> dict[str, np.ndarray]:
    flat = nnx.to_flat_state(nnx.state(model))
    return {"/".join(str(k) for k in path): np.asarray(jax.device_get(var[...])) for path, var in flat}


def save_weights(path: str | os.PathLike, model: nnx.Module) -> str:
    """Writes every variable of ``model`` (parameters and e.g. batch-norm statistics) to ``path`` (.npz).

    The write is atomic: an interrupted save leaves the previous file intact.
    """
    arrays = _flat_arrays(model)
    header = {
        "format_version": FORMAT_VERSION,
        "model": type(model).__name__,
        "config": dict(getattr(model, "config_items", ())),
    }
    arrays[_HEADER] = np.array(json.dumps(header, default=str))
    io_lib.write_with(path, lambda f: np.savez(f, **arrays))
    return os.fspath(path)


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON header of a weights file (format version, model class, constructor arguments)."""
    with np.load(path, allow_pickle=False) as npz:
        return json.loads(str(npz[_HEADER]))


def load_weights(path: str | os.PathLike, model: nnx.Module) -> nnx.Module:
    """Loads weights saved by :func:`save_weights` into ``model`` (in place) and returns it.

    Raises:
      ValueError: a newer format version, or parameters missing, unexpected or of another shape (the message
        names the first mismatching path and both shapes).
    """
    with np.load(path, allow_pickle=False) as npz:
        stored = {k: npz[k] for k in npz.files}
    header = json.loads(str(stored.pop(_HEADER, np.array("{}"))))
    version = header.get("format_version", FORMAT_VERSION)
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path} was written by a newer dlfund (weights format {version}; this one reads up to "
            f"{FORMAT_VERSION}); upgrade dlfund to load it"
        )
    state = nnx.state(model)
    flat = nnx.to_flat_state(state)
    expected = {"/".join(str(k) for k in p): v for p, v in flat}
    for name, var in expected.items():
        if name not in stored:
            raise ValueError(f"{path} has no parameter {name!r} that the model needs (model: {type(model).__name__})")
        want, got = tuple(var[...].shape), tuple(stored[name].shape)
        if want != got:
            raise ValueError(f"parameter {name!r}: the model has shape {want}, the file {path} has shape {got}")
    unexpected = sorted(set(stored) - set(expected))
    if unexpected:
        raise ValueError(f"{path} has parameters the model does not: {unexpected[:5]}")
    for name, var in expected.items():
        var[...] = stored[name].astype(var[...].dtype)
    nnx.update(model, state)
    return model
