"""Experiment ``overfitting``: what each regularizer does to an MLP that can memorize its small training set.

The setting: 300 training digits (one fixed draw) of which 20% carry a wrong label (each replaced by another
class, one fixed draw), and an over-parameterized MLP 64-128-128-10 (26k weights, ~90 per example) trained with
Adam (1e-3), batches of 32, for 100 epochs. The labels are noisy on purpose: on 300 *clean* digits the same
network already generalizes (~0.96 test accuracy) and every regularizer lands within a point of none, so there is
nothing to resist; with 20% wrong labels, what a network that memorizes learns is the noise, and how much of it a
regularizer keeps out shows in the train/test gap and the test accuracy. Validation and test labels are clean.

Six arms, each trained with the same five seeds (initialization and batch order; the training draw is shared, so
differences are paired by seed):

- ``none``;
- ``dropout``: the rate chosen among 0.25, 0.5, 0.75 by mean validation loss (every rate is in the table);
- ``weight decay``: decoupled (AdamW-style, ``weight_decay=``), the strength chosen among 0.5, 2, 8 likewise;
- ``early stopping``: the epoch of lowest validation loss among all 100, restored (:class:`dlfund.EarlyStopping`
  on ``val_loss`` with ``restore_best`` and a patience of the whole run: early stopping with hindsight). The table
  gives the epoch at which patience 10 would stop and the seeds where it keeps that same epoch: for those seeds
  the scores are exactly patience 10's (training up to the kept epoch is the same run);
- ``augmentation``: ``augment=("translate:1", "noise:0.1")``: one-pixel shifts and pixel noise (never flips: a
  mirrored 2 is not a 2);
- ``all``: the chosen dropout and weight decay, early stopping (as above) and augmentation together.

Two :func:`dlfund.sweep` programs train them all: one without augmentation (none, every dropout rate, every weight
decay) and one with it (augmentation alone, and with the chosen dropout and weight decay). Each runs the full 100
epochs under an ``EarlyStopping`` whose patience is the whole run, so that every member yields both its last epoch
and the epoch of lowest validation loss: "none" and "early stopping" are one training run scored at two epochs, as
are "augmentation + dropout + weight decay" and "all" (fewer compiled programs: the quick run is in the test
suite).

Each member's **training loss and accuracy are measured in evaluation mode** (:func:`dlfund.evaluate` on the
training split, dropout off): the training-mode loss that ``fit`` records is inflated by dropout itself, so
comparing it says nothing about memorization (the table shows both). The gap is eval-mode training accuracy (on the
noisy labels it was trained on) minus test accuracy (clean labels): a network that ignores the noise scores about
0.8 on its training labels, so the gap can turn negative. It is measured on the test split because the validation
split chose the strengths and early stopping's epoch: a gap to it would be biased in their favour. The table also
counts the share of wrong training labels the network reproduces: memorization itself.

A regularizer "narrows the gap" or "raises test accuracy" when the mean paired difference from ``none`` exceeds
1 point and twice its standard error over the seeds; each of the four is checked on its own, for both.

Then memorization (Zhang et al., 2017): the same MLP, no regularization or augmentation, on the same 300 images
with their true labels shuffled once (a fixed seed): the network learns them all (eval-mode training accuracy
>= 0.99) while test accuracy stays at chance (within 0.05 of 0.1), since there is nothing left to generalize. The
shuffled labels train in the same program as the noisy ones (same shapes and members), so every dropout rate and
weight decay is trained on them too; the table shows the chosen ones next to none, without a claim.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np
from flax import nnx

from dlfund.experiments.base import Check

N_TRAIN = 300
NOISE = 0.2
HIDDEN = (128, 128)
EPOCHS = 100
BATCH_SIZE = 32
LEARNING_RATE = 1e-3
SEEDS = (0, 1, 2, 3, 4)
DATA_SEED = 0
DROPOUTS = (0.25, 0.5, 0.75)
WEIGHT_DECAYS = (0.5, 2.0, 8.0)
PATIENCE = 10
AUGMENT = ("translate:1", "noise:0.1")
EPOCHS_COLUMN = f"epochs (early stopping: where patience {PATIENCE} stops)"
CHANCE = 0.1
ARMS = ("none", "dropout", "weight decay", "early stopping", "augmentation", "all")
REGULARIZERS = ARMS[1:]


def _settings(quick: bool) -> dict[str, Any]:
    """Full settings, or a tiny smoke run that exercises every arm."""
    if quick:
        return dict(n=64, epochs=2, seeds=(0, 1), dropouts=(0.5,), weight_decays=(2.0,))
    return dict(
        n=N_TRAIN,
        epochs=EPOCHS,
        seeds=SEEDS,
        dropouts=DROPOUTS,
        weight_decays=WEIGHT_DECAYS,
    )


def _subset(ds, n: int) -> np.ndarray:
    """The indices of ``n`` training digits: one fixed draw."""
    return np.random.default_rng(DATA_SEED).choice(len(ds.train[1]), n, replace=False)


def _noisy_subset(ds, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` training digits, their noisy labels (one fixed draw), and which labels were changed."""
    rng = np.random.default_rng(DATA_SEED)
    idx = rng.choice(len(ds.train[1]), n, replace=False)  # the draw of _subset; the same generator goes on
    x, y = ds.train[0][idx], ds.train[1][idx].copy()
    flipped = rng.random(n) < NOISE
    # A shift of 1..9 classes: every changed label is wrong (drawing 0..9 would leave a tenth of them right).
    y[flipped] = (y[flipped] + rng.integers(1, 10, int(flipped.sum()))) % 10
    return x, y, flipped


