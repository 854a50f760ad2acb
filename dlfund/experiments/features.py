"""Experiment ``features_vs_learning``: hand-crafted features and a classical model vs networks that learn their
own, as the training set grows.

Digits (8x8), k = 1, 2, 5, 10, 25, 50, 125 training examples per class (n = 10k, drawn from the training split,
a new draw per seed), five seeds, scored on the 359 test digits by four learners:

- ``features + logistic regression``: a HOG-like descriptor written in NumPy (:func:`hog_features`: histograms
  of gradient orientation, 9 unsigned bins weighted by gradient magnitude, in 3x3 overlapping cells of 4x4
  pixels, each cell L2-normalized: 81 numbers) plus the row and column ink profiles (16), standardized, into
  scikit-learn's logistic regression (C=1, the default: nothing is tuned);
- ``pixels + logistic regression``: the same classifier on the 64 normalized pixels, the baseline that says how
  much the hand-crafted features add;
- ``MLP``: dlfund's 64-128-10 (ReLU, Adam 1e-3);
- ``CNN``: dlfund's two conv blocks (16, 32 channels, 3x3, max-pool 2) and a dense layer of 64 (Adam 1e-3).

The networks train for the same budget at every n: 600 steps of 32. Each training set is repeated (in a new
random order) to 1280 rows, so an epoch is 40 steps whatever n is and one compiled program serves every n and
seed; 15 epochs over the repeated set are the 600 steps. No learner sees a validation set: nothing is tuned and
nothing is stopped early, so none gets labels the others do not.

The claims (the field's story: features win when data is scarce, learning wins when it is plentiful): at the
smallest n the features beat both networks, at the largest n a network beats the features, each by a mean
paired difference (the same seed draws the same examples for every learner) above 1 point and twice its standard
error. The crossover reported is the smallest n from which a network's mean accuracy stays above the features'.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flax import nnx

from dlfund.experiments.base import Check

SHOTS = (1, 2, 5, 10, 25, 50, 125)
SEEDS = (0, 1, 2, 3, 4)
ROWS = 1280
EPOCHS = 15
BATCH_SIZE = 32
LEARNERS = ("features + logistic regression", "pixels + logistic regression", "MLP", "CNN")
NETWORKS = ("MLP", "CNN")
FEATURES = LEARNERS[0]


def hog_features(images: np.ndarray, *, cell: int = 4, stride: int = 2, bins: int = 9) -> np.ndarray:
    """Histograms of oriented gradients for small grey images, plus row and column ink profiles.

    Args:
      images: ``[N, H, W]`` or ``[N, H, W, 1]``.
      cell: side of a square cell, in pixels; cells start every ``stride`` pixels (they overlap when
        ``stride < cell``).
      bins: orientation bins over [0, 180) degrees (unsigned: a stroke's edge counts the same from either side).
    Returns:
      ``[N, cells * bins + H + W]`` float64: per cell, the magnitude-weighted orientation histogram (each gradient
      split linearly between its two nearest bins), L2-normalized so that ink contrast does not matter; then the
      mean of each row and each column.
    """
    images = np.asarray(images, np.float64)
    if images.ndim == 4:
        images = images[..., 0]
    if images.ndim != 3:
        raise ValueError(f"hog_features takes images [N, H, W] or [N, H, W, 1], got shape {images.shape}")
    n, height, width = images.shape
    gy, gx = np.gradient(images, axis=(1, 2))  # central differences inside, one-sided at the border
    magnitude = np.hypot(gx, gy)
    position = (np.rad2deg(np.arctan2(gy, gx)) % 180.0) / (180.0 / bins) - 0.5  # in bin units, centres at k
    lower = np.floor(position).astype(np.int64)
    upper_weight = position - lower
    lower_bin, upper_bin = lower % bins, (lower + 1) % bins  # 175 degrees is near 5: orientation wraps around
    example = np.arange(n)[:, None]
    histograms = []
    for top in range(0, height - cell + 1, stride):
        for left in range(0, width - cell + 1, stride):
            window = (slice(None), slice(top, top + cell), slice(left, left + cell))
            m = magnitude[window].reshape(n, -1)
            w = upper_weight[window].reshape(n, -1)
            histogram = np.zeros((n, bins))
            np.add.at(histogram, (example, lower_bin[window].reshape(n, -1)), m * (1.0 - w))
            np.add.at(histogram, (example, upper_bin[window].reshape(n, -1)), m * w)
            histograms.append(histogram / np.sqrt(np.sum(histogram**2, axis=1, keepdims=True) + 1e-6))
    return np.concatenate([*histograms, images.mean(axis=2), images.mean(axis=1)], axis=1)


def _logistic(train_inputs, y, test_inputs, y_test) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    classifier.fit(train_inputs, y)
    return float(np.mean(classifier.predict(test_inputs) == y_test))


def _network(name: str, seed: int):
    import dlfund

    if name == "MLP":
        return dlfund.models.MLP(64, (128,), 10, rngs=nnx.Rngs(seed))
    return dlfund.models.CNN((8, 8, 1), channels=(16, 32), dense=(64,), num_classes=10, rngs=nnx.Rngs(seed))


def _train_network(name: str, x, y, test, *, seed: int, epochs: int) -> float:
    import dlfund

    # The n examples repeated to ROWS rows in a random order: the same shapes (one program) at every n.
    order = np.resize(np.random.default_rng(seed).permutation(len(y)), ROWS)
    model = _network(name, seed)
    dlfund.fit(model, (x[order], y[order]), epochs=epochs, batch_size=BATCH_SIZE, seed=seed, progress=False)
    return float(dlfund.evaluate(model, test, metrics=("accuracy",))["accuracy"])


def _draw(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k examples of each class, a seeded draw."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.choice(np.flatnonzero(y == c), k, replace=False) for c in range(10)])


def _paired(scores, learner: str, other: str, k: int) -> tuple[float, float]:
    differences = np.asarray(scores[(learner, k)]) - np.asarray(scores[(other, k)])
    error = float(differences.std(ddof=1) / np.sqrt(len(differences))) if len(differences) > 1 else float("inf")
    return float(differences.mean()), error


def _ahead(scores, network: str, shots) -> list[int]:
    """The n at which ``network``'s mean accuracy is above the features'."""
    return [10 * k for k in shots if np.mean(scores[(network, k)]) > np.mean(scores[(FEATURES, k)])]


def _crossover(scores, network: str, shots) -> int | None:
    """The smallest n from which ``network``'s mean accuracy stays above the features' (None: it never does)."""
    ahead = _ahead(scores, network, shots)
    for i, k in enumerate(shots):
        if all(10 * later in ahead for later in shots[i:]):
            return 10 * k
    return None


def run(*, quick: bool = False, data_dir: str | None = None):
    """Learning curves of the four learners; returns ``(rows, checks, figure)``."""
    import dlfund

    shots, seeds, epochs = ((1, 5), (0,), 1) if quick else (SHOTS, SEEDS, EPOCHS)
    ds = dlfund.data.load("digits", data_dir=data_dir)
    (x, y), test = ds.train, ds.test
    features, test_features = hog_features(x), hog_features(test[0])
    pixels, test_pixels = x.reshape(len(x), -1), test[0].reshape(len(test[0]), -1)
    scores: dict[tuple[str, int], list[float]] = {}
    for k in shots:
        for seed in seeds:
            idx = _draw(y, k, seed)
            results = {
                FEATURES: _logistic(features[idx], y[idx], test_features, test[1]),
                "pixels + logistic regression": _logistic(pixels[idx], y[idx], test_pixels, test[1]),
                **{net: _train_network(net, x[idx], y[idx], test, seed=seed, epochs=epochs) for net in NETWORKS},
            }
            for learner, accuracy in results.items():
                scores.setdefault((learner, k), []).append(accuracy)
    rows: list[dict[str, Any]] = []
    for learner in LEARNERS:
        row: dict[str, Any] = {"learner": learner}
        for k in shots:
            row[f"n={10 * k}"] = float(np.mean(scores[(learner, k)]))
        row["std over seeds (largest)"] = max(float(np.std(scores[(learner, k)])) for k in shots)
        if learner in NETWORKS:
            row["ahead of the features at n"] = ", ".join(map(str, _ahead(scores, learner, shots))) or "none"
            row["ahead from n on"] = _crossover(scores, learner, shots) or "never"
        rows.append(row)
    crossovers = {net: _crossover(scores, net, shots) for net in NETWORKS}
    small, large = shots[0], shots[-1]
    at_small = {net: _paired(scores, FEATURES, net, small) for net in NETWORKS}
    at_large = {net: _paired(scores, net, FEATURES, large) for net in NETWORKS}
    best_large = max(NETWORKS, key=lambda net: at_large[net][0])

    def beyond(mean: float, error: float) -> bool:
        return mean > 0.01 and mean > 2 * error

    checks = [
        Check(
            f"with n={10 * small} examples the hand-crafted features beat both networks",
            all(beyond(*at_small[net]) for net in NETWORKS),
            "; ".join(
                f"features - {net}: {at_small[net][0]:+.3f} (standard error {at_small[net][1]:.3f})" for net in NETWORKS
            )
            + f"; features {np.mean(scores[(FEATURES, small)]):.3f}, {len(seeds)} seeds",
        ),
        Check(
            f"with n={10 * large} examples a network beats the hand-crafted features",
            beyond(*at_large[best_large]),
            "; ".join(
                f"{net} - features: {at_large[net][0]:+.3f} (standard error {at_large[net][1]:.3f})" for net in NETWORKS
            )
            + f"; features {np.mean(scores[(FEATURES, large)]):.3f}; mean accuracy above the features' at n = "
            + "; ".join(f"{', '.join(map(str, _ahead(scores, net, shots))) or 'none'} ({net})" for net in NETWORKS),
        ),
        Check(
            f"the hand-crafted features beat raw pixels in the same classifier at n={10 * small}",
            beyond(*_paired(scores, FEATURES, "pixels + logistic regression", small)),
            "features - pixels: {:+.3f} (standard error {:.3f})".format(
                *_paired(scores, FEATURES, "pixels + logistic regression", small)
            ),
        ),
    ]
    return rows, checks, _figure(scores, shots, crossovers)


def _figure(scores, shots, crossovers):
    """Left: test accuracy against n (log), one line per learner (mean over seeds, band: +-1 std). Right: each
    learner minus the features, paired by seed (band: +-2 standard errors): where a difference is beyond noise."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 4.8))
    ax, diff = fig.subplots(1, 2)
    sizes = [10 * k for k in shots]
    for i, learner in enumerate(LEARNERS):
        mean = np.array([np.mean(scores[(learner, k)]) for k in shots])
        std = np.array([np.std(scores[(learner, k)]) for k in shots])
        style = "--" if learner.startswith("pixels") else "-"
        ax.plot(sizes, mean, style, marker="o", color=f"C{i}", label=learner)
        ax.fill_between(sizes, mean - std, mean + std, color=f"C{i}", alpha=0.15)
        if learner == FEATURES:
            continue
        paired = [_paired(scores, learner, FEATURES, k) for k in shots]
        mean, error = np.array([p[0] for p in paired]), np.array([p[1] for p in paired])
        error = np.where(np.isfinite(error), error, 0.0)  # one seed: no error bar to draw
        diff.plot(sizes, mean, style, marker="o", color=f"C{i}", label=f"{learner} - features")
        diff.fill_between(sizes, mean - 2 * error, mean + 2 * error, color=f"C{i}", alpha=0.15)
    for net, n in crossovers.items():
        if n is not None:
            ax.axvline(n, color="grey", linestyle=":", alpha=0.7)
            ax.annotate(f"{net} ahead from n={n}", (n, 0.02), xycoords=("data", "axes fraction"), fontsize=8)
    diff.axhline(0.0, color="black", linewidth=0.8)
    for a in (ax, diff):
        a.set_xscale("log")
        a.set_xticks(sizes, [str(n) for n in sizes])
        a.set_xlabel("training examples (n, 10 classes, log scale)")
        a.grid(alpha=0.3)
        a.legend(fontsize=8, loc="lower right")
    ax.set_ylabel("test accuracy (359 digits)")
    ax.set_title("hand-crafted features vs learned ones, by training-set size")
    diff.set_ylabel("test accuracy minus the features' (paired by seed)")
    diff.set_title("difference from the features (band: ±2 standard errors)")
    fig.tight_layout()
    return fig
