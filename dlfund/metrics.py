"""Classification metrics: scikit-learn-compatible functions and pure, jit-able streaming accumulators.

Two ways to measure the same thing:

* **Functions** (``confusion_matrix``, ``accuracy``, ``precision``, ``recall``, ``f1``,
  ``precision_recall_f1``) take whole label arrays ``y_true, y_pred`` of shape ``[N]`` and agree with
  ``sklearn.metrics``. With ``num_classes=None`` the classes are the sorted union of the labels seen
  (sklearn's ``labels=None``), which needs concrete arrays; with ``num_classes=C`` the classes are ``0..C-1``
  (sklearn's ``labels=np.arange(C)``) and the functions can be traced by ``jax.jit`` (``num_classes`` static).
* **Accumulators** (``MeanLoss``, ``Accuracy``, ``ConfusionMatrix``, ``Precision``, ``Recall``, ``F1``) follow
  Optax's ``init / update / compute`` style so that evaluation can run batch by batch inside ``jax.jit``,
  ``lax.scan`` or ``jax.vmap``::

      metric = Precision(num_classes=10, average="macro")
      state = metric.init()
      for batch in batches:  # or inside a jitted step / lax.scan body
          state = metric.update(state, labels=batch.y, predictions=batch.y_hat, mask=batch.mask)
      value = metric.compute(state)  # float32 scalar

  Each accumulator is a frozen dataclass, hashable by value, so it can be a static argument of a jitted
  function and equal configurations share one compilation. Feeding several batches gives the function's value
  on their concatenation.

* **Threshold curves** of a binary classifier's scores (``roc_curve``, ``precision_recall_curve``, ``roc_auc``,
  ``average_precision``) take labels in {0, 1} and one score per example, and agree with scikit-learn's
  ``roc_curve``, ``precision_recall_curve``, ``roc_auc_score`` and ``average_precision_score`` (ties included);
  they run in NumPy (float64), since the number of thresholds depends on the data.

Every precision / recall / F1 value, whichever form asked for it, comes from one confusion matrix through
:func:`scores_from_confusion`, so the two forms cannot drift apart. That function, like
:func:`confusion_counts`, runs on NumPy or JAX arrays: the functions score concrete inputs in NumPy (float64,
returned as float32 JAX arrays) because eager JAX compiles each operation anew for every new N and C, and
traced inputs in JAX.

Zero divisions follow scikit-learn >= 1.3: per class, precision = tp / predicted, recall = tp / true,
F1 = 2 tp / (true + predicted), and a ratio whose denominator is 0 is replaced by ``zero_division``
(0, 1 or nan). Averages ignore nan entries; a ``"weighted"`` average whose remaining supports sum to 0 falls
back to the plain mean of the remaining entries; an average over nothing is nan.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from dlfund.registry import Registry

AVERAGES: tuple[str | None, ...] = ("binary", "micro", "macro", "weighted", None)
"""Valid ``average`` values; ``None`` returns one score per class."""

SCORES: tuple[str, ...] = ("precision", "recall", "f1")

# The label sklearn's average="binary" scores (its default pos_label).
POSITIVE_LABEL = 1


# ----------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------


def _check_average(average: str | None) -> str | None:
    if average is not None and not (isinstance(average, str) and average in AVERAGES):
        valid = ", ".join(repr(a) for a in AVERAGES)
        raise ValueError(f"Unknown average {average!r}; valid averages are {valid}.")
    return average


def _check_zero_division(zero_division: float) -> float:
    """``zero_division`` as 0.0, 1.0 or the one ``math.nan`` object.

    Returning the same nan object matters: ``nan != nan`` and nan hashes by identity, so two metric configs
    built with different nan objects would otherwise compare unequal and miss each other's compilation cache.
    """
    try:
        value = float(zero_division)
    except (TypeError, ValueError):
        value = None
    if value is not None and math.isnan(value):
        return math.nan
    if value in (0.0, 1.0):
        return value
    raise ValueError(f"zero_division must be 0.0, 1.0 or nan; got {zero_division!r}.")


def _check_int(name: str, value: Any, minimum: int) -> int:
    try:
        count = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int; got {type(value).__name__}") from None
    if count < minimum:
        raise ValueError(f"{name} must be at least {minimum}; got {count}.")
    return count


def _check_num_classes(num_classes: int) -> int:
    return _check_int("num_classes", num_classes, 1)


def _as_labels(labels: Any, name: str) -> Any:
    """``labels`` as an integer array of shape [N] (NumPy or JAX, whichever it was; lists become NumPy)."""
    if not hasattr(labels, "shape") or not hasattr(labels, "dtype"):
        labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        raise ValueError(
            f"{name} must be class indices of shape [N]; got a column of shape {tuple(labels.shape)}. "
            f"Pass {name}[:, 0] (or {name}.ravel())."
        )
    if labels.ndim != 1:
        raise ValueError(
            f"{name} must be class indices of shape [N]; got shape {tuple(labels.shape)}. "
            "For scores or probabilities of shape [N, C], pass argmax(..., axis=-1)."
        )
    if labels.shape[0] == 0 and not jnp.issubdtype(labels.dtype, jnp.integer):
        # np.asarray([]) is float64; an empty label list carries no type to get wrong.
        labels = labels.astype(np.int32)
    if jnp.issubdtype(labels.dtype, jnp.bool_):
        labels = labels.astype(np.int32)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"{name} must hold integer class labels; got dtype {labels.dtype}.")
    return labels


def _check_same_length(first: Any, second: Any, names: tuple[str, str]) -> None:
    if first.shape[0] != second.shape[0]:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same length; "
            f"got {first.shape[0]} ({names[0]}) and {second.shape[0]} ({names[1]})."
        )


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _check_in_range(labels: Any, num_classes: int, name: str) -> None:
    """Rejects labels outside ``[0, num_classes)`` when their values are known (not under ``jit``)."""
    if not _is_concrete(labels):
        return
    values = np.asarray(labels)
    bad = np.unique(values[(values < 0) | (values >= num_classes)])
    if bad.size:
        shown = ", ".join(str(v) for v in bad[:10]) + (", ..." if bad.size > 10 else "")
        raise ValueError(f"{name} has labels outside [0, {num_classes}) for num_classes={num_classes}: {shown}.")


# ----------------------------------------------------------------------------------------------------
# The arithmetic: counts, then scores from counts
# ----------------------------------------------------------------------------------------------------


def _namespace(*arrays: Any) -> Any:
    """NumPy when every given array is a NumPy array, else ``jax.numpy``.

    Concrete inputs are scored in NumPy: JAX's eager mode compiles every operation afresh for each new [N] and
    [C], which made one-off calls on data of varying size cost tenths of a second each.
    """
    if all(isinstance(a, (np.ndarray, np.generic)) for a in arrays if a is not None):
        return np
    return jnp


def confusion_counts(
    true_index: jax.Array | np.ndarray,
    pred_index: jax.Array | np.ndarray,
    num_classes: int,
    weights: jax.Array | np.ndarray | None = None,
) -> jax.Array | np.ndarray:
    """Confusion matrix of class indices, optionally weighted; traceable.

    Args:
      true_index: int [N], true class index per example.
      pred_index: int [N], predicted class index per example.
      num_classes: C (static).
      weights: float [N] per-example weights, or None for unweighted int32 counts.

    Returns:
      [C, C] counts (int32 without weights, float32 with), a NumPy array when all inputs are NumPy arrays;
      row = true class, column = predicted class. Examples with an index outside ``[0, C)`` are left out:
      under ``jit`` there is no way to raise, and a negative index would otherwise wrap onto the last class.
    """
    xp = _namespace(true_index, pred_index, weights)
    true_index, pred_index = xp.asarray(true_index), xp.asarray(pred_index)
    inside = (true_index >= 0) & (true_index < num_classes) & (pred_index >= 0) & (pred_index < num_classes)
    if weights is None:
        dtype, per_example = xp.int32, inside.astype(xp.int32)
    else:
        dtype = xp.float32
        per_example = xp.where(inside, xp.asarray(weights, xp.float32), 0.0).astype(xp.float32)
    rows = xp.where(inside, true_index, 0)
    cols = xp.where(inside, pred_index, 0)
    counts = xp.zeros((num_classes, num_classes), dtype)
    if xp is np:
        np.add.at(counts, (rows, cols), per_example)
        return counts
    return counts.at[rows, cols].add(per_example)


def _divide(numerator: Any, denominator: Any, zero_division: float, xp: Any) -> Any:
    """numerator / denominator elementwise, with ``zero_division`` wherever the denominator is 0."""
    undefined = denominator == 0
    return xp.where(undefined, zero_division, numerator / xp.where(undefined, 1.0, denominator))


def _per_class_scores(score: str, tp: Any, predicted: Any, true: Any, zero_division: float, xp: Any) -> Any:
    """[K] precision, recall or F1 from true positives, predicted counts and true counts, each [K]."""
    if score == "precision":
        return _divide(tp, predicted, zero_division, xp)
    if score == "recall":
        return _divide(tp, true, zero_division, xp)
    # 2tp / (true + predicted) rather than the harmonic mean of precision and recall: it is the same where
    # both are defined and, like sklearn >= 1.3, gives zero_division only when the class is absent on both
    # sides.
    return _divide(2.0 * tp, true + predicted, zero_division, xp)


def _nan_average(values: Any, weights: Any | None, xp: Any) -> Any:
    """Mean of the non-nan ``values`` [K], weighted by ``weights`` [K] if given; nan if nothing is left.

    Mirrors sklearn's ``_nanaverage``: when the weights of the non-nan values sum to 0 it falls back to their
    unweighted mean rather than returning 0/0.
    """
    present = ~xp.isnan(values)
    unweighted = present.astype(values.dtype)
    if weights is None:
        w = unweighted
    else:
        w = xp.where(present, weights, 0.0)
        w = xp.where(xp.sum(w) > 0, w, unweighted)
    total = xp.sum(w)
    weighted_sum = xp.sum(xp.where(present, values, 0.0) * w)
    return xp.where(total > 0, weighted_sum / xp.where(total > 0, total, 1.0), xp.nan)


def scores_from_confusion(
    counts: jax.Array | np.ndarray,
    score: str,
    *,
    average: str | None = "macro",
    zero_division: float = 0.0,
    positive_index: int | None = POSITIVE_LABEL,
) -> jax.Array | np.ndarray:
    """Precision, recall or F1 from a confusion matrix; the one place this arithmetic lives. Traceable.

    Args:
      counts: [C, C] confusion matrix (int or float), row = true class, column = predicted class.
      score: "precision", "recall" or "f1".
      average: one of :data:`AVERAGES`. ``"micro"`` pools the counts of all classes before dividing;
        ``"macro"`` is the nan-ignoring mean over classes; ``"weighted"`` weights that mean by each class's
        true count; ``"binary"`` scores the class at ``positive_index`` alone; ``None`` returns every class.
      zero_division: value (0.0, 1.0 or nan) of a ratio whose denominator is 0.
      positive_index: for ``"binary"``, the row/column of the positive class, or None when the positive class
        is not among the classes (its score is then ``zero_division``, as in sklearn).

    Returns:
      A scalar, or [C] when ``average is None``: float64 NumPy for NumPy ``counts``, else float32 JAX.
    """
    if score not in SCORES:
        raise ValueError(f"Unknown score {score!r}; valid scores are {', '.join(SCORES)}.")
    _check_average(average)
    zero_division = _check_zero_division(zero_division)
    xp = _namespace(counts)
    counts = xp.asarray(counts).astype(xp.float64 if xp is np else jnp.float32)
    tp = xp.diagonal(counts)
    predicted = xp.sum(counts, axis=0)
    true = xp.sum(counts, axis=1)
    if average == "micro":
        tp, predicted, true = (xp.sum(x, keepdims=True) for x in (tp, predicted, true))
    elif average == "binary":
        if positive_index is None:
            tp = predicted = true = xp.zeros((1,), counts.dtype)
        else:
            tp, predicted, true = (x[positive_index : positive_index + 1] for x in (tp, predicted, true))
    per_class = _per_class_scores(score, tp, predicted, true, zero_division, xp)
    if average is None:
        return per_class
    if average in ("micro", "binary"):
        return per_class[0]
    return _nan_average(per_class, true if average == "weighted" else None, xp)


def _binary_positive_index(num_classes: int) -> int | None:
    """Where class 1 sits among classes ``0..num_classes-1`` for average="binary"; None if it is not there."""
    if num_classes > 2:
        raise ValueError(
            f"average='binary' scores the positive class {POSITIVE_LABEL} and needs at most 2 classes; "
            f"got num_classes={num_classes}. Use average='micro', 'macro', 'weighted' or None."
        )
    return POSITIVE_LABEL if num_classes == 2 else None


def _binary_positive_index_among(classes: np.ndarray) -> int | None:
    """Where label 1 sits in the sorted label set ``classes`` for average="binary"; sklearn's checks."""
    if classes.size > 2:
        raise ValueError(
            f"average='binary' needs at most 2 classes but the labels hold {classes.size}: "
            f"{classes.tolist()}. Use average='micro', 'macro', 'weighted' or None."
        )
    hits = np.flatnonzero(classes == POSITIVE_LABEL)
    if hits.size:
        return int(hits[0])
    if classes.size == 2:
        raise ValueError(
            f"average='binary' scores the positive class {POSITIVE_LABEL}, which is not among the labels "
            f"{classes.tolist()}."
        )
    return None


