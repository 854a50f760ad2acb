"""The compiled core: pure ``train_step`` and ``eval_step``.

``train_step(state, batch)`` runs the forward pass, the loss (plus regularization penalties), ``grad`` and the Optax
update as one XLA program, with the state donated so parameters are updated in place. It is a pure function of its
inputs: ``jax.vmap`` over a stacked state trains several models at once, and sharding the batch over a device mesh
spreads it over devices.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from dlfund.train.state import TrainState

Batch = tuple[jax.Array, jax.Array]  # (x [B, ...], y [B, ...])


class StepOutputs(NamedTuple):
    """Per-example results of a step, for metric accumulators.

    Attributes:
      outputs: model outputs [B, ...] (logits for classifiers).
      losses: per-example data losses [B].
    """

    outputs: jax.Array
    losses: jax.Array


def global_norm(tree: Any) -> jax.Array:
    """The L2 norm of all leaves of ``tree`` together (a float32 scalar)."""
    return jnp.sqrt(sum((jnp.sum(jnp.square(g.astype(jnp.float32))) for g in jax.tree.leaves(tree)), jnp.zeros([])))


def step_key(state: TrainState) -> jax.Array:
    """The random key of the step about to run: a function of (key, step), so it is reproducible on resume.

    The step splits it in two: one key for dropout, one for augmentation.
    """
    return jax.random.fold_in(state.key, state.step)


def train_step_with_outputs(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array], StepOutputs]:
    """One optimizer step; also returns per-example outputs and losses. Pure; not jitted (callers jit).

    Args:
      state: the training state.
      batch: ``(x, y)``: inputs [B, ...] and targets [B] (class ids) or [B, ...] (regression).
    Returns:
      ``(new_state, measurements, outputs)``; measurements are float32 scalars: ``loss`` (mean data loss),
      ``penalty`` (regularization added to it), ``grad_norm`` (global L2 norm of the gradient, before clipping)
      and ``learning_rate`` (the rate this step used).
    """
    x, y = batch
    objective = state.objective
    dropout_key, augment_key = jax.random.split(step_key(state))
    if state.augment is not None:
        x = state.augment(augment_key, x)

    def objective_fn(params):
        outputs, model_state = state.replace(params=params).apply(x, train=True, key=dropout_key)
        losses = objective.data_losses(outputs, y, state.hyper)
        data_loss = jnp.mean(losses)
        penalty = objective.penalty(params, state.hyper)
        return data_loss + penalty, (data_loss, penalty, model_state, StepOutputs(outputs, losses))

    grads, (data_loss, penalty, model_state, outputs) = jax.grad(objective_fn, has_aux=True)(state.params)
    tx = state.optimizer.tx
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(
        params=optax.apply_updates(state.params, updates),
        model_state=model_state,
        opt_state=opt_state,
        step=state.step + 1,
    )
    measurements = {
        "loss": data_loss,
        "penalty": penalty,
        "grad_norm": global_norm(grads),
        "learning_rate": jnp.asarray(state.optimizer.rate(state.opt_state, state.step), jnp.float32),
    }
    return new_state, measurements, outputs


@functools.partial(jax.jit, donate_argnums=0)
def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step as one compiled XLA program.

    The input ``state`` is donated (its buffers are reused for the result): do not use it after the call. Wrap with
    ``jax.vmap`` to train a stack of states (e.g. several seeds) in one program.

    Args:
      state: a :class:`TrainState` (see :func:`dlfund.create_train_state`).
      batch: ``(x [B, ...], y [B])``.
    Returns:
      the new state and a dict of float32 scalars: loss, penalty, grad_norm, learning_rate.
    """
    new_state, measurements, _ = train_step_with_outputs(state, batch)
    return new_state, measurements


@jax.jit
def eval_step(state: TrainState, batch: Batch) -> StepOutputs:
    """Evaluation-mode forward pass and per-example losses.

    Dropout is off and batch norm uses its running statistics, so each example's output does not depend on the
    others in the batch.

    Returns:
      ``StepOutputs(outputs [B, ...], losses [B])``.
    """
    x, y = batch
    outputs, _ = state.apply(x, train=False)
    return StepOutputs(outputs, state.data_losses(outputs, y))


def update_metrics(
    metrics: tuple[Any, ...],
    metric_states: tuple[Any, ...],
    loss: Any,
    labels: jax.Array,
    outputs: jax.Array,
    losses: jax.Array,
    mask: jax.Array | None = None,
) -> tuple[Any, ...]:
    """Feeds one batch to metric accumulators (training and evaluation alike).

    Args:
      metrics: accumulators (``dlfund.metrics``); metric_states: their states, in the same order.
      loss: the :class:`dlfund.losses.Loss`; it turns outputs into class predictions (none for regression).
      labels: targets [B]; outputs: model outputs [B, ...]; losses: per-example losses [B].
      mask: [B] weights of the real rows (padding 0), or None for all.
    """
    predictions = loss.predict(outputs) if loss.is_classification else None
    return tuple(
        m.update(s, labels=labels, predictions=predictions, losses=losses, mask=mask)
        for m, s in zip(metrics, metric_states)
    )


def finite(measurements: dict[str, Any]) -> jax.Array:
    """True when the step's loss and gradient norm are finite (the update can be kept)."""
    return jnp.isfinite(measurements["loss"]) & jnp.isfinite(measurements["grad_norm"])
