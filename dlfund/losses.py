"""Loss functions, pluggable by name or callable.

A :class:`Loss` maps model outputs and targets to *per-example* losses of shape ``[B]``; the train step averages them
(with a mask, so padded examples count for nothing). It also knows how to turn outputs into class predictions for
the metrics, because that depends on the task: argmax of logits for softmax cross-entropy, the sign of one score for
the binary losses, none for regression.

Losses are frozen dataclasses, hashable by value: two equal configurations reuse the same compiled train step.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from dlfund.registry import Registry, callable_name

MULTICLASS, BINARY, REGRESSION, AUTO = "multiclass", "binary", "regression", "auto"


def _scores(outputs: jax.Array) -> jax.Array:
    """[B] or [B, 1] single scores (logits) -> [B]."""
    if outputs.ndim == 2 and outputs.shape[-1] == 1:
        return outputs[:, 0]
    if outputs.ndim != 1:
        raise ValueError(
            f"a binary loss expects one score per example, outputs of shape [B] or [B, 1]; got {outputs.shape}. "
            "Use num_classes=1 (or a model with one output), or softmax_cross_entropy for several classes."
        )
    return outputs


def _scores_and_labels(outputs: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """[B] or [B, 1] scores and labels -> both [B]; other label shapes are refused (they would broadcast)."""
    scores = _scores(outputs)
    labels = jnp.asarray(labels)
    if labels.ndim == 2 and labels.shape[-1] == 1:
        labels = labels[:, 0]
    if labels.shape != scores.shape:
        raise ValueError(
            f"a binary loss expects one label per example, labels of shape [B] or [B, 1] matching the scores "
            f"{tuple(scores.shape)}; got labels of shape {tuple(labels.shape)}"
        )
    return scores, labels


def _signed(labels: jax.Array, dtype) -> jax.Array:
    """Labels {0, 1} -> targets {-1, +1}."""
    return 2.0 * labels.astype(dtype) - 1.0


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """Cross-entropy of ``softmax(logits)`` against integer labels.

    Args:
      logits: [B, C] unnormalized log-probabilities.
      labels: [B] integers in [0, C).
      label_smoothing: mixes the one-hot target with the uniform distribution (``optax.smooth_labels``).
    Returns:
      [B] losses.
    """
    if isinstance(label_smoothing, (int, float)) and label_smoothing == 0.0:  # a traced value takes the other path
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype), label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def binary_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Cross-entropy of ``sigmoid(logits)`` against labels in {0, 1}, computed stably on logits.

    Args:
      logits: [B] or [B, 1].
      labels: [B] or [B, 1] in {0, 1} (ints or floats; soft labels in [0, 1] work too).
    Returns:
      [B] losses.
    """
    scores, labels = _scores_and_labels(logits, labels)
    return optax.sigmoid_binary_cross_entropy(scores, labels.astype(scores.dtype))