# ----------------------------------------------------------------------------------------------------
# Functional forms
# ----------------------------------------------------------------------------------------------------


def _labels_pair(y_true: Any, y_pred: Any) -> tuple[Any, Any]:
    """Validated int [N] label arrays: NumPy when their values are known, so they are scored in NumPy."""
    y_true = _as_labels(y_true, "y_true")
    y_pred = _as_labels(y_pred, "y_pred")
    _check_same_length(y_true, y_pred, ("y_true", "y_pred"))
    if _is_concrete(y_true) and _is_concrete(y_pred):
        return np.asarray(y_true), np.asarray(y_pred)
    return y_true, y_pred


def _to_jax(result: Any, dtype: Any) -> jax.Array:
    """The functional forms' result as a JAX array of ``dtype``, whichever library computed it."""
    if isinstance(result, (np.ndarray, np.generic)):
        return jnp.asarray(np.asarray(result, dtype))
    return result.astype(dtype)


def _encode(y_true: Any, y_pred: Any, num_classes: int | None) -> tuple[Any, Any, int, np.ndarray | None]:
    """Class indices for both label arrays, the class count, and the label set when it was read from the data.

    Returns:
      (true_index [N], pred_index [N], C, classes [C] or None when ``num_classes`` was given).
    """
    if num_classes is None:
        if not (_is_concrete(y_true) and _is_concrete(y_pred)):
            raise ValueError(
                "num_classes is required under jax.jit/vmap/grad: the class set cannot be read from traced "
                "arrays. Pass num_classes=C (classes 0..C-1)."
            )
        true_np, pred_np = np.asarray(y_true), np.asarray(y_pred)
        classes = np.union1d(true_np, pred_np)
        return np.searchsorted(classes, true_np), np.searchsorted(classes, pred_np), classes.size, classes
    num_classes = _check_num_classes(num_classes)
    _check_in_range(y_true, num_classes, "y_true")
    _check_in_range(y_pred, num_classes, "y_pred")
    return y_true, y_pred, num_classes, None


