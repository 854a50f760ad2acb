"""Pieces shared by the convolutional, recurrent and attention models: argument checks, input checks, attention."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dlfund.models.base import check_size


def per_block(name: str, value: Any, blocks: int, *, allow_none: bool = False) -> tuple[int | None, ...]:
    """``value`` as one positive int per block: an int (or None, if allowed) is repeated, a sequence must match."""
    values = (value,) * blocks if value is None or isinstance(value, int) else tuple(value)
    if len(values) != blocks:
        raise ValueError(f"{name} needs one value per block ({blocks}), got {len(values)}: {value!r}")
    for i, v in enumerate(values):
        if not (allow_none and v is None):
            check_size(f"{name}[{i}]", v)
    return values


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``; otherwise a ValueError listing them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_shape(name: str, shape: Any, rank: int) -> tuple[int, ...]:
    """A tuple of ``rank`` positive ints, e.g. an image shape (H, W, C)."""
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence) or len(shape) != rank:
        raise ValueError(f"{name} must be a tuple of {rank} positive integers, got {shape!r}")
    for i, v in enumerate(shape):
        check_size(f"{name}[{i}]", v)
    return tuple(shape)


def check_image_input(
    model: str, example_shape: tuple[int, ...], input_shape: tuple[int, int, int], *, any_size: bool = False
) -> None:
    """Accepts examples of ``input_shape`` (H, W, C) or flat vectors of H*W*C numbers; otherwise a ValueError.

    With ``any_size`` (fully convolutional models), images of another height and width are accepted too, as long as
    the channels match. The message names the expected and the received shape (and the channels when they differ).
    """
    size = math.prod(input_shape)
    example_shape = tuple(example_shape)
    if example_shape == (size,) or example_shape == tuple(input_shape):
        return
    if any_size and len(example_shape) == 3 and example_shape[2] == input_shape[2]:
        return
    if len(example_shape) == 1:
        raise ValueError(
            f"{model} expects images of shape {tuple(input_shape)} or flat vectors of {size} (= H*W*C) numbers, "
            f"but the data's examples are flat vectors of {example_shape[0]} numbers"
        )
    if len(example_shape) == 3 and example_shape[2] != input_shape[2]:
        raise ValueError(
            f"{model} expects images with {input_shape[2]} channels (input_shape={tuple(input_shape)}, NHWC), but "
            f"the data's examples have shape {example_shape}, i.e. {example_shape[2]} channels"
        )
    raise ValueError(
        f"{model} expects images of shape {tuple(input_shape)} (H, W, C) or flat vectors of {size} numbers, but "
        f"the data's examples have shape {example_shape}; build the model with input_shape={example_shape}"
        + (" or pass images of the right size" if len(example_shape) == 3 else "")
    )


def as_images(x: jax.Array, input_shape: tuple[int, int, int]) -> jax.Array:
    """Images [B, H, W, C]: flat inputs [B, H*W*C] are reshaped to ``input_shape``; images pass unchanged."""
    return x.reshape(x.shape[0], *input_shape) if x.ndim == 2 else x


def check_sequence_input(
    model: str, example_shape: tuple[int, ...], in_features: int, *, max_len: int | None = None
) -> None:
    """Accepts sequences (T, F) with F == in_features (or (T, ...) whose trailing dims hold F numbers).

    A flat vector (T*F,) is rejected: the model cannot know where one time step ends.
    """
    example_shape = tuple(example_shape)
    if len(example_shape) < 2:
        hint = ""
        if example_shape and example_shape[0] % in_features == 0:
            hint = f"; reshape the data to [N, {example_shape[0] // in_features}, {in_features}]"
        raise ValueError(
            f"{model} expects sequences of shape (T, {in_features}) (time steps x in_features), but the data's "
            f"examples have shape {example_shape}; a flat [B, T*F] vector is not accepted, since the model cannot "
            f"tell where one time step ends{hint}"
        )
    features = math.prod(example_shape[1:])
    if features != in_features:
        raise ValueError(
            f"{model} expects {in_features} features per time step (sequences of shape (T, {in_features})), but "
            f"the data's examples have shape {example_shape} = {features} features per step; build the model with "
            f"in_features={features}"
        )
    if max_len is not None and example_shape[0] > max_len:
        raise ValueError(
            f"{model} handles sequences of at most max_len={max_len} steps (the size of its positional table), "
            f"but the data's examples have shape {example_shape}, i.e. {example_shape[0]} steps; build the model "
            f"with max_len>={example_shape[0]}"
        )


def as_sequences(x: jax.Array) -> jax.Array:
    """Sequences [B, T, F]: trailing feature dimensions [B, T, ...] are flattened into F."""
    return x.reshape(x.shape[0], x.shape[1], -1)


def sequence_mask(mask: jax.Array | None, x: jax.Array) -> jax.Array:
    """A boolean mask [B, T] (True = real step) for sequences x [B, T, ...]; all True when ``mask`` is None."""
    if mask is None:
        return jnp.ones(x.shape[:2], bool)
    mask = jnp.asarray(mask)
    if mask.shape != x.shape[:2]:
        raise ValueError(f"mask must have shape [B, T] = {x.shape[:2]} to match the inputs, got {mask.shape}")
    return mask.astype(bool)


class DropoutRate(nnx.Variable):
    """The rate of a :class:`Dropout` layer: part of the model's state (so a value under ``jit``, not a constant of
    the program), never trained, and not saved as a weight (it is a setting: the model's config records it)."""


class Dropout(nnx.Module):
    """Inverted dropout whose rate is a state variable, so that models that differ only in their dropout rate share
    compiled programs, and a sweep can give every member its own rate.

    In training mode (``model.train()``) each unit is zeroed with probability ``rate`` and the survivors are scaled
    by ``1 / (1 - rate)``; in eval mode it is the identity. The same computation as ``nnx.Dropout``, whose rate is
    a Python constant (a traced rate there fails on ``if rate == 0``).

    Call: ``dropout(x, rngs=key)`` -> same shape and dtype; ``key`` is required in training mode.
    """

    def __init__(self, rate: float):
        self.rate = DropoutRate(jnp.asarray(rate, jnp.float32))
        self.deterministic = False  # set by model.train() / model.eval()

    def __call__(self, x: jax.Array, *, rngs: jax.Array | None = None) -> jax.Array:
        if self.deterministic:
            return x
        if rngs is None:
            raise ValueError("dropout in training mode needs a random key: call the model with rngs=key")
        keep = 1.0 - self.rate[...]
        mask = jax.random.bernoulli(rngs, keep, x.shape)
        return jax.lax.select(mask, (x / keep).astype(x.dtype), jnp.zeros_like(x))


def dropout_layers(model: nnx.Module) -> list[Dropout]:
    """Every :class:`Dropout` layer inside ``model``."""
    return [node for _, node in nnx.iter_graph(model) if isinstance(node, Dropout)]


def dropout_rate(model: nnx.Module) -> float:
    """The dropout rate of ``model``'s dropout layers (0.0 if it has none), as the shortest float that the
    float32 value rounds from (0.2, not 0.20000000298)."""
    layers = dropout_layers(model)
    return float(str(np.float32(layers[0].rate[...]))) if layers else 0.0


def set_dropout(model: nnx.Module, rate: float) -> nnx.Module:
    """Sets the rate of every dropout layer of ``model`` (in place; returns it). The program does not change: a
    model trained before keeps its compiled steps.

    Raises:
      ValueError: ``rate`` outside [0, 1), or a model without dropout layers (built with ``dropout=0``: build it
        with any rate > 0 to have them).
    """
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout must be a probability in [0, 1), got {rate!r}")
    layers = dropout_layers(model)
    if not layers:
        raise ValueError(
            f"{type(model).__name__} has no dropout layers (it was built with dropout=0); build it with a dropout > 0 "
            "(any: this rate replaces it) to set its rate"
        )
    for layer in layers:
        layer.rate[...] = jnp.asarray(rate, jnp.float32)
    return model


def dropout_key(rngs: jax.Array | None, site: int) -> jax.Array | None:
    """The dropout key of one dropout site: each site folds in its own number, so no two sites share a mask."""
    return None if rngs is None else jax.random.fold_in(rngs, site)


def sinusoidal_positions(length: int, width: int) -> np.ndarray:
    """The fixed positional encodings of "Attention Is All You Need": [length, width] float32.

    ``pe[t, 2i] = sin(t / 10000^(2i/width))``, ``pe[t, 2i+1] = cos(...)``. Computed with NumPy, so under ``jit``
    it is a constant of the program, not a parameter.
    """
    t = np.arange(length, dtype=np.float64)[:, None]
    rates = 1.0 / 10000.0 ** (np.arange(0, width, 2, dtype=np.float64) / width)  # [ceil(width / 2)]
    pe = np.zeros((length, width + width % 2))
    pe[:, 0::2] = np.sin(t * rates)
    pe[:, 1::2] = np.cos(t * rates)
    return pe[:, :width].astype(np.float32)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array | None = None) -> jax.Array:
    """Scaled dot-product attention, per head: ``softmax(q k^T / sqrt(d)) v``.

    Args:
      q, k, v: [B, T, heads, d].
      key_mask: [B, T] booleans, True for keys that may be attended to (padding: False), or None.
    Returns:
      [B, T, heads, d].
    """
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    if key_mask is not None:
        # The lowest finite number, not -inf: a query whose keys are all masked gets uniform weights, never NaN.
        logits = jnp.where(key_mask[:, None, None, :], logits, jnp.finfo(logits.dtype).min)
    weights = jax.nn.softmax(logits, axis=-1)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v)


