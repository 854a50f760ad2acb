"""Three classic claims of the field, each measured on real data.

- ``perceptron_xor``: a single neuron learns AND and OR but never XOR; one hidden layer learns XOR.
- ``relu_vs_sigmoid``: in a deep network, sigmoid's gradients vanish towards the first layers while ReLU's do not,
  so the same deep MLP learns much faster with ReLU.
- ``dropout``: on a small training set with noisy labels a large MLP memorizes everything; dropout resists the
  memorization, narrows the gap between training and validation loss and lowers the best validation loss.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
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


def _first_and_last_gradient(model, x, y) -> tuple[float, float]:
    """Gradient norms of the first and the last hidden layer's kernel on one batch."""
    import optax

    def loss_fn(m):
        return optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()

    grads = nnx.to_flat_state(nnx.grad(loss_fn)(model))
    kernels = [value[...] for path, value in grads if path[0] == "dense" and path[-1] == "kernel"]
    return float(jnp.linalg.norm(kernels[0])), float(jnp.linalg.norm(kernels[-1]))


def relu_vs_sigmoid(*, quick: bool = False, data_dir: str | None = None):
    import dlfund

    ds = dlfund.data.load("digits", data_dir=data_dir)
    depth, width, epochs = (6, 64, 1 if quick else 20)
    rows = []
    for activation in ("sigmoid", "tanh", "relu"):
        model = dlfund.models.MLP(64, (width,) * depth, 10, activation=activation, rngs=nnx.Rngs(0))
        first, last = _first_and_last_gradient(model, ds.train[0][:256], ds.train[1][:256])
        start = time.perf_counter()
        # Plain SGD, so that gradient size is what moves each layer (Adam would rescale it away).
        result = dlfund.fit(model, ds, optimizer="momentum", learning_rate=0.05, epochs=epochs, progress=False)
        history = result.history
        reached = [e for e, a in zip(history["epoch"], history["val_accuracy"]) if a >= 0.9]
        rows.append(
            {
                "activation": activation,
                "grad norm layer 1 / layer 6 at init": first / last,
                "val accuracy after 1 epoch": float(history["val_accuracy"][0]),
                f"val accuracy after {epochs} epochs": float(history["val_accuracy"][-1]),
                "first epoch with val accuracy >= 0.9": int(reached[0]) if reached else None,
                "test accuracy": dlfund.evaluate(model, ds.test)["accuracy"],
                "seconds": time.perf_counter() - start,
            }
        )
    by = {r["activation"]: r for r in rows}
    ratio_s, ratio_r = (
        by["sigmoid"]["grad norm layer 1 / layer 6 at init"],
        by["relu"]["grad norm layer 1 / layer 6 at init"],
    )
    checks = [
        Check("sigmoid's gradient vanishes towards the first layers, ReLU's does not", ratio_s < 0.1 * ratio_r,
              f"first/last hidden-layer gradient norm at init: sigmoid {ratio_s:.2e}, ReLU {ratio_r:.2f}"),
        Check("the deep ReLU network learns faster than the sigmoid one",
              by["relu"]["test accuracy"] > by["sigmoid"]["test accuracy"] + 0.1,
              f"test accuracy after {epochs} epochs: ReLU {by['relu']['test accuracy']:.3f}, "
              f"sigmoid {by['sigmoid']['test accuracy']:.3f}"),
    ]  # fmt: skip
    return rows, checks


def dropout(*, quick: bool = False, data_dir: str | None = None):
    import dlfund

    seeds = (0,) if quick else (0, 1, 2)
    n_train, epochs, noise = (64, 2, 0.2) if quick else (200, 150, 0.2)
    rows = []
    for rate in (0.0, 0.5):
        runs: list[dict[str, Any]] = []
        for seed in seeds:
            ds = dlfund.data.load("digits", data_dir=data_dir, seed=seed)
            rng = np.random.default_rng(seed)
            x, y = ds.train[0][:n_train], ds.train[1][:n_train].copy()
            flipped = rng.random(n_train) < noise  # label noise: something a network can only memorize
            y[flipped] = rng.integers(0, 10, int(flipped.sum()))
            model = dlfund.models.MLP(64, (512, 512), 10, dropout=rate, rngs=nnx.Rngs(seed))
            result = dlfund.fit(
                model, (x, y), validation_data=ds.val, epochs=epochs, batch_size=32, seed=seed, progress=False
            )
            last = result.history.last()
            runs.append(
                {
                    "train_loss": last["loss"],
                    "val_loss": last["val_loss"],
                    "best_val_loss": float(np.min(result.history["val_loss"])),
                    "test_accuracy": dlfund.evaluate(model, ds.test)["accuracy"],
                }
            )
        mean = {k: statistics.mean(r[k] for r in runs) for k in runs[0]}
        rows.append(
            {
                "dropout": rate,
                "train examples (20% noisy labels)": n_train,
                "epochs": epochs,
                "seeds": len(seeds),
                "final train loss": mean["train_loss"],
                "final val loss": mean["val_loss"],
                "val - train loss": mean["val_loss"] - mean["train_loss"],
                "best val loss": mean["best_val_loss"],
                "test accuracy": mean["test_accuracy"],
            }
        )
    off, on = rows
    checks = [
        Check("without dropout the network memorizes the training set, noisy labels included",
              off["final train loss"] < 0.01, f"final train loss {off['final train loss']:.2e}"),
        Check("dropout resists memorization: the training loss stays well above zero",
              on["final train loss"] > 10 * off["final train loss"],
              f"final train loss {on['final train loss']:.2e} with dropout 0.5 vs {off['final train loss']:.2e}"),
        Check("dropout narrows the gap between validation and training loss",
              on["val - train loss"] < off["val - train loss"],
              f"gap {on['val - train loss']:.3f} with dropout 0.5 vs {off['val - train loss']:.3f} without"),
        Check("dropout lowers the best validation loss", on["best val loss"] < off["best val loss"],
              f"{on['best val loss']:.3f} with dropout 0.5 vs {off['best val loss']:.3f} without"),
    ]  # fmt: skip
    return rows, checks