def confusion_matrix(y_true: Any, y_pred: Any, *, num_classes: int | None = None) -> jax.Array:
    """Confusion matrix like ``sklearn.metrics.confusion_matrix``.

    Args:
      y_true: int [N] true labels.
      y_pred: int [N] predicted labels.
      num_classes: C, for classes ``0..C-1`` (static; usable under ``jit``). None: the sorted union of the
        labels in ``y_true`` and ``y_pred`` (needs concrete arrays).

    Returns:
      int32 [C, C]; entry ``[i, j]`` counts examples of true class i predicted as class j.
    """
    y_true, y_pred = _labels_pair(y_true, y_pred)
    true_index, pred_index, count, _ = _encode(y_true, y_pred, num_classes)
    return _to_jax(confusion_counts(true_index, pred_index, count), np.int32)


def accuracy(y_true: Any, y_pred: Any) -> jax.Array:
    """Fraction of examples with ``y_pred == y_true`` (float32 scalar; nan for N = 0, where sklearn raises).

    Args:
      y_true: int [N] true labels.
      y_pred: int [N] predicted labels.
    """
    y_true, y_pred = _labels_pair(y_true, y_pred)
    if y_true.shape[0] == 0:
        return jnp.float32(jnp.nan)
    xp = _namespace(y_true, y_pred)
    return _to_jax(xp.mean(y_true == y_pred, dtype=xp.float32), np.float32)


def _confusion_for_scores(
    y_true: Any, y_pred: Any, num_classes: int | None, average: str | None, zero_division: float
) -> tuple[jax.Array | np.ndarray, int | None, float]:
    """Validated confusion matrix [C, C], binary positive index and zero_division for the score functions."""
    average = _check_average(average)
    zero_division = _check_zero_division(zero_division)
    y_true, y_pred = _labels_pair(y_true, y_pred)
    true_index, pred_index, count, classes = _encode(y_true, y_pred, num_classes)
    positive_index = None
    if average == "binary":
        positive_index = _binary_positive_index(count) if classes is None else _binary_positive_index_among(classes)
    return confusion_counts(true_index, pred_index, count), positive_index, zero_division


