"""Two classic claims of the field, each measured on real data (``relu_vs_sigmoid`` grew into
:mod:`dlfund.experiments.activations`, ``dropout`` into :mod:`dlfund.experiments.overfitting`).

- ``perceptron_xor``: a single neuron learns AND and OR but never XOR; one hidden layer learns XOR.
"""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from dlfund.experiments.base import Check

GATES = {"AND": (0, 0, 0, 1), "OR": (0, 1, 1, 1), "XOR": (0, 1, 1, 0)}
X4 = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)


def perceptron_xor(*, quick: bool = False, data_dir: str | None = None):
    import dlfund

    rows, mistakes_left, mlp_solves, deciders = [], {}, None, {}
    for gate, labels in GATES.items():
        y = np.array(labels)
        perceptron = dlfund.models.Perceptron(2, rngs=nnx.Rngs(0))
        mistakes = dlfund.models.perceptron_rule(perceptron, X4, y, epochs=100, key=jax.random.key(0))
        mistakes_left[gate] = int(mistakes[-1])
        deciders[f"perceptron on {gate}"] = (gate, lambda x, p=perceptron: np.asarray(p.predict(x)))
        rows.append(
            {
                "model": "perceptron (Rosenblatt's rule, 100 epochs)",
                "task": gate,
                "mistakes in the last epoch": int(mistakes[-1]),
                "fewest mistakes in any epoch": int(mistakes.min()),
                "accuracy": float(np.mean(np.asarray(perceptron.predict(X4)) == y)),
            }
        )
    mlp = dlfund.models.MLP(2, (8,), 2, activation="tanh", rngs=nnx.Rngs(0))
    xor = np.array(GATES["XOR"])
    dlfund.fit(
        mlp, (np.tile(X4, (16, 1)), np.tile(xor, 16)), learning_rate=0.05, epochs=60, batch_size=8, progress=False
    )
    mlp_solves = float(np.mean(np.argmax(dlfund.predict(mlp, X4), -1) == xor))
    rows.append({"model": "MLP 2-8-2 (tanh, Adam)", "task": "XOR", "accuracy": mlp_solves})
    deciders["MLP 2-8-2 on XOR"] = ("XOR", lambda x: np.argmax(dlfund.predict(mlp, x), -1))
    checks = [
        Check("the perceptron rule converges on AND and OR", mistakes_left["AND"] == mistakes_left["OR"] == 0,
              f"mistakes in the last epoch: AND {mistakes_left['AND']}, OR {mistakes_left['OR']}"),
        Check("the perceptron never classifies XOR correctly", rows[2]["fewest mistakes in any epoch"] > 0,
              f"fewest mistakes in any of 100 epochs: {rows[2]['fewest mistakes in any epoch']}"),
        Check("an MLP with one hidden layer learns XOR", mlp_solves == 1.0, f"accuracy {mlp_solves:.2f}"),
    ]  # fmt: skip
    return rows, checks, _figure(deciders)


def _figure(deciders):
    """Each model's decision regions over [-0.5, 1.5]^2 with the four inputs, coloured by their true label: one
    straight boundary for a perceptron (none separates XOR), a bent one for the MLP."""
    from matplotlib.figure import Figure

    grid = np.linspace(-0.5, 1.5, 101, dtype=np.float32)
    points = np.stack(np.meshgrid(grid, grid), -1).reshape(-1, 2)
    fig = Figure(figsize=(4 * len(deciders), 3.8))
    for ax, (title, (gate, decide)) in zip(fig.subplots(1, len(deciders)), deciders.items()):
        regions = decide(points).reshape(len(grid), len(grid))
        ax.contourf(grid, grid, regions, levels=[-0.5, 0.5, 1.5], colors=["#dde6f5", "#f7dccc"])
        labels = np.array(GATES[gate])
        for label, marker, color in ((0, "o", "C0"), (1, "s", "C1")):
            chosen = labels == label
            ax.scatter(X4[chosen, 0], X4[chosen, 1], marker=marker, s=90, color=color, edgecolor="k",
                       label=f"label {label}")  # fmt: skip
        correct = int(np.sum(decide(X4) == labels))
        ax.set(title=f"{title}: {correct}/4 right", xlabel="x1", ylabel="x2", aspect="equal")
    fig.axes[0].legend(loc="center left", fontsize=8)
    fig.tight_layout()
    return fig
