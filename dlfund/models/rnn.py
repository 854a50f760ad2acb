"""Recurrent sequence models: a simple (tanh) RNN, the LSTM and the GRU, stacked and optionally bidirectional.

Each layer runs one of Flax NNX's cells over time with ``lax.scan``. A mask [B, T] (True = real step, padding at
the end) freezes the state on padded steps, so the state after the scan is the state of the last real step, and the
backward direction reverses only the real part of each sequence: appending padding never changes the output.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from dlfund.models.base import Model, check_rate, check_size
from dlfund.models.blocks import Dropout, as_sequences, check_choice, check_sequence_input, dropout_key, sequence_mask

Carry = Any  # an array [B, hidden], or a tuple of them (the LSTM's (c, h))


def scan_cell(cell: nnx.Module, carry: Carry, x: jax.Array, mask: jax.Array) -> tuple[Carry, jax.Array]:
    """Runs ``cell`` over the time axis of x [B, T, F]; padded steps (mask False) keep the previous carry.

    Returns:
      the carry after the last real step of each sequence, and the cell outputs [B, T, hidden] (on padded steps
      they are whatever the cell computed; later layers and the head ignore them).
    """

    def step(carry, inputs):
        x_t, real = inputs
        new_carry, y = cell(carry, x_t)
        keep = jax.tree.map(lambda new, old: jnp.where(real[:, None], new, old), new_carry, carry)
        return keep, y

    carry, ys = jax.lax.scan(step, carry, (jnp.swapaxes(x, 0, 1), mask.T))
    return carry, jnp.swapaxes(ys, 0, 1)


def reverse_valid(x: jax.Array, lengths: jax.Array) -> jax.Array:
    """Reverses the first ``lengths[b]`` steps of each sequence x[b] [T, ...]; the padding stays at the end.

    Applying it twice gives x back, so it also puts a backward pass's outputs back in time order.
    """
    t = jnp.arange(x.shape[1])[None, :]
    index = jnp.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)  # [B, T]
    return jnp.take_along_axis(x, index.reshape(*index.shape, *([1] * (x.ndim - 2))), axis=1)


class RecurrentModel(Model):
    """A stack of recurrent layers over sequences [B, T, F] and a dense head on the final state.

    Args:
      in_features: numbers per time step (F).
      hidden: state size of each direction of each layer.
      num_classes: outputs per sequence: logits, or regression targets with ``output="regress"``.
      num_layers: stacked recurrent layers; each reads the previous layer's output sequence.
      bidirectional: a second cell per layer reads each sequence backwards (its real part only); the two
        directions' outputs are concatenated, and so are their final states for the head.
      dropout: rate of dropout on each layer's output sequence before the next layer and on the final state
        before the head (training only), in [0, 1).
      output: "classify" (logits, softmax cross-entropy) or "regress" (real values; ``default_loss`` is "mse").
      rngs: ``nnx.Rngs`` for initialization.

    Call: ``model(x, mask=None, rngs=key)`` with x [B, T, F] -> [B, num_classes], computed from the state after
    each sequence's last real step. ``check_input`` rejects a flat [B, T*F] input: the model cannot tell where a
    step ends.
    """

    def __init__(
        self,
        in_features: int,
        hidden: int = 64,  # enough state for small sequence tasks while a CPU step stays in milliseconds
        num_classes: int = 10,  # the registry's usual 10-class datasets
        *,
        num_layers: int = 1,  # one layer learns most small tasks; stacking is opt-in
        bidirectional: bool = False,  # off: a causal reader, and half the cost
        dropout: float = 0.0,  # off: small models on small data rarely need it; opt in for regularization
        output: str = "classify",  # sequence classification, the common case
        rngs: nnx.Rngs,
    ):
        self.in_features = check_size("in_features", in_features)
        self.hidden = check_size("hidden", hidden)
        self.num_classes = check_size("num_classes", num_classes)
        self.num_layers = check_size("num_layers", num_layers)
        self.bidirectional = bool(bidirectional)
        dropout = check_rate("dropout", dropout)
        self.output = check_choice("output", output, ("classify", "regress"))
        self._remember(
            in_features=in_features,
            hidden=hidden,
            num_classes=num_classes,
            num_layers=num_layers,
            bidirectional=self.bidirectional,
            dropout=dropout,
            output=output,
        )
        directions = 2 if self.bidirectional else 1
        sizes = [in_features] + [directions * hidden] * (num_layers - 1)
        self.forward = nnx.List([self._cell(size, hidden, rngs) for size in sizes])
        self.backward = nnx.List([self._cell(size, hidden, rngs) for size in sizes] if self.bidirectional else [])
        self.dropout = Dropout(dropout) if dropout > 0 else None
        self.head = nnx.Linear(directions * hidden, num_classes, rngs=rngs)

    @property
    def default_loss(self) -> str:  # type: ignore[override]
        return "mse" if self.output == "regress" else "softmax_cross_entropy"

    def _cell(self, in_features: int, hidden: int, rngs: nnx.Rngs) -> nnx.Module:
        """The recurrent cell of one layer and direction: the Elman cell here; LSTM and GRU override it."""
        return nnx.SimpleCell(in_features, hidden, rngs=rngs)

    def _zero_carry(self, batch: int) -> Carry:
        return jnp.zeros((batch, self.hidden), jnp.float32)

    @staticmethod
    def _state(carry: Carry) -> jax.Array:
        """The hidden state h [B, hidden] in a carry."""
        return carry

    def check_input(self, example_shape: tuple[int, ...]) -> None:
        check_sequence_input(type(self).__name__, example_shape, self.in_features)

    def _drop(self, x: jax.Array, rngs: jax.Array | None, site: int) -> jax.Array:
        return x if self.dropout is None else self.dropout(x, rngs=dropout_key(rngs, site))

    def penultimate(self, x: jax.Array, *, mask: jax.Array | None = None, rngs: jax.Array | None = None) -> jax.Array:
        """The last layer's final hidden states [B, hidden] ([B, 2 * hidden] bidirectional: forward, then
        backward): the head's input. Arguments as in :meth:`__call__`."""
        x = as_sequences(x)
        mask = sequence_mask(mask, x)
        lengths = mask.sum(axis=1)
        for layer in range(self.num_layers):
            if layer > 0:
                x = self._drop(x, rngs, layer - 1)
            carry, outputs = scan_cell(self.forward[layer], self._zero_carry(x.shape[0]), x, mask)
            finals, sequences = [self._state(carry)], [outputs]
            if self.bidirectional:
                # Padding stays at the end of the reversed sequence, so the same mask applies.
                carry, outputs = scan_cell(
                    self.backward[layer], self._zero_carry(x.shape[0]), reverse_valid(x, lengths), mask
                )
                finals.append(self._state(carry))
                sequences.append(reverse_valid(outputs, lengths))
            x = jnp.concatenate(sequences, axis=-1)
        return jnp.concatenate(finals, axis=-1)

    def __call__(self, x: jax.Array, *, mask: jax.Array | None = None, rngs: jax.Array | None = None) -> jax.Array:
        """Reads sequences and returns one output vector per sequence.

        Args:
          x: [B, T, in_features] (or [B, T, ...] with in_features numbers per step).
          mask: [B, T], True for real steps and False for padding, which must come after the real steps; None:
            every step is real.
          rngs: dropout key (training).
        Returns:
          [B, num_classes]: logits (``output="classify"``) or regression outputs (``output="regress"``).
        """
        features = self.penultimate(x, mask=mask, rngs=rngs)
        return self.head(self._drop(features, rngs, self.num_layers - 1))


