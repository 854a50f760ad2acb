"""Loss and metric curves (train vs validation) from a per-epoch table such as :class:`dlfund.History`.

This module knows nothing of ``History`` (which uses it to draw itself): it reads any :class:`Curves`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

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
    written.append(_save(loss_fig, directory / "loss_curve.png"))
    names = list(metric_names(history) if metrics is None else metrics)
    if names:
        written.append(_save(history_figure(history, metrics=names), directory / "metrics.png"))
    return written


def _save(fig: Figure, path: Path) -> str:
    io_lib.write_with(path, lambda f: fig.savefig(f, format="png", dpi=110))
    return str(path)
