"""A dense (fully connected) layer, z = x W + b, forward and backward by the chain rule.

Shapes follow ``flax.nnx.Linear``: x [B, D], W [D, K] (the library's ``kernel``), b [K], z [B, K].
Given dL/dz (the upstream gradient, [B, K]), the chain rule through z_bk = sum_d x_bd W_dk + b_k gives

    dL/dW = x^T dL/dz      [D, K]: each weight collects (its input) x (the error at its output), over the batch
    dL/db = sum_b dL/dz    [K]:    the bias's input is 1
    dL/dx = dL/dz W^T      [B, D]: what the layer passes back to the layer below
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from dlfund.scratch import losses
from dlfund.scratch._checks import as_float


class DenseGrads(NamedTuple):
    """Gradients of a loss with respect to a dense layer's input and parameters."""

    x: np.ndarray  #: [B, D]
    W: np.ndarray  #: [D, K]
    b: np.ndarray  #: [K]


def _check(x: np.ndarray, W: np.ndarray, b: np.ndarray | None = None) -> None:
    if x.shape[1] != W.shape[0]:
        raise ValueError(f"x has {x.shape[1]} features (shape {x.shape}) but W has {W.shape[0]} rows (shape {W.shape})")
    if b is not None and b.shape != (W.shape[1],):
        raise ValueError(f"b must have shape ({W.shape[1]},), one per column of W {W.shape}; got {b.shape}")


def dense_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """z = x W + b: x [B, D], W [D, K], b [K] -> z [B, K]."""
    x, W, b = as_float("x", x, ndim=2), as_float("W", W, ndim=2), as_float("b", b, ndim=1)
    _check(x, W, b)
    return x @ W + b  # b broadcasts over the batch: the same bias for every example


def dense_backward(dz: np.ndarray, x: np.ndarray, W: np.ndarray) -> DenseGrads:
    """Gradients of the loss w.r.t. x, W and b from dz = dL/dz [B, K] and the forward pass's x [B, D], W [D, K]."""
    dz, x, W = as_float("dz", dz, ndim=2), as_float("x", x, ndim=2), as_float("W", W, ndim=2)
    _check(x, W)
    if dz.shape != (x.shape[0], W.shape[1]):
        raise ValueError(f"dz must have the shape of z = x W, ({x.shape[0]}, {W.shape[1]}); got {dz.shape}")
    return DenseGrads(x=dz @ W.T, W=x.T @ dz, b=dz.sum(axis=0))


LOSSES = {"mse": losses.mse, "softmax_cross_entropy": losses.softmax_cross_entropy}


def dense_loss_and_grads(
    x: np.ndarray, W: np.ndarray, b: np.ndarray, targets: np.ndarray, loss: str = "mse"
) -> tuple[np.ndarray, DenseGrads]:
    """The loss of one dense layer's outputs and its gradients: forward, loss gradient, backward.

    Args:
      x: [B, D]; W: [D, K]; b: [K].
      targets: [B, K] for "mse"; integer labels [B] for "softmax_cross_entropy" (z are then the logits).
      loss: "mse" or "softmax_cross_entropy".
    Returns:
      (loss averaged over the batch, :class:`DenseGrads`).
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; the scratch losses are: {', '.join(LOSSES)}")
    z = dense_forward(x, W, b)
    value, dz = LOSSES[loss](z, targets)
    return value, dense_backward(dz, x, W)
