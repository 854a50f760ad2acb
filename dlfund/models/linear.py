"""The single neuron: the perceptron and logistic regression."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from dlfund import activations
from dlfund.models.base import FlatInputModel, check_size


class Perceptron(FlatInputModel):
    """Rosenblatt's perceptron: one linear unit followed by a step (Heaviside) activation.

    ``model(x)`` returns the pre-activation scores [B, 1] (what a surrogate loss such as ``"perceptron"`` or
    ``"hinge"`` trains on); ``model.predict(x)`` applies the step and returns 0/1 predictions [B].
    Train it with :func:`dlfund.models.perceptron_rule` (the classic mistake-driven rule) or with
    ``dlfund.fit(model, ..., loss="perceptron")`` (gradient descent on the perceptron criterion).

    Args:
      in_features: numbers per example (inputs are flattened).
      rngs: ``nnx.Rngs``; the weights start at zero, as in Rosenblatt's rule, so ``rngs`` is unused by the
        initialization but kept for a uniform constructor.
    """

    default_loss = "perceptron"
    head_name = "linear"

    def __init__(self, in_features: int, *, rngs: nnx.Rngs):
        self.in_features = check_size("in_features", in_features)
        self._remember(in_features=in_features)
        self.linear = nnx.Linear(in_features, 1, kernel_init=nnx.initializers.zeros, rngs=rngs)

    def penultimate(self, x: jax.Array, *, rngs: jax.Array | None = None) -> jax.Array:
        """The inputs, flattened [B, in_features]: a linear model's only layer is its head."""
        return x.reshape(x.shape[0], -1)

    def __call__(self, x: jax.Array, *, rngs: jax.Array | None = None) -> jax.Array:
        return self.linear(self.penultimate(x))

    def predict(self, x: jax.Array) -> jax.Array:
        """0/1 predictions [B] (int32): the step function of the scores."""
        return activations.step(self(x)[:, 0]).astype(jnp.int32)


class LogisticRegression(FlatInputModel):
    """A linear model of class probabilities: sigmoid of one logit (binary) or softmax of C logits (multinomial).

    Args:
      in_features: numbers per example (inputs are flattened).
      num_classes: 2 for binary (one logit, trained with binary cross-entropy), > 2 for multinomial (C logits,
        softmax cross-entropy).
      rngs: ``nnx.Rngs`` for initialization.

    Call: ``model(x)`` -> logits [B, 1] (binary) or [B, C]; ``predict_proba(x)`` -> probabilities [B, C].
    """

    head_name = "linear"

    def __init__(self, in_features: int, num_classes: int = 2, *, rngs: nnx.Rngs):
        self.in_features = check_size("in_features", in_features)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"LogisticRegression needs num_classes >= 2, got {num_classes!r}")
        self.num_classes = num_classes
        self._remember(in_features=in_features, num_classes=num_classes)
        outputs = 1 if num_classes == 2 else num_classes
        self.linear = nnx.Linear(in_features, outputs, kernel_init=nnx.initializers.zeros, rngs=rngs)

    @property
    def default_loss(self) -> str:  # type: ignore[override]
        return "binary_cross_entropy" if self.num_classes == 2 else "softmax_cross_entropy"

    def penultimate(self, x: jax.Array, *, rngs: jax.Array | None = None) -> jax.Array:
        """The inputs, flattened [B, in_features]: a linear model's only layer is its head."""
        return x.reshape(x.shape[0], -1)

    def __call__(self, x: jax.Array, *, rngs: jax.Array | None = None) -> jax.Array:
        return self.linear(self.penultimate(x))

    def predict_proba(self, x: jax.Array) -> jax.Array:
        """Class probabilities [B, num_classes]."""
        logits = self(x)
        if self.num_classes == 2:
            p = jax.nn.sigmoid(logits[:, 0])
            return jnp.stack([1.0 - p, p], axis=-1)
        return jax.nn.softmax(logits, axis=-1)


def perceptron_rule(
    model: Perceptron,
    x: jax.Array,
    y: jax.Array,
    *,
    epochs: int = 10,
    learning_rate: float = 1.0,
    key: jax.Array,
) -> jax.Array:
    """Trains ``model`` in place with Rosenblatt's rule; returns the mistakes made in each epoch, int32 [epochs].

    For each example in a shuffled order: predict ``yhat = step(w.x + b)``; if wrong, ``w += lr * (y - yhat) * x``
    and ``b += lr * (y - yhat)``. On linearly separable data the mistakes reach 0 (the perceptron convergence
    theorem); on data that is not separable (XOR) they never do. All epochs run in one compiled program.

    Args:
      model: a :class:`Perceptron`.
      x: [N, in_features] (or [N, ...], flattened).
      y: [N] labels in {0, 1}.
      epochs: passes over the data, >= 1.
      learning_rate: step size, > 0 (with zero initial weights any value gives the same decisions).
      key: PRNG key for the example order.
    """
    if not isinstance(model, Perceptron):
        raise TypeError(f"perceptron_rule trains a Perceptron, got {type(model).__name__}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
    x = jnp.asarray(x, jnp.float32).reshape(len(x), -1)
    y = jnp.asarray(y)
    model.check_input(x.shape[1:])
    if y.shape != (x.shape[0],):
        raise ValueError(f"y must have shape ({x.shape[0]},) to match x, got {y.shape}")
    if not bool(jnp.all((y == 0) | (y == 1))):
        raise ValueError("the perceptron rule needs labels in {0, 1}")
    w, b, mistakes = _perceptron_epochs(
        model.linear.kernel[...], model.linear.bias[...], x, y.astype(jnp.float32), key, epochs, learning_rate
    )
    model.linear.kernel[...] = w
    model.linear.bias[...] = b
    return mistakes


@functools.partial(jax.jit, static_argnums=(5,))
def _perceptron_epochs(w, b, x, y, key, epochs, learning_rate):
    def example(carry, xy):
        w, b = carry
        xi, yi = xy
        error = yi - activations.step(xi @ w[:, 0] + b[0])  # -1, 0 or +1
        w = w + learning_rate * error * xi[:, None]
        b = b + learning_rate * error
        return (w, b), error != 0

    def epoch(carry, epoch_index):
        order = jax.random.permutation(jax.random.fold_in(key, epoch_index), x.shape[0])
        carry, wrong = jax.lax.scan(example, carry, (x[order], y[order]))
        return carry, wrong.sum(dtype=jnp.int32)

    (w, b), mistakes = jax.lax.scan(epoch, (w, b), jnp.arange(epochs))
    return w, b, mistakes