def precision_recall_f1(
    y_true: Any,
    y_pred: Any,
    *,
    num_classes: int | None = None,
    average: str | None = "macro",
    zero_division: float = 0.0,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Precision, recall and F1 from one confusion matrix, like sklearn's ``precision_recall_fscore_support``.

    Args:
      y_true: int [N] true labels.
      y_pred: int [N] predicted labels.
      num_classes: C, for classes ``0..C-1`` (static; usable under ``jit``); None: the sorted union of the
        labels present (needs concrete arrays).
      average: one of :data:`AVERAGES`; ``"binary"`` scores label 1 and needs at most 2 classes.
      zero_division: 0.0, 1.0 or nan, the value of a ratio whose denominator is 0.

    Returns:
      (precision, recall, f1): float32 scalars, or float32 [C] each when ``average is None``.

    Raises:
      ValueError: unequal lengths, an unknown ``average`` or ``zero_division``, a label outside ``[0, C)``
        (concrete arrays only), or ``average="binary"`` with more than 2 classes.
    """
    counts, positive_index, zero_division = _confusion_for_scores(y_true, y_pred, num_classes, average, zero_division)
    return tuple(
        _to_jax(
            scores_from_confusion(
                counts, score, average=average, zero_division=zero_division, positive_index=positive_index
            ),
            np.float32,
        )
        for score in SCORES
    )


def _score(score: str, y_true, y_pred, num_classes, average, zero_division) -> jax.Array:
    counts, positive_index, zero_division = _confusion_for_scores(y_true, y_pred, num_classes, average, zero_division)
    value = scores_from_confusion(
        counts, score, average=average, zero_division=zero_division, positive_index=positive_index
    )
    return _to_jax(value, np.float32)


def precision(
    y_true: Any,
    y_pred: Any,
    *,
    num_classes: int | None = None,
    average: str | None = "macro",
    zero_division: float = 0.0,
) -> jax.Array:
    """Precision tp / predicted, like ``sklearn.metrics.precision_score``.

    Arguments and errors as :func:`precision_recall_f1`: y_true, y_pred int [N].

    Returns:
      float32 scalar, or float32 [C] when ``average is None``.
    """
    return _score("precision", y_true, y_pred, num_classes, average, zero_division)


def recall(
    y_true: Any,
    y_pred: Any,
    *,
    num_classes: int | None = None,
    average: str | None = "macro",
    zero_division: float = 0.0,
) -> jax.Array:
    """Recall tp / true, like ``sklearn.metrics.recall_score``.

    Arguments and errors as :func:`precision_recall_f1`: y_true, y_pred int [N].

    Returns:
      float32 scalar, or float32 [C] when ``average is None``.
    """
    return _score("recall", y_true, y_pred, num_classes, average, zero_division)


def f1(
    y_true: Any,
    y_pred: Any,
    *,
    num_classes: int | None = None,
    average: str | None = "macro",
    zero_division: float = 0.0,
) -> jax.Array:
    """F1 = 2 tp / (true + predicted), like ``sklearn.metrics.f1_score``.

    Arguments and errors as :func:`precision_recall_f1`: y_true, y_pred int [N].

    Returns:
      float32 scalar, or float32 [C] when ``average is None``.
    """
    return _score("f1", y_true, y_pred, num_classes, average, zero_division)


# ----------------------------------------------------------------------------------------------------
# Accumulators
# ----------------------------------------------------------------------------------------------------


@runtime_checkable
class Metric(Protocol):
    """What training and evaluation loops need from a metric: a column name and pure init/update/compute."""

    name: str

    def init(self) -> Any: ...

    def update(
        self,
        state: Any,
        *,
        labels: jax.Array,
        predictions: jax.Array,
        losses: jax.Array | None = None,
        mask: jax.Array | None = None,
    ) -> Any: ...

    def compute(self, state: Any) -> jax.Array: ...


class MeanState(NamedTuple):
    """Running weighted sum: ``total`` f32[] = sum of weight * value, ``weight`` f32[] = sum of weights."""

    total: jax.Array
    weight: jax.Array


class ConfusionState(NamedTuple):
    """Running confusion matrix ``counts`` f32[C, C] (mask-weighted), row = true, column = predicted."""

    counts: jax.Array


def _batch(labels: Any, predictions: Any, mask: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Validated (labels int [B], predictions int [B], weights f32 [B]); no mask weighs every example 1."""
    labels = jnp.asarray(_as_labels(labels, "labels"))
    predictions = jnp.asarray(_as_labels(predictions, "predictions"))
    _check_same_length(labels, predictions, ("labels", "predictions"))
    if mask is None:
        return labels, predictions, jnp.ones(labels.shape, jnp.float32)
    mask = jnp.asarray(mask)
    if mask.shape != labels.shape:
        raise ValueError(f"mask must have the shape of labels {tuple(labels.shape)}; got {tuple(mask.shape)}")
    return labels, predictions, mask.astype(jnp.float32)


def _mean_init() -> MeanState:
    return MeanState(total=jnp.zeros((), jnp.float32), weight=jnp.zeros((), jnp.float32))


def _mean_update(state: MeanState, values: jax.Array, weights: jax.Array) -> MeanState:
    # where() instead of a bare product: padded examples may carry nan/inf values, and nan * 0 is nan.
    contribution = jnp.where(weights != 0, values.astype(jnp.float32) * weights, 0.0)
    return MeanState(total=state.total + jnp.sum(contribution), weight=state.weight + jnp.sum(weights))


def _mean_compute(state: MeanState) -> jax.Array:
    seen = state.weight > 0
    return jnp.where(seen, state.total / jnp.where(seen, state.weight, 1.0), jnp.nan)


@dataclasses.dataclass(frozen=True)
class MeanLoss:
    """Mask-weighted mean of per-example losses; nan before any (unmasked) example is seen.

    State: :class:`MeanState` of f32 scalars. ``update`` needs ``losses`` f32 [B].
    """

    name: str = "loss"

    def init(self) -> MeanState:
        return _mean_init()

    def update(self, state: MeanState, *, labels=None, predictions=None, losses=None, mask=None) -> MeanState:
        """Adds a batch: losses f32 [B], mask [B] or None. Labels and predictions are not needed (so this also
        serves regression, whose targets are not class ids) and are ignored."""
        if losses is None:
            raise ValueError(f"{type(self).__name__}.update needs losses= (per-example losses, shape [B]).")
        losses = jnp.asarray(losses)
        if losses.ndim != 1:
            raise ValueError(f"losses must be per-example, shape [B]; got {tuple(losses.shape)}.")
        if mask is None:
            weights = jnp.ones(losses.shape, jnp.float32)
        else:
            weights = jnp.asarray(mask).astype(jnp.float32)
            if weights.shape != losses.shape:
                raise ValueError(
                    f"mask must have the shape of losses {tuple(losses.shape)}; got {tuple(weights.shape)}"
                )
        return _mean_update(state, losses, weights)

    def compute(self, state: MeanState) -> jax.Array:
        """f32 scalar: sum(mask * loss) / sum(mask), nan when sum(mask) is 0."""
        return _mean_compute(state)


@dataclasses.dataclass(frozen=True)
class Accuracy:
    """Mask-weighted fraction of ``predictions == labels``; nan before any (unmasked) example is seen.

    State: :class:`MeanState` of f32 scalars.
    """

    name: str = "accuracy"

    def init(self) -> MeanState:
        return _mean_init()

    def update(self, state: MeanState, *, labels, predictions, losses=None, mask=None) -> MeanState:
        """Adds a batch: labels/predictions int [B], mask [B] or None; ``losses`` is ignored."""
        labels, predictions, weights = _batch(labels, predictions, mask)
        return _mean_update(state, labels == predictions, weights)

    def compute(self, state: MeanState) -> jax.Array:
        """f32 scalar: sum(mask * correct) / sum(mask), nan when sum(mask) is 0."""
        return _mean_compute(state)


def _confusion_init(num_classes: int) -> ConfusionState:
    return ConfusionState(counts=jnp.zeros((num_classes, num_classes), jnp.float32))


def _confusion_update(
    state: ConfusionState, num_classes: int, labels: Any, predictions: Any, mask: Any
) -> ConfusionState:
    labels, predictions, weights = _batch(labels, predictions, mask)
    _check_in_range(labels, num_classes, "labels")
    _check_in_range(predictions, num_classes, "predictions")
    return ConfusionState(counts=state.counts + confusion_counts(labels, predictions, num_classes, weights))


@dataclasses.dataclass(frozen=True)
class ConfusionMatrix:
    """Running confusion matrix over classes ``0..num_classes-1``.

    State: :class:`ConfusionState`, f32 [C, C] mask-weighted counts (float so that fractional masks work;
    exact integers up to 2**24 examples per cell). Labels outside ``[0, C)`` raise when concrete and are left
    out of the counts under ``jit``.
    """

    num_classes: int
    name: str = "confusion_matrix"

    def __post_init__(self):
        object.__setattr__(self, "num_classes", _check_num_classes(self.num_classes))

    def init(self) -> ConfusionState:
        return _confusion_init(self.num_classes)

    def update(self, state: ConfusionState, *, labels, predictions, losses=None, mask=None) -> ConfusionState:
        """Adds a batch: labels/predictions int [B], mask [B] or None; ``losses`` is ignored."""
        return _confusion_update(state, self.num_classes, labels, predictions, mask)

    def compute(self, state: ConfusionState) -> jax.Array:
        """f32 [C, C] counts, row = true class, column = predicted class."""
        return state.counts


@dataclasses.dataclass(frozen=True)
class _ConfusionScore:
    """Shared body of :class:`Precision`, :class:`Recall` and :class:`F1`: a running confusion matrix scored
    by :func:`scores_from_confusion` in ``compute``.

    Args:
      num_classes: C, classes ``0..C-1``.
      average: one of :data:`AVERAGES`; ``"binary"`` (positive class 1) needs C <= 2.
      zero_division: 0.0, 1.0 or nan.
      name: history column; defaults to the score ("precision") for the macro average, else
        "<score>_<average>" ("precision_micro", "precision_per_class" for ``average=None``).

    ``compute`` of a state that has seen no example gives ``zero_division`` (every ratio is 0/0), or nan for
    averages with nothing to average.
    """

    score: ClassVar[str]

    num_classes: int
    average: str | None = "macro"
    zero_division: float = 0.0
    name: str | None = None

    def __post_init__(self):
        num_classes = _check_num_classes(self.num_classes)
        average = _check_average(self.average)
        if average == "binary":
            _binary_positive_index(num_classes)
        object.__setattr__(self, "num_classes", num_classes)
        object.__setattr__(self, "zero_division", _check_zero_division(self.zero_division))
        if self.name is None:
            suffix = "" if average == "macro" else "_per_class" if average is None else f"_{average}"
            object.__setattr__(self, "name", self.score + suffix)

    def init(self) -> ConfusionState:
        return _confusion_init(self.num_classes)

    def update(self, state: ConfusionState, *, labels, predictions, losses=None, mask=None) -> ConfusionState:
        """Adds a batch: labels/predictions int [B], mask [B] or None; ``losses`` is ignored."""
        return _confusion_update(state, self.num_classes, labels, predictions, mask)

    def compute(self, state: ConfusionState) -> jax.Array:
        """f32 scalar, or f32 [C] when ``average is None``."""
        positive_index = _binary_positive_index(self.num_classes) if self.average == "binary" else None
        return scores_from_confusion(
            state.counts,
            self.score,
            average=self.average,
            zero_division=self.zero_division,
            positive_index=positive_index,
        )


@dataclasses.dataclass(frozen=True)
class Precision(_ConfusionScore):
    """Streaming precision; see :class:`_ConfusionScore` for the arguments and :func:`precision`."""

    score: ClassVar[str] = "precision"


@dataclasses.dataclass(frozen=True)
class Recall(_ConfusionScore):
    """Streaming recall; see :class:`_ConfusionScore` for the arguments and :func:`recall`."""

    score: ClassVar[str] = "recall"


@dataclasses.dataclass(frozen=True)
class F1(_ConfusionScore):
    """Streaming F1; see :class:`_ConfusionScore` for the arguments and :func:`f1`."""

    score: ClassVar[str] = "f1"


# ----------------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------------

MetricFactory = Callable[[int], Metric]

METRICS: Registry[MetricFactory] = Registry("metric")
"""Metric name -> ``factory(num_classes) -> metric``; the metric's ``name`` is the registered name."""


def _default_score_factory(cls: type[_ConfusionScore]) -> MetricFactory:
    """The plain name ("f1") means what users usually mean: class 1 of a 2-class problem, else macro."""

    def factory(num_classes: int) -> _ConfusionScore:
        average = "binary" if num_classes == 2 else "macro"
        return cls(num_classes, average=average, name=cls.score)

    factory.__name__ = cls.score
    return factory


METRICS.register("loss", lambda num_classes: MeanLoss())
METRICS.register("accuracy", lambda num_classes: Accuracy())
METRICS.register("confusion_matrix", lambda num_classes: ConfusionMatrix(num_classes))
for _cls in (Precision, Recall, F1):
    METRICS.register(_cls.score, _default_score_factory(_cls))
    for _average in ("micro", "macro", "weighted"):
        _name = f"{_cls.score}_{_average}"
        METRICS.register(_name, functools.partial(_cls, average=_average, name=_name))


def get_metric(spec: str | Metric, num_classes: int) -> Metric:
    """A metric by registered name (built for ``num_classes``), or ``spec`` itself if it is already a metric.

    Args:
      spec: a name in :data:`METRICS` ("accuracy", "f1_macro", ...) or an object with init/update/compute.
      num_classes: C, passed to the registered factory.

    Raises:
      ValueError: an unknown name; the message lists the known metrics.
      TypeError: ``spec`` is neither a name nor a metric.
    """
    if isinstance(spec, str):
        return METRICS.get(spec)(num_classes)
    if all(callable(getattr(spec, method, None)) for method in ("init", "update", "compute")):
        return spec
    raise TypeError(
        f"metric must be a name ({', '.join(METRICS.names())}) or an object with init/update/compute; "
        f"got {type(spec).__name__}."
    )


# ----------------------------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------------------------

# Text-report headers, as scikit-learn prints them; the dict keys use "f1" for "f1-score".
_REPORT_HEADERS = ("precision", "recall", "f1-score", "support")
_REPORT_AVERAGES = ("macro avg", "weighted avg")


def _report_classes(num_classes: int | None, class_names: Any) -> tuple[int | None, list[str] | None]:
    """``num_classes`` as implied by ``class_names``, and the names as strings (None when not given)."""
    if class_names is None:
        return num_classes, None
    if isinstance(class_names, (str, bytes)) or not hasattr(class_names, "__len__"):
        raise TypeError(f"class_names must be a sequence of names, one per class; got {type(class_names).__name__}.")
    names = [str(name) for name in class_names]
    if num_classes is None:
        return _check_num_classes(len(names)), names
    num_classes = _check_num_classes(num_classes)
    if len(names) != num_classes:
        raise ValueError(f"class_names has {len(names)} names but num_classes={num_classes}; they must match.")
    return num_classes, names


def per_class_scores(
    y_true: Any,
    y_pred: Any,
    *,
    num_classes: int | None = None,
    class_names: Any = None,
    zero_division: float = 0.0,
) -> dict[str, Any]:
    """Per-class precision, recall, F1 and support with their averages, like sklearn's
    ``classification_report(..., output_dict=True)``, as a JSON-friendly dict of plain Python floats and ints.

    Everything comes from one confusion matrix through :func:`scores_from_confusion`.

    Args:
      y_true: int [N] true labels (concrete; not usable under ``jit``).
      y_pred: int [N] predicted labels.
      num_classes: C, for classes ``0..C-1`` (sklearn's ``labels=np.arange(C)``); None: ``len(class_names)``
        when names are given, else the sorted union of the labels present.
      class_names: sequence of C names, one per class in class order; None names each class by its label.
      zero_division: 0.0, 1.0 or nan, the value of a ratio whose denominator is 0.

    Returns:
      ``{"classes": [C names], "precision": [C floats], "recall": [C floats], "f1": [C floats],
      "support": [C ints], "accuracy": float, "macro avg": {...}, "weighted avg": {...}}``, each average a dict
      with "precision", "recall", "f1" (floats) and "support" (int, the total true count). Support is the
      number of true examples per class; "weighted avg" weights by it (a plain mean where those weights sum to
      0); averages ignore nan entries (zero_division=nan). "accuracy" is the pooled (micro) precision, which
      is the accuracy since every label is one of the classes.

    Raises:
      ValueError: unequal lengths, a label outside ``[0, C)``, ``len(class_names) != num_classes``, an unknown
        ``zero_division``, traced inputs, or no classes at all (empty inputs without num_classes/class_names).
      TypeError: non-integer labels, or ``class_names`` that is a string rather than a sequence of names.
    """
    zero_division = _check_zero_division(zero_division)
    num_classes, names = _report_classes(num_classes, class_names)
    y_true, y_pred = _labels_pair(y_true, y_pred)
    if not (_is_concrete(y_true) and _is_concrete(y_pred)):
        raise ValueError("per_class_scores needs concrete label arrays; it cannot run under jax.jit/vmap/grad.")
    true_index, pred_index, count, classes = _encode(y_true, y_pred, num_classes)
    if count == 0:
        raise ValueError("y_true and y_pred are empty: no classes to report. Pass num_classes or class_names.")
    if names is None:
        names = [str(c) for c in (classes.tolist() if classes is not None else range(count))]
    return _report_from_counts(confusion_counts(true_index, pred_index, count), names, zero_division)


def per_class_from_confusion(confusion: Any, class_names: Any = None, *, zero_division: float = 0.0) -> dict[str, Any]:
    """The :func:`per_class_scores` dict from a confusion matrix [C, C] (rows true, columns predicted), such as
    ``dlfund.evaluate(...)["confusion_matrix"]``; ``class_names`` names the C classes (default "0".."C-1")."""
    zero_division = _check_zero_division(zero_division)
    counts = np.asarray(confusion, np.float64)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] == 0:
        raise ValueError(f"a confusion matrix is square [C, C] with C >= 1, got shape {counts.shape}")
    num_classes, names = _report_classes(counts.shape[0], class_names)
    return _report_from_counts(counts, names or [str(c) for c in range(num_classes)], zero_division)