class MultiHeadSelfAttention(nnx.Module):
    """Multi-head self-attention: project to queries, keys and values, attend per head, project back.

    Args:
      width: model width (features per token), divisible by ``num_heads``.
      num_heads: heads; each attends in ``width // num_heads`` dimensions.
      rngs: ``nnx.Rngs`` for initialization.

    Call: ``attn(x, key_mask=None)`` with x [B, T, width] and key_mask [B, T] (True = real token) -> [B, T, width].
    Parameters: ``query``, ``key``, ``value``, ``out`` are ``nnx.Linear(width, width)`` (kernel [in, out]).
    """

    def __init__(self, width: int, num_heads: int, *, rngs: nnx.Rngs):
        check_size("width", width)
        check_size("num_heads", num_heads)
        if width % num_heads:
            raise ValueError(
                f"width must be divisible by num_heads: width={width}, num_heads={num_heads} "
                f"(each head gets width // num_heads dimensions)"
            )
        self.num_heads = num_heads
        self.query = nnx.Linear(width, width, rngs=rngs)
        self.key = nnx.Linear(width, width, rngs=rngs)
        self.value = nnx.Linear(width, width, rngs=rngs)
        self.out = nnx.Linear(width, width, rngs=rngs)

    def _heads(self, x: jax.Array) -> jax.Array:
        return x.reshape(*x.shape[:-1], self.num_heads, x.shape[-1] // self.num_heads)

    def __call__(self, x: jax.Array, key_mask: jax.Array | None = None) -> jax.Array:
        q, k, v = (self._heads(layer(x)) for layer in (self.query, self.key, self.value))
        heads = attention(q, k, v, key_mask)
        return self.out(heads.reshape(x.shape))
