"""Experiment ``activations``: sigmoid vs tanh vs ReLU in a deep MLP, at initialization and in training speed.

The same deep MLP (10 hidden layers of 64 units, Flax's default LeCun-normal initialization, softmax
cross-entropy) is built with each activation and measured twice on the digits:

- **At initialization**: the norm of each layer's kernel gradient on one batch of 256 training examples
  (``nnx.grad`` of the model's mean loss, before any training), averaged over 3 initializations. The claim: with
  sigmoid the gradient shrinks layer by layer towards the input (each sigmoid multiplies it by at most 1/4), with
  ReLU it does not.
- **In training**: SGD with momentum 0.9 (not Adam, whose per-parameter scaling would hide the size of the
  gradient), batches of 32, 25 epochs; each activation gets its own learning rate, tuned on the validation split
  over a grid (TEACHING pitfall 4: one rate for all arms would favour whichever it suits), 3 seeds each, all in one
  :func:`dlfund.sweep` per activation. The speed is the epoch at which the validation accuracy first reaches 95%.

"Faster" must hold beyond the seeds: every seed of the faster arm gets there, and its slowest seed beats the other
arm's fastest.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dlfund import losses as losses_lib
from dlfund.experiments import measures
from dlfund.experiments.base import Check

ACTIVATIONS = ("sigmoid", "tanh", "relu")
DEPTH, WIDTH = 10, 64
LEARNING_RATES = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
SEEDS = (0, 1, 2)
EPOCHS = 25
THRESHOLD = 0.95
GRADIENT_BATCH = 256


def _model_fn(activation: str, depth: int, width: int):
    import dlfund

    def build(rngs: nnx.Rngs):
        return dlfund.models.MLP(64, (width,) * depth, 10, activation=activation, rngs=rngs)

    return build


@nnx.jit
def layer_gradient_norms(model, x, y) -> list[jax.Array]:
    """The norm of each dense kernel's gradient (hidden layers from the input on, then the head) on one batch,
    before any update: ``nnx.grad`` of the model's mean softmax cross-entropy, compiled as one program (op by op
    it would compile each small operation separately, which took longer than the whole computation)."""

    def loss(m):
        return losses_lib.softmax_cross_entropy(m(x), y).mean()

    grads = nnx.grad(loss)(model)
    kernels = [grads["dense"][i]["kernel"] for i in range(len(model.dense))] + [grads["head"]["kernel"]]
    return [jnp.linalg.norm(kernel[...]) for kernel in kernels]


def run(*, quick: bool = False, data_dir: str | None = None):
    import dlfund

    depth, width, rates, seeds, epochs = (
        (3, 16, (1e-2,), (0,), 2) if quick else (DEPTH, WIDTH, LEARNING_RATES, SEEDS, EPOCHS)
    )
    ds = dlfund.data.load("digits", data_dir=data_dir)
    x, y = ds.train[0][:GRADIENT_BATCH], ds.train[1][:GRADIENT_BATCH]
    norms: dict[str, np.ndarray] = {}
    ratio: dict[str, float] = {}  # layer 1's gradient norm over the last hidden layer's
    tuned: dict[str, measures.Setting] = {}
    curves: dict[str, list] = {}
    grids: dict[str, list[measures.Setting]] = {}
    rows: list[dict[str, Any]] = []
    for activation in ACTIVATIONS:
        build = _model_fn(activation, depth, width)
        norms[activation] = np.mean([np.asarray(layer_gradient_norms(build(nnx.Rngs(s)), x, y)) for s in seeds], axis=0)
        ratio[activation] = float(norms[activation][0] / norms[activation][depth - 1])
        result = measures.sweep(
            build,
            ds,
            dlfund.grid(learning_rate=list(rates), seed=list(seeds)),
            optimizer="momentum",
            epochs=epochs,
            batch_size=32,
            progress=False,
        )
        settings = measures.by_learning_rate(result, THRESHOLD, epochs)
        best = tuned[activation] = measures.fastest(settings)
        grids[activation] = settings
        curves[activation] = [result.histories[k] for k in best.members]
        for setting in settings:
            chosen = setting is best
            test = [dlfund.evaluate(result.model(k), ds.test)["accuracy"] for k in setting.members]
            rows.append(
                {
                    "activation": activation,
                    "learning rate": setting.learning_rate,
                    "tuned": ("yes" if setting.reached else f"none reaches {THRESHOLD:.0%}") if chosen else "",
                    f"epochs to {THRESHOLD:.0%} val accuracy (per seed)": measures.describe_epochs(
                        setting.epochs, epochs
                    ),
                    "best val accuracy": float(np.nanmean(setting.best_val_accuracy)),
                    f"val accuracy after {epochs} epochs": float(np.nanmean(setting.final_val_accuracy)),
                    "test accuracy": float(np.mean(test)),
                    f"grad norm layer 1 / layer {depth} at init": ratio[activation] if chosen else None,
                }
            )
    relu_sigmoid = measures.faster(tuned["relu"], tuned["sigmoid"], ("ReLU", "sigmoid"), THRESHOLD)
    relu_tanh = measures.faster(tuned["relu"], tuned["tanh"], ("ReLU", "tanh"), THRESHOLD)
    tanh_relu = measures.faster(tuned["tanh"], tuned["relu"], ("tanh", "ReLU"), THRESHOLD)
    checks = [
        Check(f"sigmoid's gradient vanishes towards the input of a {depth}-layer MLP at initialization, ReLU's "
              "does not (first/last hidden-layer gradient-norm ratio below 1/100 of ReLU's, ReLU's above 0.1)",
              ratio["sigmoid"] < 0.01 * ratio["relu"] and ratio["relu"] > 0.1,
              f"layer 1 / layer {depth} gradient norm at init (mean of {len(seeds)} initializations): sigmoid "
              f"{ratio['sigmoid']:.2e}, tanh {ratio['tanh']:.2e}, ReLU {ratio['relu']:.2e}"),
        Check(f"ReLU trains the deep MLP faster than sigmoid (epochs to {THRESHOLD:.0%} validation accuracy, each "
              "at its own tuned learning rate, every seed)", *relu_sigmoid),
        Check(f"ReLU trains the deep MLP faster than tanh (epochs to {THRESHOLD:.0%} validation accuracy, each at "
              "its own tuned learning rate, every seed)",
              relu_tanh[0], relu_tanh[1] + ("; tanh is the faster one beyond seed noise" if tanh_relu[0] else "")),
    ]  # fmt: skip
    return rows, checks, _figure(norms, curves, grids, epochs, depth)


def _figure(norms, curves, grids, epochs: int, depth: int):
    """Gradient norm per layer at init (log y); validation accuracy per epoch at each tuned rate; epochs to the
    threshold against the learning rate."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(16, 4.2))
    grad_ax, curve_ax, rate_ax = fig.subplots(1, 3)
    for activation, layer_norms in norms.items():
        grad_ax.plot(np.arange(1, len(layer_norms) + 1), layer_norms, marker="o", label=activation)
    grad_ax.set_yscale("log")
    grad_ax.set_xlabel(f"layer (1 = input side, {depth + 1} = output layer)")
    grad_ax.set_ylabel("kernel gradient norm at init")
    grad_ax.set_title("gradients at initialization, one batch")
    for activation, histories in curves.items():
        best = measures.fastest(grids[activation])
        measures.draw_band(curve_ax, histories, "val_accuracy", epochs, f"{activation} (lr {best.learning_rate:g})")
    curve_ax.axhline(THRESHOLD, color="grey", ls="--", lw=0.8)
    curve_ax.set_xlabel("epoch")
    curve_ax.set_ylabel("validation accuracy")
    curve_ax.set_title("training at each tuned rate (band: seeds)")
    for activation, settings in grids.items():
        measures.draw_epochs_vs_rate(rate_ax, settings, activation, epochs)
    rate_ax.set_ylabel(f"epochs to {THRESHOLD:.0%} val accuracy (mean of seeds)")
    rate_ax.set_title(f"tuning each activation (dotted: never in {epochs})")
    for ax in (grad_ax, curve_ax, rate_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
