"""Measurements shared by the training-dynamics experiments (activations, optimizers, learning rate, batch norm).

Each of them trains one :func:`dlfund.sweep` per arm over a grid of learning rates and seeds, then asks the same
questions of its members: how many epochs until the validation accuracy first reaches a threshold (the *speed*),
which learning rate suits each arm best (tuned on the validation split, per arm), and whether one arm is faster
than another beyond the spread of its seeds. The drawing helpers build on a matplotlib ``Axes`` (no pyplot).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np


def epochs_to(history, threshold: float, column: str = "val_accuracy") -> int | None:
    """The first (1-based) epoch at which ``column`` reaches ``threshold``; None if it never does (or no epoch
    finished, as for a member whose loss went non-finite in its first epoch)."""
    if not len(history) or column not in history:
        return None
    hits = np.flatnonzero(history[column] >= threshold)
    return int(hits[0]) + 1 if hits.size else None


def censored(epochs: Sequence[int | None], budget: int) -> np.ndarray:
    """Epochs to a threshold with "never within the budget" counted as ``budget + 1``.

    That understates how slow a run that never got there is, so a comparison that counts it this way is
    conservative for the run that did get there.
    """
    return np.array([budget + 1 if e is None else e for e in epochs], float)


def describe_epochs(epochs: Sequence[int | None], budget: int) -> str:
    """Per-seed epochs as text: ``"3, 4, >25"``."""
    return ", ".join(f">{budget}" if e is None else str(e) for e in epochs)


def _finite_max(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.max()) if finite.size else math.nan


def _finite_min(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.min()) if finite.size else math.nan


@dataclasses.dataclass
class Setting:
    """The members of a sweep that share one learning rate (one per seed), and what they measured.

    Attributes:
      learning_rate: the shared rate.
      members: the members' indices in the sweep.
      epochs: per member, the first epoch at the threshold (None: never).
      best_val_accuracy, best_val_loss, final_val_accuracy: per member, over its epochs (NaN if none finished).
      diverged: per member, whether its loss went non-finite (the sweep stopped it before the bad step).
      budget: the epochs each member was given.
    """

    learning_rate: float
    members: list[int]
    epochs: list[int | None]
    best_val_accuracy: np.ndarray
    best_val_loss: np.ndarray
    final_val_accuracy: np.ndarray
    diverged: list[bool]
    budget: int

    @property
    def mean_epochs(self) -> float:
        """Mean epochs to the threshold, "never" counted as budget + 1 (see :func:`censored`)."""
        return float(censored(self.epochs, self.budget).mean())

    @property
    def reached(self) -> int:
        return sum(e is not None for e in self.epochs)


def by_learning_rate(result, threshold: float, budget: int) -> list[Setting]:
    """A sweep's members grouped by learning rate (in the order of the sweep), each group measured."""
    groups: dict[float, list[int]] = {}
    for k, member in enumerate(result.members):
        groups.setdefault(float(member["learning_rate"]), []).append(k)
    settings = []
    for rate, members in groups.items():
        histories = [result.histories[k] for k in members]
        settings.append(
            Setting(
                learning_rate=rate,
                members=members,
                epochs=[epochs_to(h, threshold) for h in histories],
                best_val_accuracy=np.array([_finite_max(h["val_accuracy"]) if len(h) else math.nan for h in histories]),
                best_val_loss=np.array([_finite_min(h["val_loss"]) if len(h) else math.nan for h in histories]),
                final_val_accuracy=np.array([h["val_accuracy"][-1] if len(h) else math.nan for h in histories]),
                diverged=[_non_finite(result.stop_reasons[k]) for k in members],
                budget=budget,
            )
        )
    return settings


def _non_finite(reason: str | None) -> bool:
    return reason is not None and not reason.startswith("early")


def fastest(settings: Sequence[Setting]) -> Setting:
    """The learning rate whose seeds reach the threshold in the fewest epochs on average (ties: the higher mean
    best validation accuracy). The tuning uses the validation split only."""

    def key(s: Setting) -> tuple[float, float]:
        accuracy = np.nan_to_num(s.best_val_accuracy, nan=0.0).mean()
        return (s.mean_epochs, -accuracy)

    return min(settings, key=key)


def lowest_loss(settings: Sequence[Setting]) -> Setting:
    """The learning rate with the lowest mean best validation loss (a diverged seed counts as infinite)."""
    return min(settings, key=lambda s: float(np.nan_to_num(s.best_val_loss, nan=np.inf).mean()))


