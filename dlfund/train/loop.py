"""Many epochs in one compiled call: the end of an epoch as a pure transition over a ``LoopState`` pytree.

``fit`` used to decide everything between epochs on the host: read the epoch's metrics, update early stopping,
copy the best weights, check for NaN, then start the next epoch. Each of those reads waits for the device, and
each decision is a few eager JAX operations; for a small model (an epoch of ~1 ms) that host work costs as much
as the training. Here the decisions are array operations inside the program:

- :func:`end_of_epoch` takes the epoch's row of metrics and returns the next :class:`LoopState` (early-stopping
  update, best weights kept by a select, stop flag); it reads no Python value, so it also runs under ``vmap``.
- :func:`run_epochs` runs up to ``n`` epochs (training, validation, transition) in one ``lax.while_loop``, which
  ends early when early stopping fires or an epoch produces a non-finite loss; the per-epoch rows come back as
  one array. An epoch that went non-finite is not applied: the loop returns the state from before it, and the
  host replays that epoch with the guarded step, which stops right before the bad step (as the per-epoch path).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from dlfund.train import devices as devices_lib
from dlfund.train.early_stopping import EarlyStopping, EarlyStoppingState
from dlfund.train.evaluation import evaluate_arrays
from dlfund.train.execution import _scan_epoch_impl
from dlfund.train.state import TrainState, copy_arrays


class LoopState(NamedTuple):
    """Everything that carries over from one epoch to the next, as a pytree.

    Attributes:
      state: the training state after the last applied epoch.
      stopper: the early-stopping state (None without early stopping).
      best: ``(params, model_state)`` of the best epoch so far (None unless early stopping restores the best).
      epoch: int32, the number of epochs done.
      stopped: bool, early stopping has fired.
      halted: bool, the epoch after ``epoch`` produced a non-finite loss or state (it was not applied).
      limits: early stopping's ``(patience int32, min_delta float32)``: values, not constants of the program.
    """

    state: TrainState
    stopper: EarlyStoppingState | None
    best: tuple[Any, Any] | None
    epoch: jax.Array
    stopped: jax.Array
    halted: jax.Array
    limits: tuple[jax.Array, jax.Array] | None = None


#: Rows one compiled call can return: a call runs at most this many epochs (a longer run takes several calls).
#: Fixed, so that runs of any length share one compiled program; 64 floats per column cost nothing.
ROWS_PER_CALL = 64


@dataclasses.dataclass(frozen=True)
class EpochProgram:
    """The static part of an epoch: what the compiled program is specialized on (hashable by value).

    Attributes:
      batch_size: training batch size.
      metrics: training (and validation) metric accumulators.
      validation: whether rows have ``val_`` columns.
      val_batch_size: validation batch size (device-resident validation data).
      early_stopping: the :class:`EarlyStopping` rule, or None; only its monitor, direction and ``restore_best``
        shape the program (:meth:`of` sets its patience and min_delta aside: they are values in ``LoopState``).
      report: send each finished epoch to :func:`report_to` (moves a progress bar during a long call).
    """

    batch_size: int
    metrics: tuple[Any, ...]
    validation: bool = False
    val_batch_size: int = 1
    early_stopping: EarlyStopping | None = None
    report: bool = False

    @classmethod
    def of(cls, *, early_stopping: EarlyStopping | None = None, **fields: Any) -> EpochProgram:
        """The program for these settings; early stopping's patience and min_delta do not make another one."""
        if early_stopping is not None:
            # The direction is fixed now, as the rule had it ("auto" reads it from the monitor's name).
            mode = "max" if early_stopping.maximize else "min"
            early_stopping = dataclasses.replace(early_stopping, patience=1, min_delta=0.0, mode=mode)
        return cls(early_stopping=early_stopping, **fields)

    @property
    def columns(self) -> list[str]:
        """The history columns of an epoch's row, in order: training metrics, ``val_`` metrics, learning_rate."""
        names = [m.name for m in self.metrics]
        return names + ([f"val_{n}" for n in names] if self.validation else []) + ["learning_rate"]

    @property
    def monitor_index(self) -> int | None:
        return None if self.early_stopping is None else self.columns.index(self.early_stopping.monitor)


def init_loop(
    state: TrainState,
    program: EpochProgram,
    *,
    epoch: int = 0,
    stopper=None,
    best=None,
    early_stopping: EarlyStopping | None = None,
) -> LoopState:
    """The loop state before epoch ``epoch + 1`` (``stopper``/``best``: restored from a run folder, if any;
    ``early_stopping``: the rule whose patience and min_delta apply, default the program's)."""
    stopping = program.early_stopping
    limits = None
    if stopping is not None:
        rule = early_stopping or stopping
        limits = (jnp.asarray(rule.patience, jnp.int32), jnp.asarray(rule.min_delta, jnp.float32))
    if stopping is not None and stopper is None:
        stopper = stopping.init()
    if stopping is not None and stopping.restore_best and best is None:
        # Only a placeholder until an epoch is best (stopper.best_epoch > 0); a copy, since state is donated.
        best = copy_arrays((state.params, state.model_state))
    if stopping is not None and not stopping.restore_best:
        best = None
    loop = LoopState(
        state=state,
        stopper=stopper,
        best=best,
        epoch=jnp.asarray(epoch, jnp.int32),
        stopped=jnp.asarray(False) if stopper is None else jnp.array(stopper.stop),  # a copy: both are donated
        halted=jnp.asarray(False),
        limits=limits,
    )
    # On a mesh, every leaf where the compiled calls return it: each call then gets the same input layout.
    return devices_lib.place(state.layout, loop)


