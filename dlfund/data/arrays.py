"""``from_arrays``: your own in-memory data as a :class:`Dataset`, split and normalized like the registered ones."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dlfund.data.dataset import CLASSIFICATION, REGRESSION, Dataset, Normalization
from dlfund.data.splitting import TEST_SEED, stratified_split

NORMALIZE_MODES = ("per_channel", "per_feature", None)


def from_arrays(
    x: Any,
    y: Any,
    *,
    name: str = "arrays",
    class_names: Sequence[str] | None = None,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    seed: int = 0,
    normalize: str | None = "per_channel",
    task: str | None = None,
) -> Dataset:
    """Splits and normalizes ``(x, y)`` by the rules of :func:`dlfund.data.load`.

    The test split is a stratified ``test_fraction`` of all examples chosen with a fixed seed, the same for
    every ``seed``; ``val`` is a stratified ``val_fraction`` of the rest chosen by ``seed``; ``train`` is what
    remains. (Regression targets have no classes: both choices are then seeded random ones.) The normalization
    is fitted on ``train`` only and applied to all three splits; regression targets are left as given.

    Args:
      x: (N, *input_shape) numbers (any real dtype; bool too), finite. Images are (N, H, W, C), tabular data
        (N, F), sequences (N, T, F).
      y: (N,) labels: integer class ids ``0..K-1`` (classification), or floats (regression).
      name: the dataset's name, shown by ``repr``.
      class_names: one name per class; default "0".."K-1" with K = max(y) + 1. Implies classification.
      test_fraction: share of all examples held out for testing, in ``[0, 1)``.
      val_fraction: share of the remaining examples held out for validation, in ``[0, 1)``.
      seed: chooses the validation examples.
      normalize: ``"per_channel"``: one mean/std per entry of the last axis (the channel of images, the feature
        of tabular and sequence data; one for all of x when it is (N,)); ``"per_feature"``: one mean/std per
        input element (e.g. per pixel); ``None``: x is used as given (cast to float32).
      task: ``"classification"`` or ``"regression"``; by default classification for integer (or bool) y or
        when ``class_names`` is given, regression for float y.

    Returns:
      A :class:`Dataset` named ``name``; y int32 (classification, ``num_classes`` = K) or float32 (regression,
      ``num_classes=None``).

    Raises:
      ValueError / TypeError: x and y of different lengths, non-numeric values, NaN/Inf, labels that are not
        class ids in range, a fraction out of range, an unknown ``normalize`` or ``task``, or splits that
        leave train empty.
    """
    x = check_inputs(x)
    y, task = _check_targets(y, len(x), task, class_names)
    if task == CLASSIFICATION:
        num_classes = len(class_names) if class_names is not None else int(y.max()) + 1
        if class_names is not None and int(y.max()) >= num_classes:
            raise ValueError(
                f"y has label {int(y.max())} but only {num_classes} class_names were given; "
                "labels must be in [0, len(class_names))"
            )
        names = tuple(str(n) for n in class_names) if class_names is not None else tuple(map(str, range(num_classes)))
    else:
        num_classes, names = None, ()
    return split_and_normalize(
        name,
        x,
        y,
        num_classes=num_classes,
        class_names=names,
        test_fraction=test_fraction,
        val_fraction=val_fraction,
        seed=seed,
        normalize=normalize,
    )


def split_and_normalize(
    name: str,
    x_raw: np.ndarray,
    y: np.ndarray,
    *,
    num_classes: int | None,
    class_names: tuple[str, ...],
    test_fraction: float,
    val_fraction: float,
    seed: int,
    normalize: str | None,
    scale: float = 1.0,
) -> Dataset:
    """The :class:`Dataset` of checked arrays x_raw (N, *input_shape), y (N,) int32 or float32 (see ``from_arrays``).

    ``scale`` multiplies the stored values before the statistics (``1/255`` for 8-bit images), also with
    ``normalize=None``.
    """
    for label, fraction in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"{label} must be in [0, 1), got {fraction}")
    if normalize not in NORMALIZE_MODES:
        raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {normalize!r}")
    # Regression targets have no classes: one stratum makes the stratified split a seeded random one.
    strata = y if num_classes is not None else np.zeros(len(y), np.int64)
    pool, test = stratified_split(strata, test_fraction, TEST_SEED)
    kept, held = stratified_split(strata[pool], val_fraction, seed)
    train, val = pool[kept], pool[held]
    if len(train) == 0:
        raise ValueError(
            f"{len(y)} examples with test_fraction={test_fraction} and val_fraction={val_fraction} leave no "
            "training examples; use smaller fractions or more data"
        )
    if normalize is None:
        normalization = Normalization(mean=np.zeros((), np.float32), std=np.ones((), np.float32), scale=scale)
    else:
        normalization = Normalization.fit(x_raw[train], axis=_stats_axes(normalize, x_raw.ndim), scale=scale)
    return Dataset(
        name=name,
        train=(normalization.apply(x_raw[train]), y[train]),
        val=(normalization.apply(x_raw[val]), y[val]),
        test=(normalization.apply(x_raw[test]), y[test]),
        num_classes=num_classes,
        input_shape=tuple(x_raw.shape[1:]),
        class_names=class_names,
        normalization=normalization,
    )


def check_inputs(x: Any) -> np.ndarray:
    """x as a NumPy array (N, *input_shape) of real numbers, all finite, N >= 1; bool becomes uint8."""
    x = np.asarray(x)
    if x.ndim == 0:
        raise ValueError(f"x must have a leading example axis, shape (N, *input_shape); got a scalar {x!r}")
    if x.dtype == np.bool_:
        x = x.astype(np.uint8)
    if x.dtype.kind not in "iuf":
        raise TypeError(f"x must hold real numbers, got dtype {x.dtype}; convert it, e.g. x.astype(np.float32)")
    if len(x) == 0:
        raise ValueError("x is empty: there is nothing to split")
    if x.dtype.kind == "f":
        bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
        if bad.any():
            raise ValueError(
                f"x contains NaN/Inf in {int(bad.sum())} examples (first: example {int(np.argmax(bad))}); "
                "remove or impute them first"
            )
    return x


def _check_targets(y: Any, n: int, task: str | None, class_names: Sequence[str] | None) -> tuple[np.ndarray, str]:
    """y as int32 class ids or float32 targets (N,), and the task."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y must have shape (N,), one label or target per example; got {y.shape}")
    if len(y) != n:
        raise ValueError(f"x has {n} examples but y has {len(y)} labels; they must match one to one")
    if y.dtype == np.bool_:
        y = y.astype(np.int64)
    if y.dtype.kind not in "iuf":
        raise TypeError(
            f"y must be numeric (integer class ids, or floats for regression), got dtype {y.dtype}; for string "
            "labels use `class_names, y = np.unique(labels, return_inverse=True)` and pass class_names="
        )
    if task is None:
        task = CLASSIFICATION if y.dtype.kind in "iu" or class_names is not None else REGRESSION
    if task not in (CLASSIFICATION, REGRESSION):
        raise ValueError(f"task must be {CLASSIFICATION!r}, {REGRESSION!r} or None, got {task!r}")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise ValueError(f"y contains NaN/Inf (first at example {int(np.argmax(~np.isfinite(y)))})")
    if task == REGRESSION:
        if class_names is not None:
            raise ValueError("class_names are for classification, but task='regression'")
        return y.astype(np.float32), task
    if y.dtype.kind == "f" and not np.array_equal(y, np.round(y)):
        raise ValueError("classification labels must be integer class ids; y has non-integer values")
    if y.min() < 0:
        raise ValueError(
            f"classification labels must be class ids >= 0, got {int(y.min())}; remap them with "
            "`classes, y = np.unique(y, return_inverse=True)`"
        )
    if class_names is not None and len(class_names) == 0:
        raise ValueError("class_names is empty; give one name per class")
    return y.astype(np.int32), task


def _stats_axes(normalize: str, ndim: int) -> tuple[int, ...]:
    """Axes of x (N, *input_shape) that one mean/std averages over."""
    if normalize == "per_feature":
        return (0,)
    # per_channel: all but the last axis; for (N,) inputs there is no channel axis, only N.
    return tuple(range(max(ndim - 1, 1)))