def _report_from_counts(counts: Any, names: list[str], zero_division: float) -> dict[str, Any]:
    support = np.sum(counts, axis=1)
    total = int(np.sum(support))

    def score(name: str, average: str | None) -> Any:
        return scores_from_confusion(counts, name, average=average, zero_division=zero_division)

    report: dict[str, Any] = {"classes": names}
    for name in SCORES:
        report[name] = [float(v) for v in score(name, None)]
    report["support"] = [int(v) for v in support]
    report["accuracy"] = float(score("precision", "micro"))
    for heading in _REPORT_AVERAGES:
        average = heading.split()[0]
        report[heading] = {name: float(score(name, average)) for name in SCORES}
        report[heading]["support"] = total
    return report


@dataclasses.dataclass(frozen=True, repr=False)
class ClassificationReport:
    """Result of :func:`classification_report`: the :func:`per_class_scores` dict and a text table.

    ``str(report)`` (and ``repr``) is laid out like sklearn's text ``classification_report``: columns
    precision, recall, f1-score, support; a row per class, then accuracy, macro avg and weighted avg, the
    scores rounded to ``digits`` places. ``to_dict()`` gives (a copy of) the unrounded dict.
    """

    scores: dict[str, Any]
    digits: int = 4

    def to_dict(self) -> dict[str, Any]:
        """A deep copy of the :func:`per_class_scores` dict, so the report itself stays unchanged."""
        return {
            key: (dict(value) if isinstance(value, dict) else list(value) if isinstance(value, list) else value)
            for key, value in self.scores.items()
        }

    def __str__(self) -> str:
        s, digits = self.scores, self.digits
        width = max(*(len(name) for name in s["classes"]), len(_REPORT_AVERAGES[-1]), digits)
        row = "{:>{width}s} " + " {:>9.{digits}f}" * 3 + " {:>9}\n"
        text = "{:>{width}s} ".format("", width=width) + "".join(f" {h:>9}" for h in _REPORT_HEADERS) + "\n\n"
        for i, name in enumerate(s["classes"]):
            values = (s["precision"][i], s["recall"][i], s["f1"][i], s["support"][i])
            text += row.format(name, *values, width=width, digits=digits)
        text += "\n"
        support = s[_REPORT_AVERAGES[0]]["support"]
        text += ("{:>{width}s} " + " {:>9}" * 2 + " {:>9.{digits}f} {:>9}\n").format(
            "accuracy", "", "", s["accuracy"], support, width=width, digits=digits
        )
        for heading in _REPORT_AVERAGES:
            avg = s[heading]
            text += row.format(
                heading, avg["precision"], avg["recall"], avg["f1"], avg["support"], width=width, digits=digits
            )
        return text

    def __repr__(self) -> str:
        return str(self)


