"""Figures: loss and metric curves of training, and the evaluation figures of a classifier.

* Training curves (train vs validation) from a per-epoch table such as :class:`dlfund.History`. This module
  knows nothing of ``History`` (which uses it to draw itself): it reads any :class:`Curves`.
* A confusion matrix (:func:`plot_confusion_matrix`), and for binary scores the ROC and precision-recall curves
  (:func:`plot_roc_curve`, :func:`plot_precision_recall_curve`), computed by :mod:`dlfund.metrics`.

The ``plot_*`` functions are for notebooks: they build their figure through pyplot (so that Jupyter's inline
backend displays it) and detach it at once, so a cell shows it once, as its value. What writes files (a run
folder's figures) builds a bare :class:`matplotlib.figure.Figure` and never touches pyplot, whose global state
and GUI backends have no place in a training process.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from dlfund import io as io_lib

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


class Curves(Protocol):
    """A per-epoch table: column names, one float array per column (NaN where missing), and optionally the
    epoch to mark as best (``selected_epoch``) and whether its weights were restored (``restored_best``)."""

    @property
    def columns(self) -> list[str]: ...

    def __getitem__(self, column: str) -> np.ndarray: ...

    def __contains__(self, column: object) -> bool: ...

    def __len__(self) -> int: ...


# Columns that are bookkeeping, not curves worth a panel.
_NOT_METRICS = {
    "epoch",
    "loss",
    "val_loss",
    "learning_rate",
    "time",
    "penalty",
    "grad_norm",
    "examples_per_second",
}


def metric_names(history: Curves) -> list[str]:
    """Training metrics that have a curve: every column except loss/bookkeeping and the ``val_`` twins."""
    names = []
    for c in history.columns:
        base = c.removeprefix("val_")
        if base not in _NOT_METRICS and base not in names:
            names.append(base)
    return names


def _draw_pair(ax: Axes, history: Curves, name: str, ylabel: str) -> None:
    epochs = history["epoch"] if "epoch" in history else np.arange(len(history))
    for column, label, style in ((name, "train", "-"), (f"val_{name}", "validation", "--")):
        if column in history and np.any(np.isfinite(history[column])):
            ax.plot(epochs, history[column], style, marker="o", markersize=3, label=f"{label} {name}")
    best = getattr(history, "selected_epoch", None)
    if best is not None and ax.lines:
        restored = " (weights restored)" if getattr(history, "restored_best", False) else ""
        ax.axvline(best, color="grey", linestyle=":", linewidth=1.2, label=f"best epoch {best}{restored}")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend()


def _figure(ncols: int, figsize: tuple[float, float], pyplot: bool) -> tuple[Figure, list[Axes]]:
    if pyplot:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, ncols, figsize=figsize, squeeze=False)
        # Detached from pyplot so that Jupyter shows it once (as the cell's value), not twice.
        plt.close(fig)
    else:
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize)
        axes = fig.subplots(1, ncols, squeeze=False)
    return fig, list(axes[0])


def history_figure(
    history: Curves,
    *,
    metrics: Sequence[str] | None = None,
    figsize: tuple[float, float] = (11, 4),
    pyplot: bool = False,
) -> Figure:
    """Loss curves in the first panel, one panel per metric after it."""
    names = list(metric_names(history) if metrics is None else metrics)
    fig, axes = _figure(1 + len(names), (figsize[0] * (1 + len(names)) / 2, figsize[1]), pyplot)
    _draw_pair(axes[0], history, "loss", "loss")
    axes[0].set_title("loss")
    for ax, name in zip(axes[1:], names):
        _draw_pair(ax, history, name, name)
        ax.set_title(name)
    fig.tight_layout()
    return fig


def save_history_plots(
    history: Curves, directory: str | os.PathLike, *, metrics: Sequence[str] | None = None
) -> list[str]:
    """Writes ``loss_curve.png`` (train vs validation loss) and, if any, ``metrics.png``; returns the paths."""
    directory = Path(directory)
    written = []
    loss_fig, (ax,) = _figure(1, (6, 4), pyplot=False)
    _draw_pair(ax, history, "loss", "loss")
    ax.set_title("loss")
    loss_fig.tight_layout()
    written.append(_save(loss_fig, directory / LOSS_FIGURE))
    names = list(metric_names(history) if metrics is None else metrics)
    if names:
        written.append(_save(history_figure(history, metrics=names), directory / METRICS_FIGURE))
    return written


def _save(fig: Figure, path: Path) -> str:
    io_lib.write_with(path, lambda f: fig.savefig(f, format="png", dpi=110))
    return str(path)


# ----------------------------------------------------------------------------------------------------
# Evaluation figures of a classifier
# ----------------------------------------------------------------------------------------------------

#: Valid ``normalize`` values of :func:`plot_confusion_matrix`, as in scikit-learn.
NORMALIZE: tuple[str | None, ...] = (None, "true", "pred", "all")

#: The file names of a run folder's evaluation figures.
LOSS_FIGURE = "loss_curve.png"
METRICS_FIGURE = "metrics.png"
CONFUSION_FIGURE = "confusion_matrix.png"
ROC_FIGURE = "roc_curve.png"
PR_FIGURE = "precision_recall_curve.png"

# More classes than this and the numbers in the cells would overlap; the colours still tell the story.
_MAX_ANNOTATED_CLASSES = 30


def _single_axes(ax: Axes | None, figsize: tuple[float, float], pyplot: bool) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    fig, (new_ax,) = _figure(1, figsize, pyplot)
    return fig, new_ax


def _confusion_input(y_true: Any, y_pred: Any, class_names: Any, num_classes: int | None) -> np.ndarray:
    """The [C, C] count matrix from labels (with ``y_pred``) or as given (without)."""
    from dlfund import metrics

    if y_pred is not None:
        if class_names is not None and num_classes is None:
            num_classes = len(class_names)  # the classes are 0..C-1, also those that no label shows
        return np.asarray(metrics.confusion_matrix(y_true, y_pred, num_classes=num_classes))
    matrix = np.asarray(y_true)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(
            f"plot_confusion_matrix takes labels y_true [N] and y_pred [N], or one confusion matrix [C, C] (e.g. "
            f"dlfund.evaluate(...)['confusion_matrix']); got y_true of shape {matrix.shape} and no y_pred"
        )
    if not np.issubdtype(matrix.dtype, np.number) or not np.all(np.isfinite(matrix)) or np.any(matrix < 0):
        raise ValueError("a confusion matrix holds counts: finite numbers >= 0")
    if num_classes is not None and num_classes != matrix.shape[0]:
        raise ValueError(f"the confusion matrix is {matrix.shape[0]}x{matrix.shape[0]} but num_classes={num_classes}")
    return matrix


def _normalized(matrix: np.ndarray, normalize: str | None) -> np.ndarray:
    """The matrix divided by its row sums ("true"), column sums ("pred") or total ("all"); 0 where that is 0."""
    if normalize is None:
        return matrix.astype(np.float64)
    axis = {"true": 1, "pred": 0, "all": None}[normalize]
    totals = matrix.sum(axis=axis, keepdims=axis is not None).astype(np.float64)
    return np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals != 0)


def confusion_matrix_figure(
    y_true: Any,
    y_pred: Any = None,
    *,
    class_names: Any = None,
    num_classes: int | None = None,
    normalize: str | None = None,
    ax: Axes | None = None,
    cmap: str = "Blues",
    title: str | None = None,
    pyplot: bool = False,
) -> Figure:
    """:func:`plot_confusion_matrix` with the choice of building the figure through pyplot or not."""
    if normalize not in NORMALIZE:
        known = ", ".join(repr(n) for n in NORMALIZE)
        raise ValueError(f"Unknown normalize {normalize!r}; known values are {known}.")
    counts = _confusion_input(y_true, y_pred, class_names, num_classes)
    size = counts.shape[0]
    if size == 0:
        raise ValueError("there is no confusion matrix to draw: no labels (0 classes)")
    names = [str(i) for i in range(size)] if class_names is None else [str(n) for n in class_names]
    if len(names) != size:
        raise ValueError(f"class_names has {len(names)} names for a {size}x{size} confusion matrix; give one per class")
    shown = _normalized(counts, normalize)
    side = min(max(4.0, 0.55 * size + 2.5), 16.0)
    fig, ax = _single_axes(ax, (side + 1.2, side), pyplot)
    image = ax.imshow(shown, cmap=cmap, vmin=0.0, vmax=1.0 if normalize else max(float(shown.max()), 1.0))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if size <= _MAX_ANNOTATED_CLASSES:
        dark = 0.5 * (1.0 if normalize else max(float(shown.max()), 1.0))
        integral = np.all(counts == np.round(counts))
        for i in range(size):
            for j in range(size):
                count = f"{int(counts[i, j])}" if integral else f"{counts[i, j]:.3g}"
                # An empty cell says 0 once: "0.00 (0)" in every empty cell would bury the errors that matter.
                text = count if normalize is None or counts[i, j] == 0 else f"{shown[i, j]:.2f}\n({count})"
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize="small" if size > 10 else "medium",
                    color="white" if shown[i, j] > dark else "black",
                )
    rotate = max(map(len, names)) > 3  # long names would run into each other
    ax.set_xticks(range(size), names, rotation=45 if rotate else 0, ha="right" if rotate else "center")
    ax.set_yticks(range(size), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    of = {None: "", "true": " (each true class sums to 1)", "pred": " (each predicted class sums to 1)"}
    of["all"] = " (all cells sum to 1)"
    ax.set_title(title if title is not None else f"confusion matrix{of[normalize]}")
    fig.tight_layout()
    return fig


def plot_confusion_matrix(
    y_true: Any,
    y_pred: Any = None,
    *,
    class_names: Any = None,
    num_classes: int | None = None,
    normalize: str | None = None,
    ax: Axes | None = None,
    cmap: str = "Blues",
    title: str | None = None,
) -> Figure:
    """A confusion matrix as a colored grid, each cell annotated with its count (and its share, normalized).

    >>> metrics = dlfund.evaluate(model, ds.test)  # doctest: +SKIP
    >>> dlfund.plot_confusion_matrix(metrics["confusion_matrix"], class_names=ds.class_names, normalize="true")

    Args:
      y_true: int [N] true labels, with ``y_pred``; or, without ``y_pred``, a confusion matrix [C, C] of counts
        (rows: true class, columns: predicted class), such as ``dlfund.evaluate(...)["confusion_matrix"]``.
      y_pred: int [N] predicted labels (``dlfund.predict_classes(model, x)``), or None.
      class_names: C names for the ticks; also sets the classes to ``0..C-1`` for labels.
      num_classes: C, for labels, when no ``class_names``; None: the sorted union of the labels (as
        :func:`dlfund.metrics.confusion_matrix`).
      normalize: None (colors by count), "true" (each row divided by its sum: recall on the diagonal), "pred"
        (each column: precision on the diagonal) or "all" (by the total), as scikit-learn's ``normalize``; a row
        or column without examples shows 0. The cells then show the share and, below it, the count.
      ax: draw into these axes; None: a new figure.
      cmap: a matplotlib colormap name.
      title: the axes title; None: "confusion matrix" and what was normalized.

    Returns:
      the matplotlib ``Figure`` (in Jupyter, displayed as the cell's value).

    Raises:
      ValueError: an unknown ``normalize`` (the message lists the known values), a matrix that is not square or
        holds negative counts, ``class_names`` of another length than the classes, or labels as
        :func:`dlfund.metrics.confusion_matrix` refuses them.
    """
    return confusion_matrix_figure(
        y_true,
        y_pred,
        class_names=class_names,
        num_classes=num_classes,
        normalize=normalize,
        ax=ax,
        cmap=cmap,
        title=title,
        pyplot=ax is None,
    )


def _check_threshold(threshold: Any) -> float | None:
    if threshold is None:
        return None
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.number)) or not np.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number (a score), got {threshold!r}")
    return float(threshold)


def _at_threshold(y: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[float, float, float]:
    """(false positive rate, true positive rate, precision) of predicting positive when ``score >= threshold``;
    precision is 1 when nothing is predicted positive (the convention of the curve's end point)."""
    predicted = scores >= threshold
    positives = y == 1
    tp = np.sum(predicted & positives)
    fp = np.sum(predicted & ~positives)
    fpr = fp / max(np.sum(~positives), 1)
    tpr = tp / max(np.sum(positives), 1)
    precision = tp / (tp + fp) if tp + fp else 1.0
    return float(fpr), float(tpr), float(precision)


def roc_curve_figure(
    y_true: Any,
    scores: Any,
    *,
    threshold: float | None = None,
    label: str | None = None,
    ax: Axes | None = None,
    title: str | None = None,
    pyplot: bool = False,
) -> Figure:
    """:func:`plot_roc_curve` with the choice of building the figure through pyplot or not."""
    from dlfund import metrics

    threshold = _check_threshold(threshold)
    curve = metrics.roc_curve(y_true, scores)  # validates both
    area = metrics.roc_auc(y_true, scores)
    fig, ax = _single_axes(ax, (5.2, 5.0), pyplot)
    ax.plot(curve.fpr, curve.tpr, linewidth=1.8, label=f"{label or 'model'} (AUC = {area:.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance (AUC = 0.5)")
    if threshold is not None:
        y, s = np.asarray(y_true).astype(np.float64), np.asarray(scores, np.float64)
        fpr, tpr, _ = _at_threshold(y, s, threshold)
        ax.plot(
            [fpr], [tpr], "o", color="C3", markersize=7, label=f"threshold {threshold:g}: FPR {fpr:.2f}, TPR {tpr:.2f}"
        )
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate (recall)")
    ax.set_title(title if title is not None else "ROC curve")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def plot_roc_curve(
    y_true: Any,
    scores: Any,
    *,
    threshold: float | None = None,
    label: str | None = None,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """The ROC curve of binary scores, its area (AUC) in the legend, the chance diagonal, and a threshold's point.

    Args:
      y_true: [N] labels in {0, 1}, 1 = the positive class.
      scores: [N] scores of the positive class: ``probabilities[:, 1]`` of a classifier, a logit or a margin.
      threshold: mark the point of predicting positive when ``score >= threshold`` (e.g. 0.5 for probabilities,
        0 for logits), with its false and true positive rates in the legend; None: no mark.
      label: the curve's name in the legend (default "model").
      ax: draw into these axes; None: a new figure.
      title: the axes title (default "ROC curve").

    Returns:
      the matplotlib ``Figure``.

    Raises:
      ValueError: as :func:`dlfund.metrics.roc_curve` (labels not 0/1, scores not [N], a single class), or a
        threshold that is not a finite number.
    """
    return roc_curve_figure(y_true, scores, threshold=threshold, label=label, ax=ax, title=title, pyplot=ax is None)


def precision_recall_figure(
    y_true: Any,
    scores: Any,
    *,
    threshold: float | None = None,
    label: str | None = None,
    ax: Axes | None = None,
    title: str | None = None,
    pyplot: bool = False,
) -> Figure:
    """:func:`plot_precision_recall_curve` with the choice of building the figure through pyplot or not."""
    from dlfund import metrics

    threshold = _check_threshold(threshold)
    curve = metrics.precision_recall_curve(y_true, scores)  # validates both
    ap = metrics.average_precision(y_true, scores)
    y = np.asarray(y_true).astype(np.float64)
    fig, ax = _single_axes(ax, (5.2, 5.0), pyplot)
    # A step function, as average precision integrates it: each precision holds until recall grows again.
    ax.plot(
        curve.recall,
        curve.precision,
        drawstyle="steps-post",
        linewidth=1.8,
        label=f"{label or 'model'} (AP = {ap:.3f})",
    )
    prevalence = float(y.mean())
    ax.axhline(
        prevalence, linestyle="--", color="grey", linewidth=1, label=f"chance (AP = prevalence {prevalence:.2f})"
    )
    if threshold is not None:
        _, recall, precision = _at_threshold(y, np.asarray(scores, np.float64), threshold)
        ax.plot(
            [recall], [precision], "o", color="C3", markersize=7,
            label=f"threshold {threshold:g}: precision {precision:.2f}, recall {recall:.2f}",
        )  # fmt: skip
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title if title is not None else "precision-recall curve")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    return fig


def plot_precision_recall_curve(
    y_true: Any,
    scores: Any,
    *,
    threshold: float | None = None,
    label: str | None = None,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """The precision-recall curve of binary scores (a step function), the average precision (AP) in the legend,
    the chance level (the prevalence of positives), and a threshold's point.

    Args:
      y_true: [N] labels in {0, 1}, 1 = the positive class.
      scores: [N] scores of the positive class (see :func:`plot_roc_curve`).
      threshold: mark precision and recall of predicting positive when ``score >= threshold``; None: no mark.
      label: the curve's name in the legend (default "model").
      ax: draw into these axes; None: a new figure.
      title: the axes title (default "precision-recall curve").

    Returns:
      the matplotlib ``Figure``.

    Raises:
      ValueError: as :func:`dlfund.metrics.precision_recall_curve` (labels not 0/1, scores not [N], no
        positives), or a threshold that is not a finite number.
    """
    return precision_recall_figure(
        y_true, scores, threshold=threshold, label=label, ax=ax, title=title, pyplot=ax is None
    )


def save_classification_plots(
    directory: str | os.PathLike,
    confusion: Any,
    *,
    class_names: Any = None,
    y_true: Any = None,
    scores: Any = None,
    threshold: float | None = None,
    split: str = "test",
) -> list[str]:
    """Writes ``confusion_matrix.png`` (counts and the share of each true class) and, given binary ``y_true`` and
    ``scores``, ``roc_curve.png`` and ``precision_recall_curve.png`` (``threshold`` marked) into ``directory``;
    returns the paths. Never uses pyplot.

    Args:
      directory: the folder (a run folder).
      confusion: [C, C] counts, rows true classes, columns predicted.
      class_names: C names, or None for the class ids.
      y_true, scores: [N] binary labels and the positive class's scores, or None for no curves.
      threshold: the model's decision threshold on ``scores``.
      split: the split's name, for the titles.
    """
    directory = Path(directory)
    counts = np.asarray(confusion)
    written = []
    fig = confusion_matrix_figure(
        counts,
        class_names=class_names,
        normalize="true",
        title=f"confusion matrix, {split} split ({int(counts.sum())} examples)\nrows sum to 1; counts in brackets",
    )
    written.append(_save(fig, directory / CONFUSION_FIGURE))
    if y_true is not None and scores is not None:
        positive = f"\npositive class: {class_names[1]}" if class_names is not None and len(class_names) == 2 else ""
        fig = roc_curve_figure(y_true, scores, threshold=threshold, title=f"ROC curve, {split} split{positive}")
        written.append(_save(fig, directory / ROC_FIGURE))
        fig = precision_recall_figure(
            y_true, scores, threshold=threshold, title=f"precision-recall curve, {split} split{positive}"
        )
        written.append(_save(fig, directory / PR_FIGURE))
    return written