def _mlp(dropout: float):
    import dlfund

    return lambda rngs: dlfund.models.MLP(64, HIDDEN, 10, dropout=dropout, rngs=rngs)


def _last_model(result, k: int):
    """Member ``k`` with its last epoch's weights (``result.model(k)`` holds its best epoch's)."""
    params, model_state = jax.tree.map(lambda leaf: leaf[k], (result.state.params, result.state.model_state))
    model = nnx.merge(result.state.graphdef, params, model_state)
    model.eval()
    return model


def _patience_stop(val_loss, patience: int) -> tuple[int, int]:
    """(the epoch it stops at, the epoch it keeps): :class:`dlfund.EarlyStopping` with ``patience`` replayed on
    a validation-loss history (an epoch improves when its loss is below the best so far; 1-based)."""
    best, kept = float("inf"), 0
    for epoch, value in enumerate(val_loss, 1):
        if value < best:
            best, kept = value, epoch
        elif epoch - kept >= patience:
            return epoch, kept
    return len(val_loss), kept


def _score(result, k: int, *, stopped: bool, train, flipped, ds) -> dict[str, Any]:
    """Member ``k``, its last epoch (``stopped=False``) or early stopping's choice (``stopped=True``): eval-mode
    train loss/accuracy, the share of wrong labels it reproduces, validation and test scores, and the
    training-mode loss that ``fit`` recorded for that epoch."""
    import dlfund

    history = result.histories[k]
    stop, kept = _patience_stop(history["val_loss"], PATIENCE)
    epoch = result.best_epochs[k] if stopped else len(history)
    model = result.model(k) if stopped else _last_model(result, k)
    on_train = dlfund.evaluate(model, train, metrics=("loss", "accuracy"))
    predicted = dlfund.predict_classes(model, train[0])
    on_val = dlfund.evaluate(model, ds.val, metrics=("loss", "accuracy"))
    on_test = dlfund.evaluate(model, ds.test, metrics=("loss", "accuracy"))
    return {
        **result.members[k],
        "train_loss_training_mode": float(history["loss"][epoch - 1]),
        "train_loss": on_train["loss"],
        "train_accuracy": on_train["accuracy"],
        "wrong_labels_fitted": float(np.mean(predicted[flipped] == train[1][flipped])),
        "val_loss": on_val["loss"],
        "val_accuracy": on_val["accuracy"],
        # Against test, not validation: validation chose the strengths and the kept epoch.
        "gap": on_train["accuracy"] - on_test["accuracy"],
        "test_accuracy": on_test["accuracy"],
        "epochs": stop if stopped else len(history),
        "kept_epoch": epoch,
        "as_patience": (kept == epoch) if stopped else None,  # the epoch patience-PATIENCE stopping would keep
        "val_loss_curve": [float(v) for v in history["val_loss"][: stop if stopped else None]],
    }


def _sweep(train, ds, members, *, dropout: float, epochs: int, **options):
    """One :func:`dlfund.sweep`. Its early stopping never stops a member (patience = every epoch) but keeps the
    epoch of lowest validation loss: each member gives both its last epoch and early stopping's choice, so the
    early-stopping arms need no program of their own."""
    import dlfund

    return dlfund.sweep(
        _mlp(dropout),
        train,
        members,
        validation_data=ds.val,
        epochs=epochs,
        batch_size=BATCH_SIZE,
        learning_rate=LEARNING_RATE,
        early_stopping=dlfund.EarlyStopping(monitor="val_loss", patience=epochs, restore_best=True),
        progress=False,
        **options,
    )