def classification_report(
    y_true: Any,
    y_pred: Any,
    *,
    class_names: Any = None,
    num_classes: int | None = None,
    digits: int = 4,
    zero_division: float = 0.0,
) -> ClassificationReport:
    """Per-class precision, recall, F1 and support with accuracy and averages, like
    ``sklearn.metrics.classification_report``.

    Args:
      y_true: int [N] true labels (concrete).
      y_pred: int [N] predicted labels.
      class_names: sequence of C names, one per class; implies ``num_classes=len(class_names)``.
      num_classes: C, for classes ``0..C-1``; None: from ``class_names``, else the sorted union of the labels.
      digits: decimal places of the scores in the text table (the dict is not rounded).
      zero_division: 0.0, 1.0 or nan, the value of a ratio whose denominator is 0.

    Returns:
      A :class:`ClassificationReport`: print it for the table, ``.to_dict()`` for the
      :func:`per_class_scores` dict.

    Raises:
      As :func:`per_class_scores`; also ValueError/TypeError for ``digits`` that is not an int >= 0.
    """
    digits = _check_int("digits", digits, 0)
    scores = per_class_scores(
        y_true, y_pred, num_classes=num_classes, class_names=class_names, zero_division=zero_division
    )
    return ClassificationReport(scores, digits)


