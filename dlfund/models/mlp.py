"""The multilayer perceptron: dense layers with a nonlinearity between them."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import jax
from flax import nnx

from dlfund import activations
from dlfund.models.base import FlatInputModel, check_rate, check_size
from dlfund.models.blocks import Dropout


class MLP(FlatInputModel):
    """Dense -> [BatchNorm] -> activation -> [Dropout], repeated per hidden layer, then a dense output layer.

    Args:
      in_features: numbers per example; inputs of any shape [B, ...] are flattened to [B, in_features].
      hidden: widths of the hidden layers, e.g. ``(128,)`` or ``(512, 512)``; ``()`` gives a linear model.
      num_classes: outputs per example (logits). Use 1 for a binary classifier trained with a binary loss.
      activation: a name from ``dlfund.activations`` ("relu", "tanh", ...) or a callable.
      dropout: probability of zeroing each hidden unit during training, in [0, 1); off in evaluation.
      batch_norm: normalize each hidden layer's pre-activations (batch statistics in training, running averages
        in evaluation). The dense layer before it then has no bias, since BN's shift replaces it.
      rngs: ``nnx.Rngs`` for parameter initialization.

    Call: ``model(x, rngs=key)`` with x [B, ...] -> logits [B, num_classes]; ``rngs`` is the dropout key (training).
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (128,),
        num_classes: int = 10,
        *,
        activation: str | activations.Activation = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        rngs: nnx.Rngs,
    ):
        hidden = (hidden,) if isinstance(hidden, int) else tuple(hidden)
        self.in_features = check_size("in_features", in_features)
        for i, width in enumerate(hidden):
            check_size(f"hidden[{i}]", width)
        self.num_classes = check_size("num_classes", num_classes)
        self.activation = activations.get(activation)  # fails now, listing known names, if misspelt
        dropout = check_rate("dropout", dropout)
        self._remember(
            in_features=in_features,
            hidden=hidden,
            num_classes=num_classes,
            activation=activation if isinstance(activation, str) else None,
            dropout=dropout,
            batch_norm=bool(batch_norm),
        )
        widths = (in_features, *hidden)
        self.dense = nnx.List(
            [nnx.Linear(a, b, use_bias=not batch_norm, rngs=rngs) for a, b in itertools.pairwise(widths)]
        )
        self.norms = nnx.List([nnx.BatchNorm(w, rngs=rngs) for w in hidden] if batch_norm else [])
        self.dropout = Dropout(dropout) if dropout > 0 else None
        self.head = nnx.Linear(widths[-1], num_classes, rngs=rngs)

    def penultimate(self, x: jax.Array, *, rngs: jax.Array | None = None) -> jax.Array:
        """The last hidden layer's activations [B, hidden[-1]] (the head's input; x itself without hidden
        layers)."""
        x = x.reshape(x.shape[0], -1)
        for i, dense in enumerate(self.dense):
            x = dense(x)
            if self.norms:
                x = self.norms[i](x)
            x = self.activation(x)
            if self.dropout is not None:
                # One key per layer: the same key would drop the same units in every layer of equal width.
                x = self.dropout(x, rngs=None if rngs is None else jax.random.fold_in(rngs, i))
        return x

    def __call__(self, x: jax.Array, *, rngs: jax.Array | None = None) -> jax.Array:
        return self.head(self.penultimate(x, rngs=rngs))
