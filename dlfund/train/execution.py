"""How an epoch is executed: the whole epoch as one ``lax.scan``, or one compiled step per batch.

The strategies run the same step over the same batch order, so they compute the same thing; they differ only in
how XLA sees the loop and where the batches come from:

- ``"scan"``: one XLA program per epoch (a ``while`` loop over batches). No per-step dispatch from Python; the
  fastest path measured on CPU for dense models.
- ``"loop"``: one compiled step per batch, called from Python.
- ``"chunk"``: ``CHUNK_STEPS`` steps unrolled into one compiled call (no ``while`` loop, 1/8 of the dispatches).
  Convolutional models on CPU use this: for the benchmark CNN 2,219 examples/s against scan's 1,649 and loop's
  1,438 (``python -m benchmarks.run --task cnn --peers dlfund-chunk,dlfund-scan,dlfund-loop``). XLA:CPU's own
  backward convolutions inside a ``while`` body are slower still (~10x); dlfund's CNN and ResNet take their
  kernel gradients as matmuls (:mod:`dlfund.models.conv_ops`), which a ``while`` body does not slow as much.
- ``"stream"``: one compiled step per batch, the batches read on the host by a background thread (data that does
  not fit on the device; see :mod:`dlfund.train.sources`).

Every strategy is called as ``run(state, data, order_key, *, batch_size, metrics)``: ``data`` is ``(x, y)`` device
arrays for scan and loop, a :class:`StreamData` for stream.

``choose_strategy`` picks one per backend and model; ``dlfund.fit(..., execution=...)`` overrides it.

A step whose loss or gradient norm is not finite is not applied: the state keeps the last finite values and the
rest of the epoch is skipped, so a diverging run ends with usable weights and the exact step that failed. Every
strategy gets there the same way: it runs the epoch without a per-step guard (a select over the whole state costs
7-10% of a compute-bound step) and, only if the epoch produced a non-finite loss or state, replays it from its
starting state with the guarded step (:func:`guarded_step`), which stops right before the bad step.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dlfund.train import devices as devices_lib
from dlfund.train.state import TrainState, copy_arrays
from dlfund.train.step import finite, train_step_with_outputs, update_metrics

Carry = tuple[TrainState, tuple[Any, ...], jax.Array]  # (state, metric states, halted)


class EpochResult(NamedTuple):
    """What one training epoch returns.

    Attributes:
      state: the state after the epoch (after the last finite step, if a step failed).
      metrics: computed training metrics, one per requested metric, over the applied steps.
      measurements: the step measurements stacked over the epoch, each [steps] (the fast scan path leaves out
        ``grad_norm``; a replayed or looped epoch has it).
      halted: True if a step produced a non-finite loss or gradient (that step and the rest were skipped).
    """

    state: TrainState
    metrics: tuple[jax.Array, ...]
    measurements: dict[str, jax.Array]
    halted: jax.Array


def _select(keep_new: jax.Array, new: TrainState, old: TrainState) -> TrainState:
    pick = functools.partial(jax.tree.map, lambda n, o: jnp.where(keep_new, n, o))
    return new.replace(
        params=pick(new.params, old.params),
        model_state=pick(new.model_state, old.model_state),
        opt_state=pick(new.opt_state, old.opt_state),
        step=jnp.where(keep_new, new.step, old.step),
    )


def guarded_step(metrics: tuple[Any, ...], carry: Carry, batch: tuple[jax.Array, jax.Array]):
    """A train step that is applied only while every step so far had a finite loss, gradient and new state.

    Also feeds the batch's per-example outputs to the training-metric accumulators.
    Returns ``(carry, measurements)``.
    """
    state, metric_states, halted = carry
    new_state, measurements, step_out = train_step_with_outputs(state, batch)
    # An update can overflow the weights while the loss and gradient it came from are finite.
    measurements["state_finite"] = _all_finite((new_state.params, new_state.opt_state))
    ok = jnp.logical_not(halted) & finite(measurements) & measurements["state_finite"]
    state = _select(ok, new_state, state)
    if state.layout is not None:
        state = state.layout.constrain_state(state)
    mask = jnp.broadcast_to(ok, step_out.losses.shape).astype(jnp.float32)
    metric_states = _update_metrics(state, metrics, metric_states, batch, step_out, mask)
    return (state, metric_states, jnp.logical_not(ok)), measurements


def _initial_carry(state: TrainState, metrics: tuple[Any, ...]) -> Carry:
    # On a mesh, placed where the compiled steps return it, so that every call gets the same input layout.
    return devices_lib.place(state.layout, (state, tuple(m.init() for m in metrics), jnp.zeros([], bool)))


def epoch_order(key: jax.Array, num_examples: int, batch_size: int) -> jax.Array:
    """A shuffled batch order: int32 [steps, batch_size]; the ragged remainder of the permutation is dropped."""
    steps = num_examples // batch_size
    return jax.random.permutation(key, num_examples)[: steps * batch_size].reshape(steps, batch_size)


def plain_step(metrics: tuple[Any, ...], carry: Carry, batch: tuple[jax.Array, jax.Array]):
    """A train step applied unconditionally (the fast path); feeds the training-metric accumulators too.

    Its measurements leave out the gradient norm: a reduction over every gradient at every step measured 5% of a
    compute-bound MLP's step time. The epoch's finiteness is checked on the losses and the final state instead.
    """
    state, metric_states, halted = carry
    state, measurements, step_out = train_step_with_outputs(state, batch)
    metric_states = _update_metrics(state, metrics, metric_states, batch, step_out, mask=None)
    measurements = {k: v for k, v in measurements.items() if k != "grad_norm"}
    return (state, metric_states, halted), measurements


def _all_finite(tree: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(tree) if jnp.issubdtype(a.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def _update_metrics(state, metrics, metric_states, batch, step_out, mask):
    return update_metrics(metrics, metric_states, state.objective.loss, batch[1], *step_out, mask)


def _scan_epoch_impl(state, x, y, order_key, *, batch_size: int, metrics: tuple[Any, ...], guarded: bool):
    order = epoch_order(order_key, x.shape[0], batch_size)
    step = guarded_step if guarded else plain_step

    def body(carry, idx):
        return step(metrics, carry, (x[idx], y[idx]))

    (state, metric_states, halted), measurements = jax.lax.scan(body, _initial_carry(state, metrics), order)
    if not guarded:
        # A NaN gradient poisons the parameters, so it shows in a later loss or, at the last step, in the state.
        ok = jnp.all(jnp.isfinite(measurements["loss"])) & _all_finite((state.params, state.opt_state))
        halted = jnp.logical_not(ok)
    state = devices_lib.keep(state.layout, state)  # XLA picks the layout of a loop's results: keep the state's
    return EpochResult(state, tuple(m.compute(s) for m, s in zip(metrics, metric_states)), measurements, halted)


# The fast path does not donate its input state: that state is the starting point of the replay below, and keeping
# it costs one copy of the state per epoch (XLA must copy a non-donated input into the loop), not one per step.
_scan_epoch_fast = jax.jit(
    functools.partial(_scan_epoch_impl, guarded=False), static_argnames=("batch_size", "metrics")
)
_scan_epoch_guarded = jax.jit(
    functools.partial(_scan_epoch_impl, guarded=True), static_argnames=("batch_size", "metrics"), donate_argnums=0
)


def scan_epoch(state, data, order_key, *, batch_size: int, metrics: tuple[Any, ...]) -> EpochResult:
    """The whole epoch in one compiled program.

    The program applies every step unconditionally: guarding each step against NaN (a select over the whole state)
    measured 7-10% slower on a compute-bound MLP. Only if the epoch produced a non-finite loss or gradient is it
    replayed from its starting state with the guarded step, which stops exactly before the bad step (same data
    order, same keys, so the same numbers up to there). ``state`` is not donated; do not reuse it after a replay.
    """
    x, y = data
    result = _scan_epoch_fast(state, x, y, order_key, batch_size=batch_size, metrics=metrics)
    if bool(result.halted):
        result = _scan_epoch_guarded(state, x, y, order_key, batch_size=batch_size, metrics=metrics)
    return result


_order = jax.jit(epoch_order, static_argnums=(1, 2))

#: Steps per compiled call of the "chunk" strategy. Measured for the benchmark CNN on XLA:CPU (batch 128):
#: 4 steps 1.21x, 8 steps 1.30x, 16 steps 1.23x the throughput of one step per call; compile time grows with it
#: (about 3 s for 8).
CHUNK_STEPS = 8


@functools.partial(jax.jit, static_argnames=("metrics", "steps", "guarded"), donate_argnums=0)
def _steps(carry, x, y, order, start, *, metrics: tuple[Any, ...], steps: int, guarded: bool):
    """``steps`` train steps unrolled in one program (no ``while`` loop), batches gathered on the device."""
    step = guarded_step if guarded else plain_step
    measured = []
    for k in range(steps):
        idx = jax.lax.dynamic_index_in_dim(order, start + k, keepdims=False)
        carry, m = step(metrics, carry, (x[idx], y[idx]))
        measured.append(m)
    measurements = {name: jnp.stack([m[name] for m in measured]) for name in measured[0]}
    return devices_lib.keep(carry[0].layout, (carry, measurements))


@functools.partial(jax.jit, static_argnames=("metrics", "guarded"), donate_argnums=0)
def _batch_step(carry, x, y, *, metrics: tuple[Any, ...], guarded: bool):
    """One train step on a batch given as arrays (the stream strategy's)."""
    carry, m = (guarded_step if guarded else plain_step)(metrics, carry, (x, y))
    return devices_lib.keep(carry[0].layout, (carry, {name: value[None] for name, value in m.items()}))


@functools.partial(jax.jit, static_argnames=("metrics",))
def _close(carry, measurements, *, metrics: tuple[Any, ...]):
    state, metric_states, halted = carry
    values = tuple(m.compute(s) for m, s in zip(metrics, metric_states))
    # A NaN gradient poisons the parameters, so it shows in a later loss or, at the last step, in the state.
    ok = jnp.logical_not(halted) & jnp.all(jnp.isfinite(measurements["loss"]))
    ok = ok & _all_finite((state.params, state.opt_state))
    return values, jnp.logical_not(ok)


def _per_step_epoch(state, run_batches, metrics) -> EpochResult:
    """Runs ``run_batches(carry, guarded) -> (carry, [measurements])`` unguarded; replays guarded on failure.

    The unguarded pass needs no per-step select; its starting state is copied once per epoch (a device copy of
    parameters and optimizer state) so that a failed epoch can be replayed exactly up to the bad step.
    """
    start = copy_arrays(state)
    carry, parts = run_batches(_initial_carry(state, metrics), guarded=False)
    measurements = {k: jnp.concatenate([p[k] for p in parts]) for k in parts[0]}
    values, halted = _close(carry, measurements, metrics=metrics)
    if bool(halted):
        carry, parts = run_batches(_initial_carry(start, metrics), guarded=True)
        measurements = {k: jnp.concatenate([p[k] for p in parts]) for k in parts[0]}
        values, halted = _close(carry, measurements, metrics=metrics)
    return EpochResult(carry[0], values, measurements, halted)


def _device_epoch(state, data, order_key, *, batch_size: int, metrics: tuple[Any, ...], chunk: int) -> EpochResult:
    x, y = data
    order = _order(order_key, x.shape[0], batch_size)
    if state.layout is not None:
        order = jax.device_put(order, state.layout.replicated)
    steps = order.shape[0]

    def run_batches(carry, guarded):
        parts, start = [], 0
        for size in [chunk] * (steps // chunk) + [1] * (steps % chunk):
            carry, m = _steps(carry, x, y, order, np.int32(start), metrics=metrics, steps=size, guarded=guarded)
            parts.append(m)
            start += size
        return carry, parts

    return _per_step_epoch(state, run_batches, metrics)


def loop_epoch(state, data, order_key, *, batch_size: int, metrics: tuple[Any, ...]) -> EpochResult:
    """One compiled step per batch, dispatched from Python. ``state`` is donated."""
    return _device_epoch(state, data, order_key, batch_size=batch_size, metrics=metrics, chunk=1)


def chunk_epoch(state, data, order_key, *, batch_size: int, metrics: tuple[Any, ...]) -> EpochResult:
    """``CHUNK_STEPS`` steps unrolled per compiled call (the remainder one by one). ``state`` is donated."""
    return _device_epoch(state, data, order_key, batch_size=batch_size, metrics=metrics, chunk=CHUNK_STEPS)


class StreamData(NamedTuple):
    """Training data left on the host: the source and the check applied to each batch as it is read.

    Attributes:
      source: a :class:`dlfund.train.sources.HostSource` (``len`` and ``read(indices) -> (x, y)``).
      prepare: ``(x, y) -> (x, y)`` host batch -> checked arrays; raises ValueError on bad data.
      sharding: where each batch is put (split over a mesh), or None for the default device.
    """

    source: Any
    prepare: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
    sharding: Any = None


def stream_epoch(state, data: StreamData, order_key, *, batch_size: int, metrics: tuple[Any, ...]) -> EpochResult:
    """One compiled step per batch, each batch read and transferred by a background thread. ``state`` is donated.

    The batch order is the device strategies' (the same permutation of the same key), so for the same seed the
    result equals theirs. A failed epoch is replayed by reading its batches again.
    """
    from dlfund.train.sources import Prefetcher

    order = np.asarray(_order(order_key, len(data.source), batch_size))

    def run_batches(carry, guarded):
        parts = []
        with Prefetcher(data.source, order, data.prepare, sharding=data.sharding) as batches:
            for x, y in batches:
                carry, m = _batch_step(carry, x, y, metrics=metrics, guarded=guarded)
                parts.append(m)
        return carry, parts

    return _per_step_epoch(state, run_batches, metrics)


STRATEGIES: dict[str, Callable[..., EpochResult]] = {
    "scan": scan_epoch,
    "loop": loop_epoch,
    "chunk": chunk_epoch,
    "stream": stream_epoch,
}


def _has_convolution(model: nnx.Module) -> bool:
    return any(isinstance(m, (nnx.Conv, nnx.ConvTranspose)) for _, m in nnx.iter_modules(model))


def choose_strategy(model: nnx.Module, requested: str = "auto", *, placement: str = "device") -> str:
    """The execution strategy for this model on this backend (or ``requested`` if it is not "auto").

    Streamed data (``placement="stream"``) always runs the stream strategy.
    """
    if requested not in ("auto", "scan", "loop", "chunk"):
        raise ValueError(f"Unknown execution {requested!r}. Known: auto, scan, loop, chunk.")
    if placement == "stream":
        if requested != "auto":
            raise ValueError(
                f"execution={requested!r} needs the training data on the device, but it is streamed from the host; "
                "use execution='auto' or data_placement='device'"
            )
        return "stream"
    if requested != "auto":
        return requested
    if jax.default_backend() == "cpu" and _has_convolution(model):
        return "chunk"
    return "scan"