def _choose(configs: dict[float, list[dict[str, Any]]]) -> float:
    """The strength with the lowest mean validation loss (what early stopping watches too: on 144 validation
    digits, accuracy moves in steps of 0.7 points and prefers strengths that underfit)."""
    return min(configs, key=lambda s: float(np.mean([r["val_loss"] for r in configs[s]])))


def _paired(arm: list[dict[str, Any]], base: list[dict[str, Any]], key: str) -> tuple[float, float]:
    """Mean and standard error of ``arm - base`` over seeds (member i of each is seed i)."""
    differences = np.array([a[key] - b[key] for a, b in zip(arm, base)])
    error = float(differences.std(ddof=1) / np.sqrt(len(differences))) if len(differences) > 1 else float("inf")
    return float(differences.mean()), error


def _beyond_noise(mean: float, error: float, sign: int) -> bool:
    """``sign * mean`` above 1 point and above twice its standard error."""
    return sign * mean > 0.01 and sign * mean > 2 * error


def _arms(train, flipped, shuffled, ds, s: dict[str, Any]):
    """Every arm's members (chosen strengths), the chosen strengths, one table row per configuration, and the same
    configurations trained on the shuffled labels ``shuffled`` (scored at their last epoch) with their sweep."""
    seeds = list(s["seeds"])
    nseeds = len(seeds)
    score = functools.partial(_score, train=train, flipped=flipped, ds=ds)
    # No augmentation: none (and early stopping on it), every dropout rate and every weight decay, one sweep.
    configs = [(0.0, 0.0)] + [(p, 0.0) for p in s["dropouts"]] + [(0.0, w) for w in s["weight_decays"]]
    members = {
        "seed": seeds * len(configs),
        "dropout": [p for p, _ in configs for _ in seeds],
        "weight_decay": [w for _, w in configs for _ in seeds],
    }
    plain = _sweep(train, ds, members, dropout=max(s["dropouts"]), epochs=s["epochs"])
    by_config = {c: [score(plain, i * nseeds + j, stopped=False) for j in range(nseeds)] for i, c in enumerate(configs)}
    # The same configurations on shuffled labels: the same shapes and members, so the same compiled program.
    memorizing = _sweep((train[0], shuffled), ds, members, dropout=max(s["dropouts"]), epochs=s["epochs"])
    wrong = shuffled != ds.train[1][_subset(ds, s["n"])]
    memorized = {
        c: [_score(memorizing, i * nseeds + j, stopped=False, train=(train[0], shuffled), flipped=wrong, ds=ds)
            for j in range(nseeds)]
        for i, c in enumerate(configs)
    }  # fmt: skip
    dropout = _choose({p: by_config[(p, 0.0)] for p in s["dropouts"]})
    decay = _choose({w: by_config[(0.0, w)] for w in s["weight_decays"]})
    # Augmentation: alone, and with the chosen dropout and weight decay and early stopping ("all"), one sweep.
    members = {
        "seed": seeds * 2,
        "dropout": [0.0] * nseeds + [dropout] * nseeds,
        "weight_decay": [0.0] * nseeds + [decay] * nseeds,
    }
    augmented = _sweep(train, ds, members, dropout=dropout, epochs=s["epochs"], augment=AUGMENT)
    arms = {
        "none": by_config[(0.0, 0.0)],
        "dropout": by_config[(dropout, 0.0)],
        "weight decay": by_config[(0.0, decay)],
        "early stopping": [score(plain, j, stopped=True) for j in range(nseeds)],
        "augmentation": [score(augmented, j, stopped=False) for j in range(nseeds)],
        "all": [score(augmented, nseeds + j, stopped=True) for j in range(nseeds)],
    }
    rows = []
    for (p, w), runs in by_config.items():
        if (p, w) == (0.0, 0.0):
            continue
        arm = "dropout" if p else "weight decay"
        chosen = (p == dropout) if p else (w == decay)
        setting = f"rate {p}" if p else f"decoupled {w}"
        rows.append(_row(f"{arm}{'' if chosen else ' (not chosen)'}", setting, runs, arms["none"]))
    settings = {
        "none": "-",
        "early stopping": "val_loss, lowest of all epochs restored (patience = the whole run)",
        "augmentation": " + ".join(AUGMENT),
        "all": f"dropout {dropout}, weight decay {decay}, early stopping (as above), augmentation",
    }
    rows = [_row(arm, settings[arm], arms[arm], arms["none"]) for arm in ("none",)] + rows
    rows += [_row(arm, settings[arm], arms[arm], arms["none"]) for arm in ("early stopping", "augmentation", "all")]
    for (p, w), label in (((0.0, 0.0), "no regularization"), ((dropout, 0.0), f"dropout {dropout}"),
                          ((0.0, decay), f"weight decay {decay}")):  # fmt: skip
        rows.append(_row(f"memorization: shuffled labels, {label}", "labels permuted once (a fixed seed)",
                         memorized[(p, w)], None))  # fmt: skip
    memorization = {"runs": memorized[(0.0, 0.0)], "histories": memorizing.histories[:nseeds]}
    return arms, {"dropout": dropout, "weight decay": decay}, rows, memorization


