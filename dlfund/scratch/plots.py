"""The figures of the from-scratch notebook: activations with their derivatives, and decision regions in 2-D.

Figures are made with pyplot and detached from it (as ``dlfund.plotting`` does), so Jupyter shows one once, as the
value of the cell that returns it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from dlfund.scratch._checks import as_float, check_count
from dlfund.scratch.activations import activate, activation_grad

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def figure(ncols: int, *, panel_size: tuple[float, float] = (3.4, 3.0)) -> tuple[Figure, list[Axes]]:
    """A figure with ``ncols`` panels side by side, detached from pyplot: return it from a cell to show it."""
    import matplotlib.pyplot as plt

    ncols = check_count("ncols", ncols)
    size = (panel_size[0] * ncols, panel_size[1])
    # constrained layout keeps titles and tick labels of neighbouring panels apart
    fig, axes = plt.subplots(1, ncols, figsize=size, squeeze=False, layout="constrained")
    plt.close(fig)  # shown once, as the cell's value, not a second time when the cell ends
    return fig, list(axes[0])


def activations_figure(names: Sequence[str] = ("sigmoid", "step", "tanh", "relu"), *, limit: float = 5.0) -> Figure:
    """Two panels on [-limit, limit]: the activations, and their derivatives (what backpropagation multiplies by)."""
    z = np.linspace(-limit, limit, 501, dtype=np.float32)
    fig, (left, right) = figure(2, panel_size=(4.5, 3.2))
    for name in names:
        left.plot(z, activate(z, name), label=name)
        right.plot(z, activation_grad(z, name), label=name)
    left.set_title("activation a(z)")
    right.set_title("derivative da/dz")
    for ax in (left, right):
        ax.set_xlabel("z = w . x + b")
        ax.axhline(0, color="gray", linewidth=0.5)
        ax.legend()
    return fig


def plot_decision_regions(
    predict: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    *,
    ax: Axes,
    title: str | None = None,
    margin: float = 0.5,
    resolution: int = 150,
) -> Axes:
    """Shades the plane by the class ``predict`` gives each point and draws the examples on top.

    Args:
      predict: maps points [M, 2] to class ids [M] (e.g. a perceptron's 0/1 predictions).
      x: examples [N, 2]; y: their labels [N] (the marker colours).
      ax: the panel to draw into.
      title: the panel's title.
      margin: how far the shaded area extends beyond the examples.
      resolution: grid points per side.
    """
    x = as_float("x", x, ndim=2)
    if x.shape[1] != 2:
        raise ValueError(f"decision regions are drawn for 2-D inputs: x must have shape [N, 2], got {x.shape}")
    lo, hi = x.min(axis=0) - margin, x.max(axis=0) + margin
    g0, g1 = np.meshgrid(np.linspace(lo[0], hi[0], resolution), np.linspace(lo[1], hi[1], resolution))
    grid = np.stack([g0.ravel(), g1.ravel()], axis=1).astype(np.float32)
    regions = np.asarray(predict(grid)).reshape(g0.shape)
    ax.contourf(g0, g1, regions, levels=[-0.5, 0.5, 1.5], colors=["#9ecae1", "#fdae6b"], alpha=0.6)
    ax.scatter(x[:, 0], x[:, 1], c=np.asarray(y), cmap="coolwarm", edgecolors="black", s=80, vmin=0, vmax=1)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    if title is not None:
        ax.set_title(title)
    return ax
