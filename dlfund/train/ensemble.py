"""Ensembles: several trained classifiers as one model whose probabilities are the members' average.

:class:`Ensemble` is an NNX module, so everything that takes a model takes it: ``dlfund.evaluate(ensemble, ds)``
reports the accuracy of the averaged prediction and the cross-entropy of the averaged probabilities,
``dlfund.predict_classes(ensemble, x)`` its classes. :func:`ensemble_predict` gives the averaged probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dlfund import losses as losses_lib


class Ensemble(nnx.Module):
    """The average of several classifiers' probabilities, as one classifier.

    Its outputs are logits of the averaged probabilities: for softmax members ``log(mean_k softmax(f_k(x)))``
    [B, C], whose softmax is the average; for one-logit sigmoid members the logit of the averaged probability,
    in the members' output shape. Computed in log space (``logsumexp``), so a confident member does not overflow.

    Args:
      members: trained models with the same outputs (e.g. ``sweep_result.models()``), each used in eval mode.
      loss: the members' loss (default: the first member's ``default_loss``); it must be a likelihood
        (softmax or binary cross-entropy), since only those outputs are probabilities.
    """

    def __init__(self, members: Sequence[nnx.Module], *, loss: Any = None):
        members = list(members)
        if not members:
            raise ValueError("an ensemble needs at least one model")
        resolved = losses_lib.for_model(members[0], loss)
        if resolved.link not in ("softmax", "sigmoid"):
            raise ValueError(
                f"an ensemble averages probabilities, but the {resolved.name!r} loss's outputs are not probabilities "
                "(use models trained with softmax or binary cross-entropy)"
            )
        for member in members:
            member.eval()
        self.members = nnx.List(members)
        self.link = resolved.link
        self.default_loss = "softmax_cross_entropy" if resolved.link == "softmax" else "binary_cross_entropy"

    def check_input(self, example_shape: tuple[int, ...]) -> None:
        """The first member's input check (a method, not a stored bound method: equal ensembles then have equal
        graph definitions and share compiled programs)."""
        check = getattr(self.members[0], "check_input", None)
        if check is not None:
            check(example_shape)

    def __call__(self, x: jax.Array, *, rngs: jax.Array | None = None) -> jax.Array:
        """Logits of the averaged probabilities for x [B, ...] (``rngs`` is ignored: members run in eval mode)."""
        outputs = [member(x) for member in self.members]
        log_k = math.log(len(outputs))
        if self.link == "softmax":
            log_probs = jnp.stack([jax.nn.log_softmax(o, axis=-1) for o in outputs])
            return jax.nn.logsumexp(log_probs, axis=0) - log_k
        scores = jnp.stack(outputs)
        log_p = jax.nn.logsumexp(jax.nn.log_sigmoid(scores), axis=0) - log_k
        log_not_p = jax.nn.logsumexp(jax.nn.log_sigmoid(-scores), axis=0) - log_k
        return log_p - log_not_p


def as_ensemble(models_or_sweep: Any, loss: Any = None) -> Ensemble:
    """An :class:`Ensemble` from an ``Ensemble``, a :class:`dlfund.SweepResult` or a list of models."""
    if isinstance(models_or_sweep, Ensemble):
        return models_or_sweep
    if hasattr(models_or_sweep, "models") and hasattr(models_or_sweep, "histories"):
        return Ensemble(models_or_sweep.models(), loss=loss or models_or_sweep.state.objective.loss)
    if isinstance(models_or_sweep, nnx.Module):
        return Ensemble([models_or_sweep], loss=loss)
    if isinstance(models_or_sweep, (list, tuple)) and all(isinstance(m, nnx.Module) for m in models_or_sweep):
        return Ensemble(list(models_or_sweep), loss=loss)
    raise TypeError(
        f"expected a model, a list of models, a dlfund.SweepResult or an Ensemble, got {type(models_or_sweep).__name__}"
    )


def ensemble_predict(models_or_sweep: Any, x: Any, *, loss: Any = None, batch_size: int | None = None) -> np.ndarray:
    """Averaged class probabilities of several classifiers for already-normalized inputs x [N, ...].

    Args:
      models_or_sweep: a :class:`dlfund.SweepResult` (each member's :meth:`~dlfund.SweepResult.model`), a list
        of models, or an :class:`Ensemble`.
      x: [N, ...] inputs in the models' input form.
      loss: the members' loss, default their ``default_loss`` (a sweep's own loss for a SweepResult).
      batch_size: rows per compiled batch (default: ``dlfund.predict``'s).
    Returns:
      float32 [N, C]: the mean of the members' softmax probabilities ([N, 2] for one-logit sigmoid members,
      column 1 the positive class); rows sum to 1.
    """
    from dlfund.train.evaluation import EVAL_BATCH_SIZE, predict

    ensemble = as_ensemble(models_or_sweep, loss)
    logits = predict(ensemble, x, batch_size=batch_size or EVAL_BATCH_SIZE)
    return np.asarray(losses_lib.get(ensemble.default_loss).probabilities(jnp.asarray(logits)), np.float32)
