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

    rows, mistakes_left, mlp_solves = [], {}, None
    for gate, labels in GATES.items():
        y = np.array(labels)
        perceptron = dlfund.models.Perceptron(2, rngs=nnx.Rngs(0))
        mistakes = dlfund.models.perceptron_rule(perceptron, X4, y, epochs=100, key=jax.random.key(0))
        mistakes_left[gate] = int(mistakes[-1])
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
    checks = [
        Check("the perceptron rule converges on AND and OR", mistakes_left["AND"] == mistakes_left["OR"] == 0,
              f"mistakes in the last epoch: AND {mistakes_left['AND']}, OR {mistakes_left['OR']}"),
        Check("the perceptron never classifies XOR correctly", rows[2]["fewest mistakes in any epoch"] > 0,
              f"fewest mistakes in any of 100 epochs: {rows[2]['fewest mistakes in any epoch']}"),
        Check("an MLP with one hidden layer learns XOR", mlp_solves == 1.0, f"accuracy {mlp_solves:.2f}"),
    ]  # fmt: skip
    return rows, checks