def mse(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """Squared error averaged over all but the batch axis.

    Args:
      outputs: [B, ...].
      targets: same shape as ``outputs`` ([B] targets with [B, 1] outputs are accepted).
    Returns:
      [B] losses.
    """
    if outputs.ndim == targets.ndim + 1 and outputs.shape[-1] == 1:
        outputs = outputs[..., 0]
    if outputs.shape != targets.shape:
        raise ValueError(f"mse: outputs {outputs.shape} and targets {targets.shape} differ in shape")
    error = optax.squared_error(outputs, targets.astype(outputs.dtype))
    return error.reshape(error.shape[0], -1).mean(axis=-1)


def hinge(scores: jax.Array, labels: jax.Array) -> jax.Array:
    """Binary hinge loss ``max(0, 1 - t * s)`` with ``t = 2 * label - 1`` (the SVM margin loss).

    Args:
      scores: [B] or [B, 1] raw scores.
      labels: [B] or [B, 1] in {0, 1}.
    Returns:
      [B] losses.
    """
    s, labels = _scores_and_labels(scores, labels)
    return optax.losses.hinge_loss(s, _signed(labels, s.dtype))


def perceptron(scores: jax.Array, labels: jax.Array) -> jax.Array:
    """Perceptron criterion ``max(0, -t * s)``: its (sub)gradient step is the classic perceptron rule.

    Args:
      scores: [B] or [B, 1] raw scores.
      labels: [B] or [B, 1] in {0, 1}.
    Returns:
      [B] losses.
    """
    s, labels = _scores_and_labels(scores, labels)
    return optax.losses.perceptron_loss(s, _signed(labels, s.dtype))


@dataclasses.dataclass(frozen=True)
class Loss:
    """A per-example loss plus the rule that turns outputs into predictions.

    Attributes:
      name: registry name (or the callable's name).
      fn: ``fn(outputs, targets, **options) -> [B]``.
      task: "multiclass" (argmax predictions), "binary" (score > 0), "regression" (no class predictions) or
        "auto" (decided from the output shape: several outputs -> argmax, one -> score > 0).
      options: extra keyword arguments for ``fn``, as sorted (key, value) pairs so the loss stays hashable.
      link: how outputs become class probabilities when the loss is a likelihood: "softmax" (cross-entropy on
        logits), "sigmoid" (binary cross-entropy on one logit); None for margin, custom and regression losses.
      smoothed: label smoothing is on (softmax cross-entropy only); this shapes the program.
      label_smoothing: its amount, a value the program receives (``compare=False``: losses that differ only in the
        amount are equal, so they share compiled programs; the train state carries the amount as an array).
    """

    name: str
    fn: Callable[..., jax.Array]
    task: str
    options: tuple[tuple[str, Any], ...] = ()
    link: str | None = None
    smoothed: bool = False
    label_smoothing: float = dataclasses.field(default=0.0, compare=False)

    def __call__(self, outputs: jax.Array, targets: jax.Array, *, label_smoothing: Any = None) -> jax.Array:
        """Per-example losses, shape [B]; ``label_smoothing`` (a traced value, when smoothed) overrides the
        loss's own amount."""
        options = dict(self.options)
        if self.smoothed:
            options["label_smoothing"] = self.label_smoothing if label_smoothing is None else label_smoothing
        losses = self.fn(outputs, targets, **options)
        if losses.ndim != 1:
            raise ValueError(
                f"loss {self.name!r} must return one value per example (shape [B]); got shape {losses.shape}"
            )
        return losses

    @property
    def is_classification(self) -> bool:
        return self.task != REGRESSION

    def predict(self, outputs: jax.Array) -> jax.Array:
        """Class predictions [B] (int32) from outputs [B, C], [B, 1] or [B]."""
        if self.task == REGRESSION:
            raise ValueError(f"loss {self.name!r} is a regression loss: outputs are not class predictions")
        several = outputs.ndim == 2 and outputs.shape[-1] > 1
        if self.task == MULTICLASS or (self.task == AUTO and several):
            return jnp.argmax(outputs, axis=-1).astype(jnp.int32)
        return (_scores(outputs) > 0).astype(jnp.int32)

    def probabilities(self, outputs: jax.Array) -> jax.Array:
        """Class probabilities [B, C] from outputs [B, C] (softmax) or one logit [B] / [B, 1] (sigmoid: [B, 2],
        column 1 the positive class).

        Raises:
          ValueError: the loss is not a likelihood (hinge, perceptron, MSE, a custom callable), so its outputs are
            not probabilities; use class predictions or the raw outputs instead.
        """
        if self.link == "softmax":
            return jax.nn.softmax(outputs, axis=-1)
        if self.link == "sigmoid":
            positive = jax.nn.sigmoid(_scores(outputs))
            return jnp.stack([1.0 - positive, positive], axis=-1)
        raise ValueError(
            f"a model trained with the {self.name!r} loss does not output probabilities (only cross-entropy "
            "losses do); use predict_classes for classes, or predict for the raw outputs"
        )

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly description (for configs and logs)."""
        smoothing = {"label_smoothing": self.label_smoothing} if self.smoothed else {}
        return {"name": self.name, **dict(self.options), **smoothing}


LOSSES: Registry[Loss] = Registry("loss")
LOSSES.register(
    "softmax_cross_entropy", Loss("softmax_cross_entropy", softmax_cross_entropy, MULTICLASS, link="softmax")
)
LOSSES.register("binary_cross_entropy", Loss("binary_cross_entropy", binary_cross_entropy, BINARY, link="sigmoid"))
LOSSES.register("mse", Loss("mse", mse, REGRESSION))
LOSSES.register("hinge", Loss("hinge", hinge, BINARY))
LOSSES.register("perceptron", Loss("perceptron", perceptron, BINARY))

# Common spellings; each points to the same Loss object.
for _alias, _target in {
    "cross_entropy": "softmax_cross_entropy",
    "categorical_cross_entropy": "softmax_cross_entropy",
    "bce": "binary_cross_entropy",
    "mean_squared_error": "mse",
}.items():
    LOSSES.register(_alias, LOSSES.get(_target))


def get(loss: str | Loss | Callable[..., jax.Array], *, label_smoothing: float | None = None) -> Loss:
    """A :class:`Loss` from a name, a ``Loss``, or a callable ``fn(outputs, targets) -> [B]``.

    Args:
      loss: the loss.
      label_smoothing: only for softmax cross-entropy; in [0, 1).
    Raises:
      ValueError: an unknown name (the message lists the known losses) or a bad option.
    """
    if isinstance(loss, Loss):
        resolved = loss
    elif isinstance(loss, str):
        resolved = LOSSES.get(loss)
    elif callable(loss):
        resolved = Loss(callable_name(loss), loss, AUTO)
    else:
        raise TypeError(f"loss must be a name ({', '.join(LOSSES.names())}), a Loss or a callable, got {loss!r}")
    if label_smoothing:
        if resolved.fn is not softmax_cross_entropy:
            raise ValueError(f"label_smoothing applies to softmax_cross_entropy only, not to {resolved.name!r}")
        if not (0.0 <= label_smoothing < 1.0) or math.isnan(label_smoothing):
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        resolved = dataclasses.replace(resolved, smoothed=True, label_smoothing=float(label_smoothing))
    return resolved


def for_model(
    model: Any, loss: str | Loss | Callable[..., jax.Array] | None = None, *, label_smoothing: float | None = None
) -> Loss:
    """``loss`` if given, else the model's ``default_loss`` (softmax cross-entropy for models without one)."""
    chosen = loss if loss is not None else getattr(model, "default_loss", "softmax_cross_entropy")
    return get(chosen, label_smoothing=label_smoothing)