def _row(arm: str, setting: str, runs: list[dict[str, Any]], base: list[dict[str, Any]] | None) -> dict[str, Any]:
    def mean(key: str) -> float:
        return float(np.mean([r[key] for r in runs]))

    test_diff, test_error = _paired(runs, base, "test_accuracy") if base is not None else (0.0, 0.0)
    return {
        "arm": arm,
        "setting": setting,
        "seeds": len(runs),
        EPOCHS_COLUMN: mean("epochs"),
        "epoch kept (mean)": mean("kept_epoch"),
        f"seeds where patience {PATIENCE} keeps that epoch": (
            sum(r["as_patience"] for r in runs) if runs[0]["as_patience"] is not None else None
        ),
        "train loss, training mode": mean("train_loss_training_mode"),
        "train loss, eval mode": mean("train_loss"),
        "train accuracy, eval mode": mean("train_accuracy"),
        "wrong labels reproduced": mean("wrong_labels_fitted"),
        "val loss": mean("val_loss"),
        "val accuracy": mean("val_accuracy"),
        "gap (train - test accuracy)": mean("gap"),
        "test accuracy": mean("test_accuracy"),
        "test accuracy - none (± s.e.)": "" if base is None or runs is base else f"{test_diff:+.3f} ± {test_error:.3f}",
    }


def run(*, quick: bool = False, data_dir: str | None = None):
    """Trains the six arms and the memorization run; returns ``(rows, checks, figure)``."""
    import dlfund

    s = _settings(quick)
    ds = dlfund.data.load("digits", data_dir=data_dir, seed=DATA_SEED)
    x, y, flipped = _noisy_subset(ds, s["n"])
    # The same images with their own (clean) labels permuted once: the class counts stay, no label belongs to its
    # image. A stream of its own ([DATA_SEED, 1]), not the one that drew the images and the noise.
    shuffled = np.random.default_rng([DATA_SEED, 1]).permutation(ds.train[1][_subset(ds, s["n"])])
    arms, chosen, rows, memorization = _arms((x, y), flipped, shuffled, ds, s)
    memorized = memorization["runs"]
    memorized_train = float(np.mean([r["train_accuracy"] for r in memorized]))
    memorized_test = float(np.mean([r["test_accuracy"] for r in memorized]))

    none = arms["none"]
    checks = [
        Check(
            f"without regularization the MLP memorizes its training set, {flipped.mean():.0%} wrong labels included "
            "(eval-mode training accuracy >= 0.99)",
            float(np.mean([r["train_accuracy"] for r in none])) >= 0.99,
            f"eval-mode training accuracy {np.mean([r['train_accuracy'] for r in none]):.3f}, training loss "
            f"{np.mean([r['train_loss'] for r in none]):.1e}; validation accuracy "
            f"{np.mean([r['val_accuracy'] for r in none]):.3f}",
        )
    ]
    for arm in REGULARIZERS:
        gap, error = _paired(arms[arm], none, "gap")
        which = f" ({chosen[arm]}, chosen on validation)" if arm in chosen else ""
        checks.append(
            Check(
                f"{arm}{which} narrows the eval-mode train/test accuracy gap beyond seed noise",
                _beyond_noise(gap, error, -1),
                f"gap {np.mean([r['gap'] for r in arms[arm]]):.3f} vs {np.mean([r['gap'] for r in none]):.3f} "
                f"without; paired difference {gap:+.3f} (standard error {error:.3f}, {len(none)} seeds)",
            )
        )
    gains = {arm: _paired(arms[arm], none, "test_accuracy") for arm in ARMS[1:]}
    for arm in REGULARIZERS[:-1]:  # each alone; "all" has its own check below
        which = f" ({chosen[arm]}, chosen on validation)" if arm in chosen else ""
        gain, error = gains[arm]
        checks.append(
            Check(
                f"{arm}{which} raises test accuracy beyond seed noise (> 1 point and 2 standard errors)",
                _beyond_noise(gain, error, 1),
                f"test accuracy {np.mean([r['test_accuracy'] for r in arms[arm]]):.3f} vs "
                f"{np.mean([r['test_accuracy'] for r in none]):.3f} without; paired difference {gain:+.3f} "
                f"(standard error {error:.3f})",
            )
        )
    together, error = gains["all"]
    checks.append(
        Check(
            "all of them together, each at its own chosen strength, raise test accuracy beyond seed noise too",
            _beyond_noise(together, error, 1),
            f"all {np.mean([r['test_accuracy'] for r in arms['all']]):.3f} vs none "
            f"{np.mean([r['test_accuracy'] for r in none]):.3f}: {together:+.3f} ± {error:.3f}; eval-mode training "
            f"accuracy {np.mean([r['train_accuracy'] for r in arms['all']]):.3f}",
        )
    )
    checks += [
        Check(
            "an over-parameterized MLP memorizes shuffled labels (eval-mode training accuracy >= 0.99)",
            memorized_train >= 0.99,
            f"eval-mode training accuracy {memorized_train:.3f} after {s['epochs']} epochs, {len(memorized)} seeds",
        ),
        Check(
            f"...while its test accuracy stays at chance (within 0.05 of {CHANCE})",
            abs(memorized_test - CHANCE) <= 0.05,
            f"test accuracy {memorized_test:.3f}",
        ),
    ]
    figure = _figure(
        arms, memorization["histories"], chosen, s["n"], float(flipped.mean()), (memorized_train, memorized_test)
    )
    return rows, checks, figure