# ----------------------------------------------------------------------------------------------------
# Threshold curves of a binary classifier's scores
# ----------------------------------------------------------------------------------------------------


class RocCurve(NamedTuple):
    """:func:`roc_curve`'s result; unpacks like scikit-learn's ``fpr, tpr, thresholds``.

    Attributes:
      fpr: float64 [K], increasing false positive rates: fpr[i] is the fraction of negatives with
        ``score >= thresholds[i]``.
      tpr: float64 [K], increasing true positive rates (recall) at the same thresholds.
      thresholds: float64 [K], decreasing; ``thresholds[0] = inf`` (nothing predicted positive: the point (0, 0)).
    """

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray


class PrecisionRecallCurve(NamedTuple):
    """:func:`precision_recall_curve`'s result; unpacks like scikit-learn's ``precision, recall, thresholds``.

    Attributes:
      precision: float64 [K + 1]: precision[i] of predicting positive when ``score >= thresholds[i]``; the last
        entry is 1 (the empty prediction, by convention).
      recall: float64 [K + 1], decreasing; the last entry is 0.
      thresholds: float64 [K], increasing: the distinct scores, from the lowest one that reaches recall 1.
    """

    precision: np.ndarray
    recall: np.ndarray
    thresholds: np.ndarray


def _binary_scores(y_true: Any, scores: Any, caller: str) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(y_true, scores)`` as float64 [N] NumPy arrays, labels in {0, 1}."""
    y = np.asarray(y_true)
    s = np.asarray(scores)
    if y.ndim != 1:
        column = " Pass y_true[:, 0] (or y_true.ravel())." if y.ndim == 2 and y.shape[1] == 1 else ""
        raise ValueError(f"{caller}: y_true must be labels of shape [N]; got shape {y.shape}.{column}")
    if s.ndim == 2 and s.shape[1] in (1, 2):
        column = "[:, 1] (the positive class's column)" if s.shape[1] == 2 else "[:, 0]"
        raise ValueError(
            f"{caller}: scores must be one score per example, shape [N]; got shape {s.shape}. For a model's "
            f"outputs or probabilities of shape {s.shape} pass scores{column}."
        )
    if s.ndim != 1:
        raise ValueError(f"{caller}: scores must be one score per example, shape [N]; got shape {s.shape}.")
    if y.shape[0] != s.shape[0]:
        raise ValueError(
            f"{caller}: y_true and scores must have the same length; got {y.shape[0]} (y_true) and "
            f"{s.shape[0]} (scores)."
        )
    if y.shape[0] == 0:
        raise ValueError(f"{caller}: y_true and scores are empty; there is no curve without examples.")
    if not (np.issubdtype(s.dtype, np.number) or s.dtype == np.bool_) or np.issubdtype(s.dtype, np.complexfloating):
        raise TypeError(f"{caller}: scores must be real numbers; got dtype {s.dtype}.")
    s = s.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(s))
    if bad.size:
        raise ValueError(
            f"{caller}: scores must be finite; scores[{bad[0]}] is {s[bad[0]]} ({bad.size} non-finite in all)."
        )
    if not (np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_):
        raise TypeError(f"{caller}: y_true must hold the labels 0 and 1; got dtype {y.dtype}.")
    labels = np.unique(y)
    if not np.isin(labels, (0, 1)).all():
        shown = ", ".join(str(v) for v in labels[:10]) + (", ..." if labels.size > 10 else "")
        raise ValueError(
            f"{caller} needs binary labels y_true in {{0, 1}} (1 = the positive class); got the labels {shown}. "
            f"For several classes, score one class k against the rest: {caller}(y_true == k, probabilities[:, k])."
        )
    return y.astype(np.float64), s


def _threshold_counts(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True and false positives when predicting ``score >= t``, for each distinct score t, from high to low.

    Returns:
      ``(fps, tps, thresholds)``, each float64 [K] (K distinct scores); tps[-1] counts the positives, fps[-1]
      the negatives.
    """
    order = np.argsort(s, kind="stable")[::-1]
    s, y = s[order], y[order]
    # Tied scores are one threshold: all of them are predicted positive together, so only the last example of
    # each run of equal scores ends a threshold.
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]
    tps = np.cumsum(y)[last_of_tie]
    fps = 1.0 + last_of_tie - tps
    return fps, tps, s[last_of_tie]


