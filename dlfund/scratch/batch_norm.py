"""Batch normalization (training mode), forward and backward, and its running statistics.

For each feature (the last axis; statistics over every other axis, i.e. over the batch, and over height and width
for images [B, H, W, C]), with N the number of values averaged:

    mu = mean(x)    var = mean((x - mu)^2)    xhat = (x - mu) / sqrt(var + eps)    out = gamma xhat + beta

Backward: dbeta = sum(dout), dgamma = sum(dout * xhat), and with dxhat = dout * gamma,

    dx = 1/sqrt(var + eps) * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))

The last two terms exist because mu and var depend on every x in the batch: the gradient of one example depends on
the others. They remove from dxhat its mean and its component along xhat, so sum(dx) = 0 and sum(dx * xhat) = 0.

Evaluation uses running averages instead of batch statistics, updated in training as ``flax.nnx.BatchNorm`` does:
``running = momentum * running + (1 - momentum) * batch`` (momentum 0.99 by default: the *old* value's weight),
with the biased batch variance (divided by N, not N - 1).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from dlfund.scratch._checks import as_float, check_not_empty, check_positive, check_rate


class BatchNormCache(NamedTuple):
    """What the backward pass needs from the forward pass."""

    xhat: np.ndarray  #: normalized inputs, the shape of x
    inv_std: np.ndarray  #: 1 / sqrt(var + eps), [F]
    gamma: np.ndarray  #: scale [F]
    mean: np.ndarray  #: batch mean [F]
    var: np.ndarray  #: batch variance [F] (biased: divided by N)


def _features(name: str, x: np.ndarray, *vectors: tuple[str, np.ndarray]) -> tuple[int, ...]:
    if x.ndim < 2:
        raise ValueError(f"{name} must have a batch axis and a feature axis, [B, ..., F]; got shape {x.shape}")
    for vector_name, vector in vectors:
        if vector.shape != (x.shape[-1],):
            raise ValueError(
                f"{vector_name} must have shape ({x.shape[-1]},), one per feature of {name} {x.shape}; "
                f"got {vector.shape}"
            )
    return tuple(range(x.ndim - 1))  # every axis but the features'


def batch_norm_forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, *, eps: float = 1e-5
) -> tuple[np.ndarray, BatchNormCache]:
    """Training-mode batch norm with the batch's own statistics.

    Args:
      x: [B, F] or [B, ..., F] (features last, as flax).
      gamma: scale [F] (flax's ``scale``); beta: shift [F] (flax's ``bias``).
      eps: added to the variance (flax's ``epsilon``, 1e-5 by default).
    Returns:
      (out, cache): out has x's shape; ``cache.mean`` and ``cache.var`` feed :func:`update_running_stats`.
    """
    x, gamma, beta = as_float("x", x), as_float("gamma", gamma), as_float("beta", beta)
    axes = _features("x", x, ("gamma", gamma), ("beta", beta))
    check_not_empty("x", x)
    eps = check_positive("eps", eps)
    mean = x.mean(axis=axes)
    # Two passes (mean first, then mean squared deviation): flax's default computes E[x^2] - E[x]^2 in one pass,
    # equal up to rounding for data whose mean is not much larger than its spread.
    var = ((x - mean) ** 2).mean(axis=axes)
    inv_std = 1 / np.sqrt(var + np.asarray(eps, x.dtype))
    xhat = (x - mean) * inv_std
    return gamma * xhat + beta, BatchNormCache(xhat, inv_std, gamma, mean, var)


def batch_norm_backward(dout: np.ndarray, cache: BatchNormCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients (dx, dgamma, dbeta) from dout = d loss / d out (x's shape) and the forward cache."""
    dout = as_float("dout", dout)
    if dout.shape != cache.xhat.shape:
        raise ValueError(f"dout must have the shape of the forward pass's x, {cache.xhat.shape}; got {dout.shape}")
    axes = tuple(range(dout.ndim - 1))
    dbeta = dout.sum(axis=axes)
    dgamma = (dout * cache.xhat).sum(axis=axes)
    dxhat = dout * cache.gamma
    # mean and var depend on every x: the two subtracted terms are the paths through them
    dx = cache.inv_std * (dxhat - dxhat.mean(axis=axes) - cache.xhat * (dxhat * cache.xhat).mean(axis=axes))
    return dx, dgamma, dbeta


def update_running_stats(
    running_mean: np.ndarray,
    running_var: np.ndarray,
    batch_mean: np.ndarray,
    batch_var: np.ndarray,
    momentum: float = 0.99,
) -> tuple[np.ndarray, np.ndarray]:
    """One step of the exponential moving averages, flax's convention: momentum is the weight of the old value.

    running = momentum * running + (1 - momentum) * batch, for the mean and the (biased) variance. flax starts
    them at 0 and 1; with momentum 0.99 they take a few hundred steps to forget that start.
    """
    momentum = check_rate("momentum", momentum)
    running_mean, running_var = as_float("running_mean", running_mean), as_float("running_var", running_var)
    batch_mean, batch_var = as_float("batch_mean", batch_mean), as_float("batch_var", batch_var)
    shapes = {a.shape for a in (running_mean, running_var, batch_mean, batch_var)}
    if len(shapes) != 1:
        raise ValueError(
            f"running_mean {running_mean.shape}, running_var {running_var.shape}, batch_mean {batch_mean.shape} "
            f"and batch_var {batch_var.shape} must have one shape"
        )
    for name, var in (("running_var", running_var), ("batch_var", batch_var)):
        if np.any(var < 0) or not np.all(np.isfinite(var)):
            raise ValueError(f"{name} must be finite and >= 0 (a variance); got minimum {np.min(var)}")
    # 1 - momentum is formed before rounding to float32, as flax does (momentum is a Python float there)
    m, rest = np.asarray(momentum, running_mean.dtype), np.asarray(1 - momentum, running_mean.dtype)
    return m * running_mean + rest * batch_mean, m * running_var + rest * batch_var


def batch_norm_inference(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    running_mean: np.ndarray,
    running_var: np.ndarray,
    *,
    eps: float = 1e-5,
) -> np.ndarray:
    """Evaluation-mode batch norm: the running statistics replace the batch's, so each example's output depends on
    that example alone."""
    x, gamma, beta = as_float("x", x), as_float("gamma", gamma), as_float("beta", beta)
    running_mean, running_var = as_float("running_mean", running_mean), as_float("running_var", running_var)
    _features("x", x, ("gamma", gamma), ("beta", beta), ("running_mean", running_mean), ("running_var", running_var))
    eps = check_positive("eps", eps)
    return gamma * (x - running_mean) / np.sqrt(running_var + np.asarray(eps, x.dtype)) + beta