def best_weights(loop: LoopState) -> tuple[Any, Any] | None:
    """The best epoch's ``(params, model_state)``, or None if no epoch has been best yet (or none is kept)."""
    if loop.best is None or loop.stopper is None or int(loop.stopper.best_epoch) <= 0:
        return None
    return loop.best


def _where(keep: jax.Array, new: Any, old: Any) -> Any:
    """``new`` where ``keep``, else ``old``, leaf by leaf (PRNG keys, which never change in a loop, are kept new)."""

    def pick(n, o):
        if jax.dtypes.issubdtype(n.dtype, jax.dtypes.prng_key):
            return n
        return jnp.where(keep, n, o)

    return jax.tree.map(pick, new, old)


def _end_of_epoch_kept(program: EpochProgram, loop: LoopState, row: jax.Array) -> LoopState:
    return _keep_layout(end_of_epoch(program, loop, row))


def end_of_epoch(program: EpochProgram, loop: LoopState, row: jax.Array) -> LoopState:
    """The loop state after an epoch; ``loop.state`` is already that epoch's state, ``row`` [columns] its metrics.

    Pure: the early-stopping update, the best-weights select and the stop flag are array operations.
    """
    epoch = loop.epoch + 1
    stopper, best, stopped = loop.stopper, loop.best, loop.stopped
    stopping = program.early_stopping
    if stopping is not None:
        patience, min_delta = loop.limits
        stopper = stopping.update(stopper, row[program.monitor_index], epoch, patience=patience, min_delta=min_delta)
        if best is not None:
            best = _where(stopper.best_epoch == epoch, (loop.state.params, loop.state.model_state), best)
        stopped = stopper.stop
    return loop._replace(stopper=stopper, best=best, epoch=epoch, stopped=stopped)


#: end_of_epoch as its own program, for the strategies that run an epoch from Python (loop, chunk, stream).
end_of_epoch_jit = jax.jit(_end_of_epoch_kept, static_argnums=0)


_reporter = None


def report_to(callback) -> None:
    """Sets the host function ``callback(epoch, row)`` that programs with ``report=True`` call after each epoch
    (None: nobody listens). One module-level hook, so that a new progress bar does not mean a new program."""
    global _reporter
    _reporter = callback


def _report(epoch, row) -> None:
    if _reporter is not None:
        _reporter(int(epoch), row)


def _epoch(program: EpochProgram, loop: LoopState, x, y, x_val, y_val, order_root) -> tuple[LoopState, jax.Array]:
    """One epoch: train, validate, end it; a non-finite epoch is not applied (``halted`` is set instead)."""
    order_key = jax.random.fold_in(order_root, loop.epoch + 1)
    result = _scan_epoch_impl(
        loop.state, x, y, order_key, batch_size=program.batch_size, metrics=program.metrics, guarded=False
    )
    parts = [jnp.stack(result.metrics).astype(jnp.float32)]
    if program.validation:
        val = evaluate_arrays(result.state, x_val, y_val, batch_size=program.val_batch_size, metrics=program.metrics)
        parts.append(jnp.stack(val).astype(jnp.float32))
    parts.append(result.measurements["learning_rate"][-1:].astype(jnp.float32))
    row = jnp.concatenate(parts)
    ended = end_of_epoch(program, loop._replace(state=result.state), row)
    applied = _where(jnp.logical_not(result.halted), ended, loop)
    if program.report:
        jax.debug.callback(_report, applied.epoch, row)
    return applied._replace(halted=result.halted), row


def _keep_layout(loop: LoopState) -> LoopState:
    """The loop state kept on its training state's layout (several devices; see
    :meth:`dlfund.train.devices.Layout.constrain`), so that the next call gets what this one got."""
    return devices_lib.keep(loop.state.layout, loop)


@functools.partial(jax.jit, static_argnames=("program",), donate_argnums=0)
def run_epochs(loop: LoopState, n, x, y, x_val, y_val, order_root, *, program: EpochProgram):
    """Up to ``n`` (<= :data:`ROWS_PER_CALL`) epochs in one compiled call; stops early when early stopping fires
    or an epoch is non-finite.

    Args:
      loop: the loop state (donated).
      n: int32 scalar, the most epochs to run (an argument, not a constant: every run length shares the program).
      x, y: training data on the device [N, ...], [N]; x_val, y_val: validation data (ignored without it).
      order_root: the key whose ``fold_in(order_root, epoch)`` orders epoch ``epoch``'s batches.
      program: the static epoch program.
    Returns:
      ``(loop, rows)``: rows float32 [ROWS_PER_CALL, columns]; the first ``loop.epoch - start`` are the epochs
      run (a halted epoch has no row: it was not applied).
    """
    start = loop.epoch

    def active(carry):
        loop, _ = carry
        return (loop.epoch - start < n) & jnp.logical_not(loop.stopped) & jnp.logical_not(loop.halted)

    def body(carry):
        loop, rows = carry
        index = loop.epoch - start
        loop, row = _epoch(program, loop, x, y, x_val, y_val, order_root)
        return _keep_layout(loop), rows.at[index].set(row)

    rows = jnp.full((ROWS_PER_CALL, len(program.columns)), jnp.nan, jnp.float32)
    loop, rows = jax.lax.while_loop(active, body, (loop, rows))
    return _keep_layout(loop), devices_lib.keep(loop.state.layout, rows)