class RNN(RecurrentModel):
    """An Elman RNN, ``h' = tanh(W_i x + b + W_h h)`` (``nnx.SimpleCell``, the base class's cell); arguments
    and call as :class:`LSTM`."""


def _forget_bias_one(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    # Gates are [i, f, g, o] (OptimizedLSTMCell's split). A forget bias of 1 keeps the memory by default at the
    # start of training, which helps gradients reach early steps (Jozefowicz et al. 2015; Keras' unit_forget_bias).
    h = shape[0] // 4
    return jnp.zeros(shape, dtype).at[h : 2 * h].set(1.0)


class LSTM(RecurrentModel):
    """A long short-term memory network (``nnx.OptimizedLSTMCell``, forget-gate bias initialized to 1).

    ``LSTM(in_features, hidden=64, num_classes=10, *, num_layers=1, bidirectional=False, dropout=0.0,
    output="classify", rngs)``; x [B, T, F] (mask [B, T]) -> [B, num_classes]. See :class:`RecurrentModel` for the
    arguments, which RNN and GRU share.
    """

    def _cell(self, in_features: int, hidden: int, rngs: nnx.Rngs) -> nnx.Module:
        return nnx.OptimizedLSTMCell(in_features, hidden, bias_init=_forget_bias_one, rngs=rngs)

    def _zero_carry(self, batch: int) -> Carry:
        zeros = jnp.zeros((batch, self.hidden), jnp.float32)
        return zeros, zeros  # (c, h)

    @staticmethod
    def _state(carry: Carry) -> jax.Array:
        return carry[1]


class GRU(RecurrentModel):
    """A gated recurrent unit network (``nnx.GRUCell``); arguments and call as :class:`LSTM`."""

    def _cell(self, in_features: int, hidden: int, rngs: nnx.Rngs) -> nnx.Module:
        return nnx.GRUCell(in_features, hidden, rngs=rngs)
