"""Experiment ``batch_norm``: the same MLP with and without batch normalization, over a range of learning rates.

An MLP 64-(64 x 5)-10 (ReLU) is trained on the digits with plain SGD (batches of 32, 20 epochs), with and
without ``batch_norm=True`` (each hidden layer's pre-activations normalized; the dense layer before it then has no
bias), at 6 learning rates from 0.01 to 3 and 3 seeds: one :func:`dlfund.sweep` of 18 members per arm (batch norm
changes the program, so two sweeps). Validation and test scoring run in eval mode, so the batch-norm network is
scored with its running statistics (Flax's momentum 0.99: an average over roughly the last 100 steps, 2.5 epochs
here), not with the statistics of the batch being scored.

Two claims of the field are measured:

- **convergence speed**: the epoch at which the validation accuracy first reaches 95%, both at the same learning
  rate (across the grid) and at each network's own tuned rate (its fastest);
- **tolerance to larger learning rates**: the largest rate at which every seed still reaches 95% within the
  budget.

Why batch norm does this is an intuition, not a settled fact: it keeps each layer's pre-activations at a scale
set by its own parameters whatever the weights before it do, so a large step does not blow up the next layer. The
original "internal covariate shift" explanation (Ioffe & Szegedy 2015) has been disputed (Santurkar et al. 2018
argue BN smooths the loss surface instead). The results depend on the batch size (the statistics of 32 examples).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flax import nnx

from dlfund.experiments import measures
from dlfund.experiments.base import Check

RATES = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
SEEDS = (0, 1, 2)
EPOCHS = 20
DEPTH, WIDTH = 5, 64
THRESHOLD = 0.95
ARMS = {"without batch norm": False, "with batch norm": True}


def _model_fn(batch_norm: bool, depth: int, width: int):
    import dlfund

    def build(rngs: nnx.Rngs):
        return dlfund.models.MLP(64, (width,) * depth, 10, batch_norm=batch_norm, rngs=rngs)

    return build


def run(*, quick: bool = False, data_dir: str | None = None):
    import dlfund

    depth, width, rates, seeds, epochs = (2, 16, (0.1,), (0,), 1) if quick else (DEPTH, WIDTH, RATES, SEEDS, EPOCHS)
    ds = dlfund.data.load("digits", data_dir=data_dir)
    grids: dict[str, list[measures.Setting]] = {}
    histories: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    for arm, batch_norm in ARMS.items():
        result = measures.sweep(
            _model_fn(batch_norm, depth, width),
            ds,
            dlfund.grid(learning_rate=list(rates), seed=list(seeds)),
            optimizer="sgd",
            epochs=epochs,
            batch_size=32,
            progress=False,
        )
        settings = grids[arm] = measures.by_learning_rate(result, THRESHOLD, epochs)
        histories[arm] = result.histories
        tuned = measures.fastest(settings)
        for setting in settings:
            test = [dlfund.evaluate(result.model(k), ds.test)["accuracy"] for k in setting.members]
            rows.append(
                {
                    "network": arm,
                    "learning rate": setting.learning_rate,
                    "tuned": "yes" if setting is tuned else "",
                    f"epochs to {THRESHOLD:.0%} val accuracy (per seed)": measures.describe_epochs(
                        setting.epochs, epochs
                    ),
                    "best val accuracy": float(np.nanmean(setting.best_val_accuracy)),
                    f"val accuracy after {epochs} epochs": float(np.nanmean(setting.final_val_accuracy)),
                    "test accuracy": float(np.mean(test)),
                    "diverged seeds": f"{sum(setting.diverged)}/{len(setting.diverged)}",
                }
            )
    plain, normed = grids["without batch norm"], grids["with batch norm"]
    return rows, _checks(plain, normed, epochs), _figure(grids, histories, epochs)


def _largest_reliable(settings: list[measures.Setting]) -> float | None:
    """The largest rate at which every seed reaches the threshold within the budget."""
    reliable = [s.learning_rate for s in settings if s.reached == len(s.epochs)]
    return max(reliable) if reliable else None


def _checks(plain: list[measures.Setting], normed: list[measures.Setting], epochs: int) -> list[Check]:
    names = ("with BN", "without")
    fair = measures.faster(measures.fastest(normed), measures.fastest(plain), names, THRESHOLD)
    faster_at, slower_at, contested = [], [], []
    for a, b in zip(normed, plain):
        # Speed is compared only where both networks get there (with at least one seed; a seed that does not counts
        # as one epoch past the budget, which favours the slower network). A rate at which one network never trains
        # would count as "faster" for the other: that is the tolerance claim below, not speed.
        if a.reached and b.reached:
            contested.append(a.learning_rate)
            if measures.faster(a, b, names, THRESHOLD)[0]:
                faster_at.append(a.learning_rate)
            elif measures.faster(b, a, names[::-1], THRESHOLD)[0]:
                slower_at.append(a.learning_rate)
    same_rate = len(faster_at) > len(contested) / 2 and not slower_at
    per_rate = "; ".join(
        f"lr {a.learning_rate:g}: {measures.describe_epochs(a.epochs, epochs)} with BN vs "
        f"{measures.describe_epochs(b.epochs, epochs)} without"
        for a, b in zip(normed, plain)
    )
    largest_plain, largest_normed = _largest_reliable(plain), _largest_reliable(normed)
    tolerant = largest_normed is not None and (largest_plain is None or largest_normed > largest_plain)
    diverged = [s.learning_rate for s in plain if any(s.diverged)]
    return [
        Check(f"at the same learning rate, batch norm reaches {THRESHOLD:.0%} validation accuracy in fewer epochs "
              "(beyond seed noise at more than half of the rates where both networks get there, slower at none)",
              same_rate,
              f"faster at {len(faster_at)} of {len(contested)} rates ({', '.join(f'{r:g}' for r in faster_at)}), "
              f"slower at {len(slower_at)}; epochs per seed: {per_rate}"),
        Check(f"at each network's own tuned rate, batch norm reaches {THRESHOLD:.0%} validation accuracy in fewer "
              "epochs (every seed)", *fair),
        Check(f"batch norm tolerates larger learning rates: the largest rate at which every seed reaches "
              f"{THRESHOLD:.0%} within {epochs} epochs is larger with it",
              tolerant,
              f"largest such rate: {largest_normed} with BN, {largest_plain} without"
              + (f"; without BN the loss went non-finite at lr {', '.join(f'{r:g}' for r in diverged)}"
                 if diverged else "")),
    ]  # fmt: skip


def _figure(grids, histories, epochs: int):
    """Best validation accuracy against the rate; epochs to the threshold against the rate; validation accuracy
    per epoch at the plain network's tuned rate and at a rate only batch norm survives."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(16, 4.2))
    best_ax, speed_ax, curve_ax = fig.subplots(1, 3)
    plain_tuned = measures.fastest(grids["without batch norm"]).learning_rate
    largest = _largest_reliable(grids["with batch norm"])
    for i, (arm, settings) in enumerate(grids.items()):
        color = f"C{i}"
        rates = np.array([s.learning_rate for s in settings])
        accuracy = np.array([np.nan_to_num(s.best_val_accuracy, nan=0.0) for s in settings])
        mean = accuracy.mean(axis=1)
        best_ax.errorbar(rates, mean, yerr=[mean - accuracy.min(axis=1), accuracy.max(axis=1) - mean],
                         marker="o", capsize=3, color=color, label=arm)  # fmt: skip
        measures.draw_epochs_vs_rate(speed_ax, settings, arm, epochs, color=color)
        for rate, style in ((plain_tuned, "-"), (largest, "--")):
            if rate is None:
                continue
            setting = next(s for s in settings if s.learning_rate == rate)
            measures.draw_band(curve_ax, [histories[arm][k] for k in setting.members], "val_accuracy", epochs,
                               f"{arm}, lr {rate:g}", color=color, ls=style)  # fmt: skip
    best_ax.set_xscale("log")
    best_ax.set_xlabel("learning rate (plain SGD)")
    best_ax.set_ylabel(f"best validation accuracy in {epochs} epochs")
    best_ax.set_title("accuracy against the rate (bars: seeds; diverged = 0)")
    speed_ax.set_ylabel(f"epochs to {THRESHOLD:.0%} val accuracy (mean of seeds)")
    speed_ax.set_title(f"speed against the rate (dotted: never in {epochs})")
    curve_ax.axhline(THRESHOLD, color="grey", ls="--", lw=0.8)
    curve_ax.set_xlabel("epoch")
    curve_ax.set_ylabel("validation accuracy (eval mode: running statistics)")
    curve_ax.set_title("training curves (band: seeds)")
    for ax in (best_ax, speed_ax, curve_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
