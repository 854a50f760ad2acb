"""Model weights as safe, self-describing files, written atomically and loaded without pickle.

Two formats, chosen by the file suffix:

- ``.safetensors`` (the exchange format of the Hugging Face ecosystem): every variable under its path in the model
  (``"dense/0/kernel"``), the header (format version, model class, constructor arguments) as JSON in the file's
  metadata;
- ``.npz`` (NumPy): the same arrays, the header as a JSON string array, read with ``allow_pickle=False``. NumPy
  cannot store bfloat16 (or other ml_dtypes) in a ``.npz`` it can read back, so those arrays are stored as their
  raw bits (``uint16``) and the header names their dtype (format version 2, which older readers refuse rather
  than misread).

Loading into a model of another shape fails with the first mismatching parameter path and both shapes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dlfund import io as io_lib

FORMAT_VERSION = 2  # 2: .npz files may hold bfloat16 arrays as raw bits, named in the header's "npz_dtypes"
_HEADER = "__dlfund__"
SUFFIXES = (".safetensors", ".npz")


def weight_variables(state: Any) -> list[tuple[str, Any]]:
    """``(path, variable)`` of every variable of an ``nnx.State`` that is a weight: all but settings such as
    dropout rates, which the model's config records, and Flax's random-number streams (``nnx.Dropout(...,
    rngs=rngs)`` keeps a key and a counter: no weights, and a key has no NumPy form)."""
    from dlfund.models.blocks import DropoutRate

    flat = nnx.to_flat_state(state)
    return [
        ("/".join(str(k) for k in path), var) for path, var in flat if not isinstance(var, (DropoutRate, nnx.RngState))
    ]


def flat_arrays(model: nnx.Module) -> dict[str, np.ndarray]:
    """Every weight of ``model`` (parameters, batch-norm statistics, ...) as host arrays keyed by path."""
    return {name: np.asarray(jax.device_get(var[...])) for name, var in weight_variables(nnx.state(model))}


def model_config(model: nnx.Module) -> dict[str, Any]:
    """The constructor arguments a dlfund model records (its live dropout rate included); {} for other modules."""
    config = getattr(type(model), "config", None)
    if isinstance(config, property) and hasattr(model, "config_items"):
        return dict(model.config)
    return dict(getattr(model, "config_items", ()))


def _header(model: nnx.Module) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "model": type(model).__name__,
        "config": model_config(model),
    }


def _suffix(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix
    if suffix not in SUFFIXES:
        raise ValueError(f"weights files end in {' or '.join(SUFFIXES)}; got {os.fspath(path)!r}")
    return suffix


def save_weights(path: str | os.PathLike, model: nnx.Module) -> str:
    """Writes every variable of ``model`` to ``path`` (.safetensors or .npz).

    The write is atomic: an interrupted save leaves the previous file intact.
    """
    arrays = flat_arrays(model)
    header = _header(model)
    if _suffix(path) == ".safetensors":
        from safetensors.numpy import save

        # np.require, not np.ascontiguousarray: the latter makes a scalar variable's shape () into (1,)
        contiguous = {k: np.require(v, requirements="C") for k, v in arrays.items()}
        data = save(contiguous, metadata={_HEADER: json.dumps({**header, "format_version": 1}, default=str)})
        io_lib.write_with(path, lambda f: f.write(data))
    else:
        # bfloat16 & co. (ml_dtypes, NumPy kind "V") go in as their raw bits; np.load could not cast them back
        extended = {k: v.dtype.name for k, v in arrays.items() if v.dtype.kind == "V"}
        arrays = {k: v.view(f"uint{8 * v.dtype.itemsize}") if k in extended else v for k, v in arrays.items()}
        header = {**header, "npz_dtypes": extended} if extended else {**header, "format_version": 1}
        arrays[_HEADER] = np.array(json.dumps(header, default=str))
        io_lib.write_with(path, lambda f: np.savez(f, **arrays))
    return os.fspath(path)


def _read(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    if not Path(path).is_file():
        raise FileNotFoundError(f"no weights file {os.fspath(path)}")
    try:
        return _read_file(path)
    except Exception as error:  # safetensors' and zipfile's errors for a cut-short file name no file
        raise ValueError(
            f"cannot read the weights file {os.fspath(path)}: it is damaged (cut short?) or not a "
            f"{_suffix(path)} file ({type(error).__name__}: {error})"
        ) from error


def _read_file(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    if _suffix(path) == ".safetensors":
        from safetensors import safe_open

        with safe_open(os.fspath(path), framework="numpy") as f:
            metadata = f.metadata() or {}
            arrays = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
        return json.loads(metadata.get(_HEADER, "{}")), arrays
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    header = json.loads(str(arrays.pop(_HEADER, np.array("{}"))))
    for name, dtype in header.get("npz_dtypes", {}).items():
        if name in arrays:
            arrays[name] = arrays[name].view(jnp.dtype(dtype))
    return header, arrays


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """The header of a weights file: format version, model class, constructor arguments."""
    return _read(path)[0]


def load_weights(path: str | os.PathLike, model: nnx.Module) -> nnx.Module:
    """Loads weights saved by :func:`save_weights` into ``model`` (in place) and returns it.

    Raises:
      ValueError: a newer format version, or parameters missing, unexpected or of another shape (the message
        names the first mismatching path and both shapes).
    """
    header, stored = _read(path)
    version = header.get("format_version", FORMAT_VERSION)
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path} was written by a newer dlfund (weights format {version}; this one reads up to "
            f"{FORMAT_VERSION}); upgrade dlfund to load it"
        )
    assign(model, stored, source=os.fspath(path))
    return model


def assign(model: nnx.Module, arrays: dict[str, Any], *, source: str) -> None:
    """Sets ``model``'s variables from ``arrays`` keyed by path, after checking every name and shape."""
    state = nnx.state(model)
    expected = dict(weight_variables(state))
    for name, var in expected.items():
        if name not in arrays:
            raise ValueError(f"{source} has no parameter {name!r} that the model needs (model: {type(model).__name__})")
        want, got = tuple(var[...].shape), tuple(np.shape(arrays[name]))
        if want != got:
            raise ValueError(f"parameter {name!r}: the model has shape {want}, {source} has shape {got}")
    unexpected = sorted(set(arrays) - set(expected))
    if unexpected:
        raise ValueError(f"{source} has parameters the model does not: {unexpected[:5]}")
    for name, var in expected.items():
        var[...] = np.asarray(arrays[name]).astype(var[...].dtype)
    nnx.update(model, state)
