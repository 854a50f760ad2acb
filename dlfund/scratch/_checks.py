"""Light input checks shared by the scratch modules: each failure names the argument and the shapes involved."""

from __future__ import annotations

from typing import Any

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


def check_rate(name: str, rate: Any) -> float:
    """A probability in [0, 1), as a float."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.floating)) or not 0.0 <= rate < 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1), got {rate!r}")
    return float(rate)


def check_positive(name: str, value: Any) -> float:
    """A finite number > 0, as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not 0.0 < value < np.inf:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


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
