"""Inverted dropout, forward and backward.

In training, each unit is kept with probability q = 1 - rate and zeroed otherwise; the kept units are divided by
q, so every unit's expected value is unchanged, E[out] = q * x / q = x, and evaluation can use the network as it is
(no rescaling at test time: that is what "inverted" means). The backward pass routes the gradient through the
same mask with the same scale: d out / d x = mask / q.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dlfund.scratch._checks import as_float, check_rate


def dropout_mask(shape: tuple[int, ...], rate: float, rng: Any) -> np.ndarray:
    """A boolean keep-mask of ``shape``, True with probability 1 - rate.

    ``rng`` is the randomness, always explicit (a fixed or reused one gives the same mask every step):
      - a ``numpy.random.Generator``: draws ``uniform < 1 - rate``;
      - a JAX PRNG key: ``jax.random.bernoulli(key, 1 - rate, shape)``, the draw ``dlfund.models.Dropout`` makes,
        so the same key gives the library's mask exactly.
    """
    keep = np.float32(1) - np.float32(check_rate("rate", rate))  # in float32, as the library computes it
    shape = tuple(shape)
    if isinstance(rng, np.random.Generator):
        return rng.random(shape) < keep
    import jax  # only for JAX keys: the same Bernoulli draw as the library's layer

    return np.asarray(jax.random.bernoulli(rng, keep, shape))


def dropout_forward(
    x: np.ndarray, rate: float, rng: Any = None, *, training: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Inverted dropout.

    Args:
      x: activations, any shape.
      rate: probability of zeroing each unit, in [0, 1).
      rng: a NumPy ``Generator`` or a JAX key (see :func:`dropout_mask`); needed in training.
      training: False is evaluation: the identity, every unit kept.
    Returns:
      (out, mask): out = where(mask, x / (1 - rate), 0), same shape and dtype as x; mask is boolean, for the
      backward pass.
    """
    x = as_float("x", x)
    rate = check_rate("rate", rate)
    if not training:
        return x, np.ones(x.shape, bool)
    if rng is None:
        raise ValueError("dropout in training needs rng: a numpy Generator or a JAX key (a new one every step)")
    mask = dropout_mask(x.shape, rate, rng)
    keep = np.float32(1) - np.float32(rate)
    return np.where(mask, x / keep.astype(x.dtype), np.zeros((), x.dtype)), mask


def dropout_backward(dout: np.ndarray, mask: np.ndarray, rate: float) -> np.ndarray:
    """d loss / d x = dout * mask / (1 - rate): dropped units get no gradient, kept ones the same 1/(1 - rate)."""
    dout = as_float("dout", dout)
    mask = np.asarray(mask, bool)
    if dout.shape != mask.shape:
        raise ValueError(f"dout {dout.shape} and mask {mask.shape} must have the same shape")
    keep = np.float32(1) - np.float32(check_rate("rate", rate))
    return np.where(mask, dout / keep.astype(dout.dtype), np.zeros((), dout.dtype))
