"""Light input checks shared by the scratch modules: each failure names the argument and the shapes involved."""

from __future__ import annotations

from typing import Any

import jax  # walking pytrees only
import numpy as np


def as_float(name: str, value: Any, *, ndim: int | tuple[int, ...] | None = None) -> np.ndarray:
    """``value`` as a floating-point NumPy array (float32 unless it already is a float dtype).

    Raises:
      ValueError: ``value`` has another number of dimensions than ``ndim`` allows.
    """
    array = np.asarray(value)
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if array.ndim not in allowed:
            wanted = " or ".join(str(n) for n in allowed)
            raise ValueError(f"{name} must have {wanted} dimensions, got shape {array.shape}")
    return array


def _real_number(value: Any) -> float | None:
    """``value`` as a float when it is one real number (a Python or NumPy int or float, or a 0-d array of one,
    as ``np.float32(0.1)`` or ``jnp.asarray(0.1)``); None for anything else (bools, strings, vectors, complex)."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape == () and dtype is not None and (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        return float(value)
    return None


def check_rate(name: str, rate: Any) -> float:
    """A probability in [0, 1), as a float."""
    number = _real_number(rate)
    if number is None or not 0.0 <= number < 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1), got {rate!r}")
    return number


def check_positive(name: str, value: Any) -> float:
    """A finite number > 0, as a float."""
    number = _real_number(value)
    if number is None or not 0.0 < number < np.inf:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return number


def check_count(name: str, value: Any, *, minimum: int = 1) -> int:
    """An integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_labels(labels: Any, num_classes: int, batch: int) -> np.ndarray:
    """Integer class labels [B] in [0, num_classes)."""
    labels = np.asarray(labels)
    if labels.shape != (batch,):
        raise ValueError(f"labels must have shape ({batch},), one per example, got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers (class ids), got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must be in [0, {num_classes}), got values from {labels.min()} to {labels.max()}")
    return labels


def check_binary_label(name: str, y: Any) -> int:
    """A 0/1 label (the perceptron's classes), as an int."""
    number = _real_number(y)
    if number not in (0.0, 1.0):
        raise ValueError(f"{name} must be 0 or 1 (the perceptron's two classes), got {y!r}")
    return int(number)


def check_not_empty(name: str, array: np.ndarray) -> np.ndarray:
    """An array with at least one example on its first axis: a mean over an empty batch is NaN, not an error."""
    if array.ndim == 0 or array.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one example (a batch axis of length >= 1); got {array.shape}")
    return array


def check_same_shapes(what: str, tree: Any, like: Any, like_name: str) -> None:
    """Every leaf of ``tree`` has the shape of the matching leaf of ``like`` (NumPy would broadcast a [3] gradient
    against a [1] state without a word, and the optimizer would silently train a different model)."""
    leaves, structure = jax.tree.flatten(tree)
    like_leaves, like_structure = jax.tree.flatten(like)
    if structure != like_structure:
        raise ValueError(f"{what} must have the structure of {like_name}: {structure} vs {like_structure}")
    for index, (leaf, like_leaf) in enumerate(zip(leaves, like_leaves)):
        if np.shape(leaf) != np.shape(like_leaf):
            raise ValueError(
                f"{what} leaf {index} has shape {np.shape(leaf)} but {like_name} has {np.shape(like_leaf)}: "
                "pass gradients shaped like the parameters the state was built from"
            )
