"""Experiment ``learning_rate``: from too small to divergent, in one sweep.

An MLP 64-128-10 (ReLU) is trained on the digits with plain SGD (no momentum, no schedule: the learning rate is
the only knob) for 10 epochs of batches of 32, at 11 learning rates spaced evenly on a log axis from 1e-4 to 10,
3 seeds each: 33 members of one :func:`dlfund.sweep`, one compiled program. A member whose loss goes non-finite is
stopped by the sweep right before the bad step (and the run goes on for the others).

Measured per member: the loss on the training split after the budget, re-scored in eval mode on the final
weights (TEACHING pitfall 1: a training loss averaged while the weights change is not the loss of any model), the
loss of the same initialization before training, and the largest epoch-mean training loss on the way. A member
diverged if its loss went non-finite or an epoch's mean rose above twice its initial loss: a loss that blows up
and collapses back to chance ends near ln 10 = 2.30, close to where it started, so the end point alone would not
show it.

A toy panel repeats d2l's picture (``gd.md``): gradient descent on f(x) = x^2 from x = 10, through the same Optax
SGD, with a step too small (0.05), a good one (0.2) and one past the stability limit of 1 (1.1): each step
multiplies x by 1 - 2 * step.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from flax import nnx

from dlfund.experiments import measures
from dlfund.experiments.base import Check

RATES = tuple(float(r) for r in 10 ** np.linspace(-4, 1, 11))
SEEDS = (0, 1, 2)
EPOCHS = 10
HIDDEN = (128,)
#: "barely moves": the loss after the budget is still above this share of the initial loss
BARELY = 0.8
#: "blew up": an epoch's mean training loss rose above this multiple of the initial loss
BLOWUP = 2.0
#: "learns well": the best rate's loss after the budget is below this share of the initial loss
WELL = 0.05
TOY_STEPS = {"too small (0.05)": 0.05, "good (0.2)": 0.2, "diverges (1.1)": 1.1}


def _build(rngs: nnx.Rngs):
    import dlfund

    return dlfund.models.MLP(64, HIDDEN, 10, rngs=rngs)


def run(*, quick: bool = False, data_dir: str | None = None):
    import dlfund

    rates, seeds, epochs = ((1e-4, 1e-1, 10.0), (0,), 1) if quick else (RATES, SEEDS, EPOCHS)
    ds = dlfund.data.load("digits", data_dir=data_dir)
    initial = {seed: dlfund.evaluate(_build(nnx.Rngs(seed)), ds.train)["loss"] for seed in seeds}
    result = measures.sweep(  # without the non-finite warnings: divergence is what this looks for, counted below
        _build,
        ds,
        dlfund.grid(learning_rate=list(rates), seed=list(seeds)),
        optimizer="sgd",
        epochs=epochs,
        batch_size=32,
        progress=False,
    )
    members: list[dict[str, Any]] = []
    for k, member in enumerate(result.members):
        history, seed = result.histories[k], member["seed"]
        non_finite = result.stop_reasons[k] is not None
        peak = float(np.max(history["loss"])) if len(history) else math.nan
        members.append(
            {
                "rate": float(member["learning_rate"]),
                "seed": seed,
                "initial": initial[seed],
                "final": dlfund.evaluate(result.model(k), ds.train)["loss"],
                "peak": peak,
                "non_finite": non_finite,
                # Diverged: non-finite, or blew up to at least twice where it started (a mere rise could be the
                # sampling noise of an epoch's batches at a rate too small to move anything).
                "diverged": non_finite or not peak <= BLOWUP * initial[seed],
                "val_accuracy": float(history["val_accuracy"][-1]) if len(history) else math.nan,
            }
        )
    rows = []
    for rate in rates:
        group = [m for m in members if m["rate"] == rate]
        ratios = [m["final"] / m["initial"] for m in group]
        if any(m["non_finite"] for m in group):
            outcome = "diverged (non-finite loss)"
        elif any(m["diverged"] for m in group):
            outcome = f"diverged (loss rose above {BLOWUP:g}x its initial value)"
        elif min(ratios) > BARELY:
            outcome = "barely moves"
        else:
            outcome = "learns"
        rows.append(
            {
                "learning rate": rate,
                "train loss at init": float(np.mean([m["initial"] for m in group])),
                f"train loss after {epochs} epochs": float(np.mean([m["final"] for m in group])),
                "after / at init": float(np.mean(ratios)),
                "largest epoch-mean train loss": float(np.max([m["peak"] for m in group])),
                f"val accuracy after {epochs} epochs": float(np.nanmean([m["val_accuracy"] for m in group])),
                "diverged seeds": f"{sum(m['diverged'] for m in group)}/{len(group)}",
                "outcome": outcome,
            }
        )
    return rows, _checks(rows, members, rates, epochs), _figure(rows, members, result, rates, epochs)


def _checks(rows, members, rates, epochs: int) -> list[Check]:
    final_key = f"train loss after {epochs} epochs"
    means = np.array([row[final_key] for row in rows])
    finite = np.where(np.isfinite(means), means, np.inf)
    best = int(np.argmin(finite))
    smallest = [m for m in members if m["rate"] == rates[0]]
    largest = [m for m in members if m["rate"] == rates[-1]]
    best_ratio = rows[best]["after / at init"]
    # Needs at least two rates up to the best: with the best at the smallest rate there is no fall to check.
    decreasing = best > 0 and bool(np.all(np.diff(finite[: best + 1]) < 0))
    return [
        Check(f"the smallest rate ({rates[0]:g}) barely moves the loss in {epochs} epochs (above "
              f"{BARELY:.0%} of the initial loss for every seed)",
              all(m["final"] > BARELY * m["initial"] for m in smallest),
              "loss after / at init: " + ", ".join(f"{m['final'] / m['initial']:.3f}" for m in smallest)),
        Check(f"a middle rate is best: the lowest loss after the budget is at a rate inside the grid, below "
              f"{WELL:.0%} of the initial loss",
              0 < best < len(rates) - 1 and best_ratio < WELL,
              f"best rate {rates[best]:.3g} (grid {rates[0]:g} to {rates[-1]:g}): loss {means[best]:.4f}, "
              f"{best_ratio:.2%} of the initial loss"),
        Check("below the best rate, every larger rate ends lower (the loss after the budget falls monotonically "
              "with the rate up to the best one)", decreasing,
              "mean loss after the budget: " + ", ".join(f"{r:.2g}: {v:.3g}" for r, v in
                                                         zip(rates[: best + 1], means[: best + 1]))),
        Check(f"the largest rate ({rates[-1]:g}) diverges: for every seed the loss goes non-finite or rises above "
              f"{BLOWUP:g}x its initial value",
              all(m["diverged"] for m in largest),
              "; ".join(f"seed {m['seed']}: " + ("non-finite" if m["non_finite"] else
                        f"largest epoch-mean loss {m['peak']:.3g} vs {m['initial']:.3f} at init, ends at "
                        f"{m['final']:.3f}") for m in largest)),
    ]  # fmt: skip


def _figure(rows, members, result, rates, epochs: int):
    """Loss after the budget against the rate; training curves of a few rates; the x^2 toy."""
    from matplotlib.figure import Figure

    import dlfund

    fig = Figure(figsize=(16, 4.2))
    sweep_ax, curve_ax, toy_ax = fig.subplots(1, 3)
    final_key = f"train loss after {epochs} epochs"
    sweep_ax.plot(rates, [row[final_key] for row in rows], marker="o", color="C0", label="mean of seeds")
    for m in members:
        style = dict(marker="x", color="C3") if m["diverged"] else dict(marker=".", color="C0")
        sweep_ax.plot([m["rate"]], [m["final"]], ls="none", alpha=0.7, **style)
    sweep_ax.plot([], [], "x", color="C3", label="a diverged seed")
    sweep_ax.axhline(float(np.mean([m["initial"] for m in members])), color="grey", ls="--", lw=0.8,
                     label="at initialization")  # fmt: skip
    sweep_ax.axhline(math.log(10), color="grey", ls=":", lw=0.8, label="chance (ln 10)")
    sweep_ax.set_xscale("log")
    sweep_ax.set_yscale("log")
    sweep_ax.set_xlabel("learning rate (plain SGD)")
    sweep_ax.set_ylabel(f"train loss after {epochs} epochs (eval mode)")
    sweep_ax.set_title("one sweep: loss after a fixed budget")
    losses = np.array([row[final_key] for row in rows])
    best = int(np.argmin(np.where(np.isfinite(losses), losses, np.inf)))
    shown = sorted({0, len(rates) // 3, best, len(rates) - 1})
    for i in shown:
        k = next(k for k, m in enumerate(result.members) if m["learning_rate"] == rates[i])
        history = result.histories[k]
        if len(history):
            curve_ax.plot(history["epoch"], history["loss"], marker=".", label=f"lr {rates[i]:.3g}")
    curve_ax.set_yscale("log")
    curve_ax.set_xlabel("epoch")
    curve_ax.set_ylabel("epoch-mean training loss (first seed)")
    curve_ax.set_title("training curves")
    for label, step in TOY_STEPS.items():
        points = measures.trajectory(
            dlfund.optimizers.get("sgd", learning_rate=step), lambda x: 2 * x, np.array([10.0]), 10
        )
        toy_ax.plot(np.abs(points[:, 0]), marker="o", label=label)
    toy_ax.set_yscale("log")
    toy_ax.set_xlabel("step")
    toy_ax.set_ylabel("|x|: distance to the minimum")
    toy_ax.set_title("gradient descent on f(x) = x², from x = 10")
    for ax in (sweep_ax, curve_ax, toy_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
