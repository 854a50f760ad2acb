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

from dlfund.train import freezing as freezing_lib
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


def _objective(trained, state: TrainState, x: jax.Array, y: jax.Array, dropout_key: jax.Array):
    """The mean data loss of ``(x, y)`` plus the penalty, and ``(data_loss, penalty, model_state, outputs)``.

    ``trained``: the parameters being trained (all, unless some are frozen); the frozen ones come from ``state``
    as constants, so no gradient flows to them and no penalty applies to them."""
    objective = state.objective
    params = state.join_params(trained, state.split_params()[1])
    outputs, model_state = state.replace(params=params).apply(x, train=True, key=dropout_key)
    losses = objective.data_losses(outputs, y, state.hyper)
    data_loss = jnp.mean(losses)
    penalty = objective.penalty(trained, state.hyper)
    return data_loss + penalty, (data_loss, penalty, model_state, StepOutputs(outputs, losses))


def _accumulated_gradients(state: TrainState, x, y, dropout_key, k: int):
    """The gradient of the whole batch as the mean of ``k`` micro-batches' gradients, one micro-batch in memory
    at a time (a ``lax.scan``). Batch norm sees each micro-batch alone: it normalizes by the micro-batch's
    statistics and moves its running averages once per micro-batch. Each micro-batch has its own dropout key.

    Returns ``(grads, data_loss, penalty, model_state, StepOutputs [B, ...])`` like the one-batch path.
    """
    if x.shape[0] % k:
        raise ValueError(
            f"a batch of {x.shape[0]} does not split into accumulate_steps={k} equal micro-batches; use a batch "
            f"size that {k} divides"
        )
    micro = x.shape[0] // k
    xs = x.reshape(k, micro, *x.shape[1:])
    ys = y.reshape(k, micro, *y.shape[1:])
    keys = jax.random.split(dropout_key, k)
    layout = state.layout

    trained = state.split_params()[0]

    def body(carry, inputs):
        grad_sum, model_state = carry
        xi, yi, key = inputs
        if layout is not None:
            xi, yi = layout.shard_batch(xi), layout.shard_batch(yi)
        grads, (data_loss, penalty, model_state, outputs) = jax.grad(_objective, has_aux=True)(
            trained, state.replace(model_state=model_state), xi, yi, key
        )
        grad_sum = jax.tree.map(jnp.add, grad_sum, grads)
        return (grad_sum, model_state), (data_loss, penalty, outputs)

    zeros = jax.tree.map(jnp.zeros_like, trained)
    (grad_sum, model_state), (data_losses, penalties, outputs) = jax.lax.scan(
        body, (zeros, state.model_state), (xs, ys, keys)
    )
    grads = jax.tree.map(lambda g: g / k, grad_sum)
    outputs = jax.tree.map(lambda a: a.reshape(k * micro, *a.shape[2:]), outputs)
    return grads, jnp.mean(data_losses), penalties[0], model_state, outputs


def train_step_with_outputs(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array], StepOutputs]:
    """One optimizer step; also returns per-example outputs and losses. Pure; not jitted (callers jit).

    Args:
      state: the training state.
      batch: ``(x, y)``: inputs [B, ...] and targets [B] (class ids) or [B, ...] (regression); with
        ``state.accumulate_steps`` k > 1 the step averages the gradients of k micro-batches of B / k.
    Returns:
      ``(new_state, measurements, outputs)``; measurements are float32 scalars: ``loss`` (mean data loss),
      ``penalty`` (regularization added to it), ``grad_norm`` (global L2 norm of the gradient, before clipping)
      and ``learning_rate`` (the rate this step used).
    """
    x, y = batch
    layout = state.layout
    if layout is not None:  # the batch is split over the devices; XLA sums the gradients across them
        x, y = layout.shard_batch(x), layout.shard_batch(y)
    dropout_key, augment_key = jax.random.split(step_key(state))
    if state.augment is not None:
        x = state.augment(augment_key, x)

    k = state.accumulate_steps
    trained, frozen = state.split_params()
    if k == 1:
        grads, (data_loss, penalty, model_state, outputs) = jax.grad(_objective, has_aux=True)(
            trained, state, x, y, dropout_key
        )
    else:
        grads, data_loss, penalty, model_state, outputs = _accumulated_gradients(state, x, y, dropout_key, k)
    tx = state.optimizer.tx
    updates, opt_state = tx.update(grads, state.opt_state, trained)
    updates = freezing_lib.scale_updates(updates, state.rate_scales)
    new_state = state.replace(
        params=state.join_params(optax.apply_updates(trained, updates), frozen),
        model_state=model_state,
        opt_state=opt_state,
        step=state.step + 1,
    )
    if layout is not None:
        new_state = layout.constrain_state(new_state)
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
    if state.layout is not None:
        x, y = state.layout.shard_batch(x), state.layout.shard_batch(y)
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
