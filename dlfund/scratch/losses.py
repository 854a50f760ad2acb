"""Losses with their gradients with respect to the network's outputs, the first factor of every backward pass.

Each returns ``(loss, grad)`` like ``jax.value_and_grad``: the loss averaged over the batch (what the library's
train step minimizes: the mean of ``dlfund.losses``' per-example losses) and its gradient, the same shape as the
outputs. Averaging over the batch is why every gradient below carries a 1/B.
"""

from __future__ import annotations

import numpy as np

from dlfund.scratch._checks import as_float, check_labels, check_not_empty


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis. Subtracting each row's max first changes nothing mathematically (it cancels
    between numerator and denominator) but keeps exp from overflowing."""
    logits = as_float("logits", logits)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def mse(outputs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean squared error over every entry, and its gradient.

        L = 1/(B K) sum_ij (o_ij - t_ij)^2        dL/do = 2 (o - t) / (B K)

    Args:
      outputs: [B, K]; targets: [B, K].
    Returns:
      (loss, d loss / d outputs [B, K]). The loss equals ``dlfund.losses.mse(outputs, targets).mean()``.
    """
    outputs = as_float("outputs", outputs, ndim=2)
    targets = as_float("targets", targets, ndim=2).astype(outputs.dtype)
    if outputs.shape != targets.shape:
        raise ValueError(f"mse: outputs {outputs.shape} and targets {targets.shape} differ in shape")
    check_not_empty("outputs", outputs)
    error = outputs - targets
    return np.mean(error * error), (2 / error.size) * error


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cross-entropy of softmax(logits) against integer labels, averaged over the batch, and its gradient.

        L = -1/B sum_i log softmax(z_i)[y_i]        dL/dz = (softmax(z) - onehot(y)) / B

    The gradient is that simple because the softmax's Jacobian and the log's 1/p cancel: the error signal is
    "predicted probabilities minus the truth".

    Args:
      logits: [B, C]; labels: [B] integers in [0, C).
    Returns:
      (loss, d loss / d logits [B, C]). The loss equals ``dlfund.losses.softmax_cross_entropy(...).mean()``.
    """
    logits = check_not_empty("logits", as_float("logits", logits, ndim=2))
    batch, classes = logits.shape
    labels = check_labels(labels, classes, batch)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))  # log-softmax, computed stably
    rows = np.arange(batch)
    loss = -log_probs[rows, labels].mean()
    grad = np.exp(log_probs)
    grad[rows, labels] -= 1
    return loss, grad / batch
