"""Input validation that runs before anything is compiled, with errors that say what is wrong and how to fix it."""

from __future__ import annotations

import math
import numbers
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from dlfund import _warnings
from dlfund.losses import BINARY, MULTICLASS, REGRESSION, Loss, mse


def as_split(name: str, split: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` as NumPy arrays (x float32; y int32 for integer labels), after checking lengths and emptiness."""
    return as_split_with_range(name, split)[0]


def as_split_with_range(name: str, split: Any) -> tuple[tuple[np.ndarray, np.ndarray], tuple[float, float]]:
    """:func:`as_split`'s ``(x, y)`` and x's ``(min, max)``, which the check found anyway: :func:`scale_problem`
    takes it instead of a second pass over the inputs (~11 ms for 60k MNIST-shaped images)."""
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
    # min and max are NaN or infinite exactly when some value is: no mask as large as x (188 MB of MNIST-shaped
    # images give a 47 MB one) unless there is something to report.
    low, high = min_max(x) if x.size else (0.0, 0.0)
    if not (math.isfinite(low) and math.isfinite(high)):
        bad = ~np.isfinite(x)
        first = int(np.argmax(bad.reshape(len(x), -1).any(axis=1)))
        raise ValueError(
            f"the {name} inputs contain {int(bad.sum())} NaN/Inf values (first in example {first}); "
            "remove or impute them before training"
        )
    return (x, y), (low, high)


#: Arrays at least this large (elements) are reduced in parallel blocks; below it a thread's start costs more
#: than it saves.
_PARALLEL_RANGE_SIZE = 1 << 22


def min_max(x: np.ndarray) -> tuple[float, float]:
    """``(x.min(), x.max())`` of a non-empty numeric array [N, ...], NaN if any value is NaN.

    ``fit`` pays this pass over the inputs on every call, on the host, before the device sees them: two
    single-threaded NumPy reductions over 60k MNIST-shaped images take ~23 ms here, time a GPU would spend
    waiting. Large arrays are split into blocks of rows reduced on up to 8 threads (NumPy releases the GIL in
    reductions): ~12 ms on 2 cores (``python -m benchmarks.bench_fit_overhead``)."""
    workers = min(8, os.cpu_count() or 1, len(x))
    if x.size < _PARALLEL_RANGE_SIZE or workers < 2:
        return x.min().item(), x.max().item()
    with ThreadPoolExecutor(workers) as pool:
        ranges = list(pool.map(lambda block: (block.min(), block.max()), np.array_split(x, workers)))
    lows, highs = np.array(ranges).T  # np.min/np.max propagate NaN, where Python's min() would depend on order
    return lows.min().item(), highs.max().item()


def check_targets(name: str, y: np.ndarray, loss: Loss, num_classes: int | None) -> np.ndarray:
    """Targets in the form the loss expects: integer class ids in range, 0/1 for binary losses, finite floats."""
    if loss.task == REGRESSION:
        y = y.astype(np.float32, copy=False)
        if not np.isfinite(y).all():
            raise ValueError(f"the {name} targets contain NaN/Inf values")
        return y
    if not np.issubdtype(y.dtype, np.number) and y.dtype != np.bool_:
        raise TypeError(f"the {name} labels must be integer class ids, got dtype {y.dtype}")
    if y.ndim == 2 and y.shape[1] > 1 and _looks_one_hot(y):
        raise ValueError(
            f"the {name} labels look one-hot encoded (shape {y.shape}, one 1 per row); dlfund takes one class id "
            "per example: pass y.argmax(-1)"
        )
    if y.ndim != 1:
        raise ValueError(f"the {name} labels must have shape [N] (one class id per example), got {y.shape}")
    integral = np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_
    if not integral and (not np.isfinite(y).all() or not np.all(y == np.round(y))):
        raise ValueError(f"the {name} labels must be integer class ids; found non-integer values")
    bounds = np.iinfo(np.int32)
    if y.size and (y.min() < bounds.min or y.max() > bounds.max):  # the cast below would wrap them into range
        extreme = y.max() if y.max() > bounds.max else y.min()
        raise ValueError(f"the {name} labels must be class ids in [0, 2**31); found {extreme}")
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


def _looks_one_hot(y: np.ndarray) -> bool:
    if not (np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_):
        return False
    values = y.astype(np.float64, copy=False)
    return bool(np.isin(values, (0.0, 1.0)).all() and (values.sum(axis=1) == 1).all())


class DataWarning(UserWarning):
    """Data that trains, but almost surely not as intended (unnormalized inputs, more outputs than classes)."""


#: Inputs whose 99th percentile of |x| is above this are far outside the range of normalized data (standardized
#: features have ~2.6 there, [0, 1]-scaled pixels at most 1); raw pixels (255) or raw digits counts (16) are not.
UNNORMALIZED_LIMIT = 10.0
# Values looked at to estimate that percentile: enough for a stable estimate, cheap on 60k x 784 images.
_SCALE_SAMPLE = 100_000


def scale_problem(name: str, x: np.ndarray, value_range: tuple[float, float] | None = None) -> str | None:
    """What looks wrong with the scale of raw inputs x [N, ...] given as arrays, or None if they look normalized.
    ``value_range``: x's ``(min, max)`` if already known (:func:`as_split_with_range`), else computed here."""
    x = np.asarray(x)
    if x.size == 0 or x.ndim == 0 or not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        return None
    low, high = value_range if value_range is not None else min_max(x)
    if not (math.isfinite(low) and math.isfinite(high)):
        return None  # NaN/Inf: as_split reports them with a better message
    integer = np.issubdtype(x.dtype, np.integer)
    # The percentile cannot pass the limit when no value does: normalized inputs skip it (~1 ms a fit call for
    # the 1,294 training digits, all of them in the sample).
    large = max(abs(float(low)), abs(float(high))) > UNNORMALIZED_LIMIT and _large_values(x)
    if not (integer and high - low > 1) and not large:
        return None
    kind = f"integers ({x.dtype})" if integer else f"{x.dtype} values"
    return f"the {name} inputs are {kind} in [{low:g}, {high:g}]"


def _large_values(x: np.ndarray) -> bool:
    """Whether the 99th percentile of |x| [N, ...], estimated on evenly spaced whole examples, is above the limit."""
    # Whole examples, so every feature is in the sample (a flat stride could hit one column).
    rows = x[:: max(1, x.size // _SCALE_SAMPLE)]
    return float(np.percentile(np.abs(rows.astype(np.float64)), 99)) > UNNORMALIZED_LIMIT


def warn_unnormalized(problems: list[str]) -> None:
    """One warning for every split whose inputs look unnormalized, with the fix."""
    if problems:
        _warnings.warn(
            "; ".join(problems) + ". Networks train poorly on unnormalized inputs (e.g. at chance with SGD). "
            "Scale them (x / 255 for 8-bit images) or standardize them with statistics of the training split; "
            "dlfund.data.from_arrays(x, y) splits and normalizes them for you, and records the normalization "
            "for inference.",
            DataWarning,
        )


def check_loss_fits_outputs(loss: Loss, out_shape: tuple[int, ...]) -> None:
    """Softmax over a single output is always 1 (loss 0, class 0): refuse it with the two ways out."""
    if loss.task == MULTICLASS and (len(out_shape) == 1 or out_shape[-1] == 1):
        raise ValueError(
            f"the model has one output per example, but the {loss.name!r} loss needs one output per class (a "
            "softmax over one output is always 1: the loss is 0 and every prediction is class 0); for two classes "
            "use loss='binary_cross_entropy' with one output, or build the model with num_classes=2"
        )


def check_loss_fits_classes(loss: Loss, num_classes: int | None) -> None:
    """A dataset that says how many classes it holds against the loss: a binary loss takes two, a regression loss
    none. (Otherwise the model's output count is blamed, or the loss fails on shapes inside the program.)"""
    if num_classes is None:
        return
    if loss.task == BINARY and num_classes > 2:
        raise ValueError(
            f"the {loss.name!r} loss is for two classes (labels 0/1), but the dataset has {num_classes}; use "
            f"loss='softmax_cross_entropy' (the default of a model with {num_classes} outputs)"
        )
    if loss.task == REGRESSION:
        raise ValueError(
            f"the {loss.name!r} loss is a regression loss, but the dataset holds class labels ({num_classes} "
            "classes); use loss='softmax_cross_entropy' (the default of a classifier)"
        )


def check_target_shape(name: str, target_shape: tuple[int, ...], loss: Loss, out_shape: tuple[int, ...]) -> None:
    """Mean squared error compares outputs and targets element by element: their per-example shapes must agree
    ([N] targets with one output per example are fine); checked before anything compiles."""
    if loss.fn is not mse:
        return
    targets, outputs = tuple(target_shape[1:]), tuple(out_shape[1:])
    if targets == outputs or (outputs[-1:] == (1,) and targets == outputs[:-1]):
        return
    hint = ""
    if targets == () and outputs and outputs[-1] > 1:
        hint = "; if y holds class ids, this is classification: use loss='softmax_cross_entropy'"
    elif len(targets) == 1 and len(outputs) == 1:
        hint = f"; build the model with {targets[0]} outputs"
    raise ValueError(
        f"the {name} targets have shape {targets} per example but the model outputs {outputs}; the "
        f"{loss.name!r} loss needs the same shape{hint}"
    )


def integral_labels(y: np.ndarray) -> np.ndarray | None:
    """y [N] as int64 class ids when it is a vector of whole numbers; None otherwise (check_targets says why)."""
    y = np.asarray(y)
    if y.ndim != 1 or y.size == 0 or not (np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_):
        return None
    integral = np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_
    if not integral and (not np.isfinite(y).all() or not np.all(y == np.round(y))):
        return None
    return y.astype(np.int64)


def check_outputs_fit_labels(out_shape: tuple[int, ...], loss: Loss, labels: dict[str, np.ndarray]) -> None:
    """With array data (no dataset says how many classes there are), the model's outputs must cover the labels.

    Args:
      out_shape: the model's output shape for a batch, e.g. (2, 10).
      loss: the training loss.
      labels: split name -> integer labels [N] (already checked to be integral).
    Raises:
      ValueError: a label the model cannot output, phrased as a model error (it is the model that is too small).
    Warns:
      DataWarning: a multiclass model with more outputs than the labels need.
    """
    if not loss.is_classification or not labels:
        return
    one_output = loss.task == BINARY or len(out_shape) == 1 or out_shape[-1] == 1
    num_classes = 2 if one_output else int(out_shape[-1])
    highest = max(int(np.max(y)) for y in labels.values())
    lowest = min(int(np.min(y)) for y in labels.values())
    if lowest < 0:
        return  # a label error, which check_targets reports
    if highest >= num_classes:
        if loss.task == BINARY and len(out_shape) > 1 and out_shape[-1] > 1:
            raise ValueError(
                f"the {loss.name!r} loss is for two classes (labels 0/1), but the labels go up to {highest}; use "
                f"loss='softmax_cross_entropy' (the default of a model with {out_shape[-1]} outputs)"
            )
        if one_output:
            raise ValueError(
                f"the model is a binary classifier (one score per example, loss {loss.name!r}) but the labels go up to "
                f"{highest}: for {highest + 1} classes build it with num_classes={highest + 1} and train with "
                "softmax cross-entropy"
            )
        raise ValueError(
            f"the model has {num_classes} outputs but the labels go up to {highest}: build it with "
            f"num_classes={highest + 1}"
        )
    if not one_output and num_classes > 2 and num_classes > highest + 1:
        _warnings.warn(
            f"the model has {num_classes} outputs but the labels seen go only up to {highest} ({highest + 1} "
            f"classes); if there are {highest + 1} classes, build it with num_classes={highest + 1} (the extra "
            "outputs only learn never to be chosen, and macro metrics count their classes)",
            DataWarning,
        )


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
        _warnings.warn(
            f"batch_size={batch_size} is larger than the {num_examples} training examples; "
            f"training on one full batch of {num_examples} per step",
            UserWarning,
        )
        return num_examples
    return batch_size


def check_model_input(model: Any, example_shape: tuple[int, ...]) -> None:
    """Asks the model whether one example of ``example_shape`` fits (dlfund models know their input)."""
    check = getattr(model, "check_input", None)
    if check is not None:
        check(tuple(example_shape))


def check_batched_input(model: Any, x_shape: tuple[int, ...]) -> None:
    """Like :func:`check_model_input` for a whole batch x [N, ...]; a single example gets "add a batch axis".

    Raises:
      ValueError: the examples do not fit the model; when x itself is one example that fits, the message says to
        add a batch axis (``x[None]``) instead of advising another model.
    """
    check = getattr(model, "check_input", None)
    if check is None:
        return
    x_shape = tuple(x_shape)
    try:
        if not x_shape:
            raise ValueError(f"inputs must have a leading example axis, got a scalar of shape {x_shape}")
        check(x_shape[1:])
    except ValueError as error:
        try:
            check(x_shape)
        except ValueError:
            raise error from None
        raise ValueError(
            f"x has shape {x_shape}, which is one example for this model, not a batch: add a batch axis, "
            f"x[None] (shape {(1, *x_shape)}), or pass several examples [N, {', '.join(map(str, x_shape))}]"
        ) from None


def check_batch(name: str, loss: Loss, num_classes: int | None, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """A streamed batch as the step needs it, with the checks that in-memory data gets before training."""
    x = np.asarray(x, np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f"the {name} inputs contain NaN/Inf values (found in a streamed batch); clean the data")
    return x, check_targets(name, np.asarray(y), loss, num_classes)