def _needs_both_classes(y: np.ndarray, caller: str, what: str) -> None:
    positives = int(y.sum())
    if positives in (0, y.size):
        only, missing = ("1", "negatives (0)") if positives else ("0", "positives (1)")
        raise ValueError(
            f"{caller} needs both classes in y_true, but all {y.size} labels are {only}: with no {missing} {what} "
            "is 0/0. Evaluate on a split that holds both classes."
        )


def roc_curve(y_true: Any, scores: Any, *, drop_intermediate: bool = True) -> RocCurve:
    """The receiver operating characteristic of binary scores, like ``sklearn.metrics.roc_curve``.

    Computed in NumPy (float64) on concrete arrays: the number of thresholds depends on the data.

    Args:
      y_true: [N] labels in {0, 1} (bool or numbers), 1 = the positive class.
      scores: [N] real scores, higher = more likely positive: a probability of class 1 (for a 2-output softmax
        model ``probabilities[:, 1]``), a logit, or a margin score (perceptron, hinge).
      drop_intermediate: drop thresholds whose point lies on a straight line between its neighbours (it changes
        neither the plotted curve nor the area), as scikit-learn does by default.

    Returns:
      :class:`RocCurve` ``(fpr, tpr, thresholds)``, float64 [K] each, with ``thresholds[0] = inf``.

    Raises:
      ValueError: labels other than 0/1 (the message says how to score one class of several), scores of another
        shape than [N] (for [N, 2] probabilities: pass ``[:, 1]``), non-finite scores, different lengths, no
        examples, or a single class in ``y_true`` (then one of the rates is 0/0; scikit-learn warns and returns
        nan).
    """
    y, s = _binary_scores(y_true, scores, "roc_curve")
    _needs_both_classes(y, "roc_curve", "the false or true positive rate")
    fps, tps, thresholds = _threshold_counts(y, s)
    if drop_intermediate and fps.size > 2:
        # A point is kept where the curve turns (a nonzero second difference in fps or tps) and at both ends.
        corner = np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True]
        fps, tps, thresholds = fps[corner], tps[corner], thresholds[corner]
    fps, tps = np.r_[0.0, fps], np.r_[0.0, tps]
    return RocCurve(fps / fps[-1], tps / tps[-1], np.r_[np.inf, thresholds])


def precision_recall_curve(y_true: Any, scores: Any, *, drop_intermediate: bool = False) -> PrecisionRecallCurve:
    """Precision and recall at every threshold of binary scores, like ``sklearn.metrics.precision_recall_curve``.

    Args:
      y_true: [N] labels in {0, 1}, 1 = the positive class.
      scores: [N] real scores, higher = more likely positive (see :func:`roc_curve`).
      drop_intermediate: drop thresholds that do not change the plotted curve (points between two of equal
        recall); off by default, as in scikit-learn.

    Returns:
      :class:`PrecisionRecallCurve` ``(precision, recall, thresholds)``: precision and recall float64 [K + 1]
      ending at (precision 1, recall 0), thresholds float64 [K] increasing.

    Raises:
      ValueError: as :func:`roc_curve`, except that only ``y_true`` without positives is refused (recall is then
        0/0; scikit-learn warns and sets it to 1); all positives give precision 1 everywhere.
    """
    y, s = _binary_scores(y_true, scores, "precision_recall_curve")
    if not y.any():
        raise ValueError(
            f"precision_recall_curve needs positives (label 1) in y_true, but all {y.size} labels are 0: recall is "
            "0/0. Evaluate on a split that holds both classes."
        )
    fps, tps, thresholds = _threshold_counts(y, s)
    if drop_intermediate and fps.size > 2:
        # Between two thresholds of equal recall only the first (highest precision) and the last matter.
        keep = np.r_[True, np.logical_or(np.diff(tps[:-1]), np.diff(tps[1:])), True]
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    precision = tps / (tps + fps)  # tps + fps >= 1: every threshold predicts at least one example positive
    recall = tps / tps[-1]
    return PrecisionRecallCurve(np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0], thresholds[::-1])


def roc_auc(y_true: Any, scores: Any) -> float:
    """Area under the ROC curve (trapezoids), like ``sklearn.metrics.roc_auc_score`` for binary labels: the
    probability that a random positive scores higher than a random negative, ties counting half.

    Args, Raises: as :func:`roc_curve`.
    """
    fpr, tpr, _ = roc_curve(y_true, scores)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def average_precision(y_true: Any, scores: Any) -> float:
    """Average precision, like ``sklearn.metrics.average_precision_score`` for binary labels: the mean of the
    precision at each threshold weighted by the recall it adds, ``sum_i (R_i - R_{i-1}) P_i`` (a step
    integral, without the interpolation that can make the trapezoidal area optimistic).

    Args, Raises: as :func:`precision_recall_curve`.
    """
    precision, recall, _ = precision_recall_curve(y_true, scores)
    return float(max(0.0, -np.sum(np.diff(recall) * precision[:-1])))