def _figure(
    arms: dict[str, list[dict[str, Any]]], memorize_histories, chosen: dict[str, float], n: int, noise: float, memorized
):
    """Accuracy per arm (train in eval mode, val, test), validation loss per epoch, and memorization curves."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(17, 4.5))
    bars, curves, memorize = fig.subplots(1, 3)
    names = list(arms)
    positions = np.arange(len(names))
    for i, (key, label) in enumerate(
        (("train_accuracy", "train (eval mode)"), ("val_accuracy", "validation"), ("test_accuracy", "test"))
    ):
        values = [[r[key] for r in arms[arm]] for arm in names]
        bars.bar(
            positions + (i - 1) * 0.27,
            [np.mean(v) for v in values],
            0.27,
            yerr=[np.std(v) for v in values],
            label=label,
            capsize=2,
        )
    bars.set_xticks(positions, [name.replace(" ", "\n") for name in names], fontsize=8)
    bars.set_ylim(0.5, 1.02)
    bars.set_ylabel("accuracy (mean over seeds, bar: ±1 std)")
    bars.set_title(f"{n} digits, {noise:.0%} wrong labels: does each arm memorize?")
    bars.legend(fontsize=8, loc="upper right")
    bars.grid(axis="y", alpha=0.3)
    for arm in names:
        longest = max(len(r["val_loss_curve"]) for r in arms[arm])
        # Members stopped early contribute to the mean only while they ran.
        mean = [
            np.mean([r["val_loss_curve"][e] for r in arms[arm] if e < len(r["val_loss_curve"])]) for e in range(longest)
        ]
        label = f"{arm} ({chosen[arm]})" if arm in chosen else arm
        curves.plot(np.arange(1, longest + 1), mean, label=label)
    curves.set_yscale("log")
    curves.set_xlabel("epoch")
    curves.set_ylabel("validation loss (mean over seeds)")
    curves.set_title("validation loss per epoch")
    curves.legend(fontsize=8)
    curves.grid(alpha=0.3)
    for column, label in (("accuracy", "train, training mode (running)"), ("val_accuracy", "validation")):
        longest = min(len(h) for h in memorize_histories)
        mean = np.mean([np.asarray(h[column])[:longest] for h in memorize_histories], axis=0)
        memorize.plot(np.arange(1, longest + 1), mean, label=label)
    memorize.axhline(CHANCE, color="grey", linestyle=":", label="chance")
    memorize.set_ylim(0, 1.02)
    memorize.set_xlabel("epoch")
    memorize.set_ylabel("accuracy (mean over seeds)")
    memorize.set_title(
        f"shuffled labels: eval-mode train accuracy {memorized[0]:.3f}, test {memorized[1]:.3f}",
        fontsize=10,
    )
    memorize.legend(fontsize=8)
    memorize.grid(alpha=0.3)
    fig.tight_layout()
    return fig
