"""Input validation that runs before anything is compiled, with errors that say what is wrong and how to fix it."""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

import numpy as np

from dlfund.losses import BINARY, REGRESSION, Loss


def as_split(name: str, split: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` as NumPy arrays (x float32; y int32 for integer labels), after checking lengths and emptiness."""
    if not isinstance(split, (tuple, list)) or len(split) != 2:
        raise TypeError(f"the {name} data must be an (x, y) pair of arrays, got {type(split).__name__}")
    x, y = (np.asarray(a) for a in split)
    if x.ndim == 0 or y.ndim == 0:
        raise ValueError(
            f"the {name} x and y must be arrays with a leading example axis; got shapes {x.shape}, {y.shape}"
        )
    if len(x) != len(y):
        raise ValueError(f"the {name} split has {len(x)} inputs (x) but {len(y)} targets (y); they must match")
    if len(x) == 0:
        raise ValueError(f"the {name} split is empty: there is nothing to train or evaluate on")
    if not np.issubdtype(x.dtype, np.number) and x.dtype != np.bool_:
        raise TypeError(f"the {name} inputs must be numeric, got dtype {x.dtype}")
    x = x.astype(np.float32, copy=False)
    bad = ~np.isfinite(x)
    if bad.any():
        first = int(np.argmax(bad.reshape(len(x), -1).any(axis=1)))
        raise ValueError(
            f"the {name} inputs contain {int(bad.sum())} NaN/Inf values (first in example {first}); "
            "remove or impute them before training"
        )
    return x, y


def check_targets(name: str, y: np.ndarray, loss: Loss, num_classes: int | None) -> np.ndarray:
    """Targets in the form the loss expects: integer class ids in range, 0/1 for binary losses, finite floats."""
    if loss.task == REGRESSION:
        y = y.astype(np.float32, copy=False)
        if not np.isfinite(y).all():
            raise ValueError(f"the {name} targets contain NaN/Inf values")
        return y
    if not np.issubdtype(y.dtype, np.number) and y.dtype != np.bool_:
        raise TypeError(f"the {name} labels must be integer class ids, got dtype {y.dtype}")
    if y.ndim != 1:
        raise ValueError(f"the {name} labels must have shape [N] (one class id per example), got {y.shape}")
    integral = np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_
    if not integral and (not np.isfinite(y).all() or not np.all(y == np.round(y))):
        raise ValueError(f"the {name} labels must be integer class ids; found non-integer values")
    y = y.astype(np.int32)
    classes = 2 if loss.task == BINARY else num_classes
    if classes is not None:
        outside = (y < 0) | (y >= classes)
        if outside.any():
            raise ValueError(
                f"the {name} labels must be in [0, {classes}); found {sorted(set(y[outside].tolist()))[:5]} "
                f"({int(outside.sum())} labels out of range)"
                + (". Binary losses need 0/1 labels." if loss.task == BINARY else "")
            )
    return y


def check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def check_learning_rate(value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or math.isnan(value)
        or math.isinf(value)
        or value <= 0
    ):
        raise ValueError(f"learning_rate must be a finite number > 0, got {value!r}")
    return float(value)


def effective_batch_size(batch_size: int, num_examples: int) -> int:
    """``batch_size``, or the whole training set (with a warning) when it is larger than the set."""
    if batch_size > num_examples:
        warnings.warn(
            f"batch_size={batch_size} is larger than the {num_examples} training examples; "
            f"training on one full batch of {num_examples} per step",
            UserWarning,
            stacklevel=3,
        )
        return num_examples
    return batch_size


def check_model_input(model: Any, example_shape: tuple[int, ...]) -> None:
    """Asks the model whether one example of ``example_shape`` fits (dlfund models know their input)."""
    check = getattr(model, "check_input", None)
    if check is not None:
        check(tuple(example_shape))


def check_batch(name: str, loss: Loss, num_classes: int | None, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """A streamed batch as the step needs it, with the checks that in-memory data gets before training."""
    x = np.asarray(x, np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f"the {name} inputs contain NaN/Inf values (found in a streamed batch); clean the data")
    return x, check_targets(name, np.asarray(y), loss, num_classes)