def faster(a: Setting, b: Setting, names: tuple[str, str], threshold: float) -> tuple[bool, str]:
    """Whether ``a`` reaches the threshold in fewer epochs than ``b`` beyond the spread of the seeds: every seed of
    ``a`` gets there, and its slowest seed is faster than ``b``'s fastest (no overlap). A strict rule, not a
    significance test: each arm's learning rate was chosen as the fastest on these same seeds, so their epochs are
    the minimum over a grid and no false-positive rate (such as the 1 in 20 of three exchangeable seeds against
    three) follows from it."""
    ea, eb = censored(a.epochs, a.budget), censored(b.epochs, b.budget)
    holds = a.reached == len(a.epochs) and ea.max() < eb.min()
    verdict = "" if holds else (" (overlapping seeds: within noise)" if ea.mean() < eb.mean() else "")
    detail = (
        f"epochs to {threshold:.0%} validation accuracy, per seed: {names[0]} (lr {a.learning_rate:.3g}) "
        f"{describe_epochs(a.epochs, a.budget)}; {names[1]} (lr {b.learning_rate:.3g}) "
        f"{describe_epochs(b.epochs, b.budget)}{verdict}"
    )
    return bool(holds), detail


def mean_curve(histories, column: str, epochs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, min and max of ``column`` over histories, epoch by epoch (NaN after a member stopped)."""
    values = np.full((len(histories), epochs), np.nan)
    for i, history in enumerate(histories):
        if len(history) and column in history:
            column_values = history[column][:epochs]
            values[i, : len(column_values)] = column_values
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an epoch no member reached stays NaN
        return np.nanmean(values, axis=0), np.nanmin(values, axis=0), np.nanmax(values, axis=0)


def draw_band(ax, histories, column: str, epochs: int, label: str, **style: Any) -> None:
    """One line per arm: the seeds' mean of ``column`` per epoch, with a min-max band over the seeds."""
    mean, low, high = mean_curve(histories, column, epochs)
    x = np.arange(1, epochs + 1)
    (line,) = ax.plot(x, mean, label=label, **style)
    ax.fill_between(x, low, high, color=line.get_color(), alpha=0.15)


def draw_epochs_vs_rate(ax, settings: Sequence[Setting], label: str, budget: int, **style: Any) -> None:
    """Mean epochs to the threshold against the learning rate (log x); "never" drawn at budget + 1, hollow."""
    rates = np.array([s.learning_rate for s in settings])
    means = np.array([s.mean_epochs for s in settings])
    (line,) = ax.plot(rates, means, marker="o", label=label, **style)
    never = np.array([s.reached == 0 for s in settings])
    if never.any():
        ax.plot(rates[never], means[never], "o", mfc="white", color=line.get_color())
    ax.set_xscale("log")
    ax.axhline(budget + 1, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("learning rate")


def trajectory(optimizer, gradient, start, steps: int) -> np.ndarray:
    """The points an optimizer visits on a toy function: ``steps`` updates from ``start``, as one compiled scan.

    Args:
      optimizer: a :class:`dlfund.optimizers.Optimizer` (its Optax transformation makes the updates).
      gradient: ``gradient(point) -> gradient`` of the toy function (a JAX function of a 1-D array).
      start: the first point.
    Returns:
      ``[steps + 1, dims]``: the start and every point after it.
    """
    import jax
    import jax.numpy as jnp
    import optax

    tx = optimizer.tx
    point = jnp.asarray(start, jnp.float32)

    def step(carry, _):
        point, state = carry
        updates, state = tx.update(gradient(point), state, point)
        point = optax.apply_updates(point, updates)
        return (point, state), point

    @jax.jit
    def run(point):
        _, points = jax.lax.scan(step, (point, tx.init(point)), None, length=steps)
        return jnp.concatenate([point[None], points])

    return np.asarray(run(point))


def sweep(*args: Any, **options: Any):
    """:func:`dlfund.sweep` without its per-member ``NonFiniteLossWarning``: these experiments go looking for
    divergence and count it (:attr:`Setting.diverged`, the reports' "diverged seeds"), so the warning is noise."""
    import dlfund

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dlfund.NonFiniteLossWarning)
        return dlfund.sweep(*args, **options)
