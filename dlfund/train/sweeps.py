"""``dlfund.sweep``: K models (seeds, learning rates, ...) trained as one vmapped program.

Member k is ``fit(model_fn(nnx.Rngs(seed_k)), data, seed=seed_k, learning_rate=lr_k, ...)``: its own
initialization, data order and dropout keys, its own early stopping. The members' train states are stacked on a
leading axis (the traced hyperparameters are arrays in the state, so they stack too) and one compiled call runs
``jax.vmap`` of :func:`dlfund.train.loop.run_epochs` over them: many epochs of training, validation and the
end-of-epoch transition for every member at once.

A member that stops early (or goes non-finite) is frozen inside the program: ``vmap`` of a ``while_loop`` whose
condition differs between members runs while any member is active and keeps the carry of the inactive ones
unchanged. Their compute is not saved, only discarded: a sweep whose members stop at very different epochs pays
for the longest one (``SweepResult.wasted_fraction`` says how much).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from dlfund import _warnings
from dlfund.history import History
from dlfund.models.blocks import set_dropout
from dlfund.train import checks
from dlfund.train import devices as devices_lib
from dlfund.train import loop as loop_lib
from dlfund.train import members as members_lib
from dlfund.train.compiles import CompileWatch
from dlfund.train.fit import (
    NonFiniteLossWarning,
    _best_epoch,
    _call_size,
    _early_stop_message,
    _halt,
    _val_batch_size,
    build_state,
    order_root,
    plan_fit,
)
from dlfund.train.interrupts import InterruptGuard, TrainingInterrupted, newest_checkpoint, quiet_absl
from dlfund.train.options import FitConfig, check_names
from dlfund.train.run import describe_data, describe_model
from dlfund.train.sweep_result import SweepResult
from dlfund.train.sweep_run import SweepRecorder

#: Fit options a sweep does not take, and why.
_NOT_FOR_SWEEPS = {
    "callbacks": "callbacks see one model's epochs on the host; read each member's history from the SweepResult",
}


def stack(trees: Sequence[Any]) -> Any:
    """Pytrees of equal structure stacked leaf by leaf on a new leading axis."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def member_slice(tree: Any, k: int) -> Any:
    """Member ``k`` of a stacked pytree."""
    return jax.tree.map(lambda leaf: leaf[k], tree)


def _set_member(tree: Any, k: int, value: Any) -> Any:
    return jax.tree.map(lambda leaf, v: leaf.at[k].set(v), tree, value)


@functools.partial(jax.jit, static_argnames=("program",), donate_argnums=0)
def _run_members(loops, n, x, y, x_val, y_val, order_roots, *, program):
    """``run_epochs`` for every member at once: ``loops`` and ``order_roots`` are stacked, the data is shared."""

    def one(loop, root):
        return loop_lib.run_epochs(loop, n, x, y, x_val, y_val, root, program=program)

    return jax.vmap(one)(loops, order_roots)


def _member_devices(devices: Any, size: int) -> list[jax.Device]:
    """The devices the member axis is split over: ``None``/"auto": as many local devices as divide the members
    evenly (one on a one-device machine); an int; or a list of devices."""
    local = jax.local_devices()
    if devices in (None, "auto"):
        count = max(d for d in range(1, len(local) + 1) if size % d == 0)
        return local[:count]
    if isinstance(devices, int) and not isinstance(devices, bool):
        if not 1 <= devices <= len(local):
            raise ValueError(f"devices={devices}, but this process has {len(local)} local devices")
        chosen = local[:devices]
    elif isinstance(devices, (list, tuple)) and devices and all(isinstance(d, jax.Device) for d in devices):
        chosen = list(devices)
    else:
        raise ValueError(f"devices must be 'auto', a number of devices or a list of jax devices, got {devices!r}")
    if size % len(chosen):
        raise ValueError(
            f"{size} members do not split evenly over {len(chosen)} devices; use a member count that "
            f"{len(chosen)} divides, or devices=1"
        )
    return chosen


def sweep(
    model_fn: Callable[[nnx.Rngs], nnx.Module],
    data: Any,
    members: dict[str, Sequence[Any]],
    *,
    devices: Any = "auto",
    **fit_options: Any,
) -> SweepResult:
    """Trains one model per member, all members in one compiled program.

    Args:
      model_fn: ``model_fn(rngs) -> model``, called with ``nnx.Rngs(seed)`` for each member (the members'
        models must have the same structure and shapes).
      data: as for :func:`dlfund.fit` (a Dataset or ``(x, y)``; the training data must fit on the device).
      members: a dict of equal-length lists, one value per member: ``seed``, ``learning_rate``,
        ``weight_decay``, ``l2``, ``label_smoothing``, ``dropout`` (``dlfund.models.set_dropout`` on the
        member's model) (see :data:`dlfund.train.members.SWEEPABLE`);
        :func:`dlfund.grid` builds every combination. A member without ``seed`` uses the fit option's seed.
      devices: where the member axis goes: "auto" (the local devices that divide the member count evenly), an
        int, or a list of devices. Members need no communication, so K members on D devices run K/D each.
      **fit_options: every other :func:`dlfund.fit` option, shared by all members (not ``callbacks``,
        ``run_dir`` or ``resume``). ``execution`` must be "auto" or "scan": the whole epoch runs on the device.
    Returns:
      a :class:`SweepResult`.
    Raises:
      ValueError: bad members (unequal lengths, an unknown or program-changing key, an empty list), a fit option
        a sweep does not take, or members whose models differ in structure.
    """
    if not callable(model_fn) or isinstance(model_fn, nnx.Module):
        raise TypeError(
            "model_fn is a function that builds a model from an nnx.Rngs, e.g. "
            "lambda rngs: dlfund.models.MLP(64, (128,), 10, rngs=rngs); got "
            f"{type(model_fn).__name__}"
        )
    check_names(fit_options)
    if jax.process_count() > 1:
        raise ValueError(
            f"dlfund.sweep runs in one process; this is process {jax.process_index()} of {jax.process_count()}. "
            "Spread a sweep over one machine's devices (devices=...), or give each process its own members"
        )
    for name, why in _NOT_FOR_SWEEPS.items():
        if fit_options.get(name):
            raise ValueError(f"dlfund.sweep does not take {name}: {why}")
    if fit_options.get("parallelism", "data") != "data":
        raise ValueError(
            f"dlfund.sweep does not take parallelism={fit_options['parallelism']!r}: a sweep spreads its members "
            "over the devices (devices=...), each member's batch stays whole on its device"
        )
    table = members_lib.member_table(members, fit_options)
    base = FitConfig.of(**fit_options)
    if base.execution not in ("auto", "scan"):
        raise ValueError(
            f"execution={base.execution!r}: a sweep runs whole epochs on the device (the scan strategy); use "
            "execution='auto' or 'scan'"
        )
    if not isinstance(base.optimizer, str) and any(k in members for k in ("learning_rate", "weight_decay")):
        raise ValueError(
            "learning_rate and weight_decay members need the optimizer given by name (e.g. optimizer='adam'): an "
            "Optimizer object or an Optax transformation carries its own rate"
        )
    base = base.replace(execution="scan", callbacks=(), devices=1)  # the member axis is what goes on the devices
    configs = []
    models = []
    for member in table:
        seed = member.get("seed", base.seed)
        model = model_fn(nnx.Rngs(seed))
        if "dropout" in member:  # a value in the model's state, like the other members' values
            try:
                set_dropout(model, float(member["dropout"]))
            except ValueError as error:
                raise ValueError(f"dropout members: {error}") from None
        models.append(model)
        configs.append(members_lib.member_options(base.replace(seed=int(seed)), member, model))
    try:
        plan = plan_fit(models[0], data, configs[0])  # the data is checked and placed once, for every member
    except ValueError as error:
        if "streamed from the host" not in str(error):
            raise
        raise ValueError(
            "a sweep needs the training data on the device, but this data is too large for it and would be "
            "streamed from the host; use a smaller dataset, or fit the members one by one"
        ) from error
    options = plan.options
    decay_term = any(m.get("weight_decay", 0) > 0 for m in table)
    states = []
    for k in range(len(table)):
        if k == 0 and not decay_term:
            states.append(plan.state)  # already built as this member's by the plan
        else:
            states.append(
                build_state(models[k], configs[k], plan.steps_per_epoch, decay_term=decay_term, copy_model=False)
            )
        if jax.tree.structure(states[k]) != jax.tree.structure(states[0]):
            raise ValueError(
                f"member {k}'s model or training state differs in structure from member 0's (model_fn must build "
                "the same architecture for every seed, and the members' options must give the same program)"
            )
        shapes = [np.shape(leaf) for leaf in jax.tree.leaves(states[k])]
        if shapes != [np.shape(leaf) for leaf in jax.tree.leaves(states[0])]:
            raise ValueError(f"member {k}'s parameters differ in shape from member 0's: model_fn must build one shape")
    early_stopping = options.early_stopping
    program = loop_lib.EpochProgram.of(
        batch_size=options.batch_size,
        metrics=plan.metrics,
        validation=plan.val is not None,
        val_batch_size=_val_batch_size(plan.val),
        early_stopping=early_stopping,
        report=False,
    )
    # One batched init for all members (init_loop per member is K times the same few small operations).
    loops = jax.vmap(lambda s: loop_lib.init_loop(s, program, early_stopping=early_stopping))(stack(states))
    roots = stack([order_root(config.seed) for config in configs])
    chosen = _member_devices(devices, len(table))
    x, y = plan.train
    x_val, y_val = plan.val if plan.val is not None else (x[:1], y[:1])
    if len(chosen) > 1:
        mesh = Mesh(np.array(chosen), ("members",))
        split, replicated = NamedSharding(mesh, PartitionSpec("members")), NamedSharding(mesh, PartitionSpec())
        loops, roots = jax.device_put((loops, roots), split)
        x, y, x_val, y_val = jax.device_put((x, y, x_val, y_val), replicated)
    shared = {k: v for k, v in plan.config.items() if k not in ("devices", "parallelism")}  # fit's layout: unused
    config = {**shared, "members": table, "member_devices": len(chosen)}
    for key in table[0]:  # member 0's values of the swept keys are not shared: the members have their own
        if key in ("learning_rate", "weight_decay"):
            config["optimizer"] = {**config["optimizer"], key: "per member"}
        elif key == "seed":
            config["seed"] = "per member"
        elif key == "l2":
            config["regularizers"] = [r if not r.startswith("l2:") else "l2:per member" for r in config["regularizers"]]
        elif key == "label_smoothing":
            config["loss"] = {**config["loss"], "label_smoothing": "per member"}
    recorder = None
    if options.run_dir is not None:
        model = describe_model(models[0])
        if "dropout" in table[0] and model.get("config"):
            model = {**model, "config": {**model["config"], "dropout": "per member"}}
        recorder = SweepRecorder(
            options.run_dir,
            config=config,
            extra={
                "model": model,
                "data": describe_data(data, plan.example_shape, plan.num_classes),
                **(options.run_info or {}),
            },
            resume=options.resume,
            checkpoint_every=options.checkpoint_every,
            keep=checks.check_positive_int("keep_checkpoints", options.keep_checkpoints),
        )
    result = _train_members(
        program, loops, roots, (x, y, x_val, y_val), options, table, configs, plan.train, early_stopping, recorder
    )
    result.config = config
    if recorder is not None:
        try:
            recorder.finish(result)
        finally:
            recorder.close()
    return result


def _train_members(
    program, loops, roots, arrays, options, table, configs, train, early_stopping, recorder
) -> SweepResult:
    """The host side: calls of many epochs for every member, the rows into per-member histories, checkpoints."""
    size, epochs = len(table), options.epochs
    histories = [History() for _ in range(size)]
    halt_reasons: dict[int, str] = {}
    if recorder is not None:
        loops, histories, halt_reasons = recorder.start(loops)
    if all(
        leaf.sharding.is_fully_addressable and len(leaf.sharding.device_set) == 1 for leaf in jax.tree.leaves(loops)
    ):
        loops = devices_lib.place(None, loops)  # one device: all committed, as the calls return them
    epoch_seconds: list[float] = []
    member_epochs = 0  # member-epochs whose rows were kept (the rest of size * calls' epochs was discarded)
    program_epochs = 0
    epoch_time = _EPOCH_TIMES.get((program, size, np.shape(arrays[0])))
    initial = int(np.max(np.asarray(jax.device_get(loops.epoch))))
    bar = tqdm(
        desc=f"sweep ({size} members)", unit="epoch", disable=not options.progress, total=epochs, initial=initial
    )
    guard = InterruptGuard()
    watch = CompileWatch("sweep")
    try:
        with guard.installed():
            while True:
                guard.raise_pending()  # a Ctrl-C that landed where it could not be raised (a gc callback)
                done = np.asarray(jax.device_get(loops.epoch))
                active = ~np.asarray(jax.device_get(loops.stopped)) & ~np.asarray(jax.device_get(loops.halted))
                active &= done < epochs
                if not active.any():
                    break
                start_epoch = int(done[active].max())
                call = _call_size(options.epochs_per_call, start_epoch, epochs, recorder, (), "scan", epoch_time)
                start = time.perf_counter()
                with watch.call(loops, start_epoch + 1):
                    loops, rows = _run_members(loops, np.int32(call), *arrays, roots, program=program)
                rows, ran, halted = jax.device_get((rows, loops.epoch, loops.halted))
                seconds = time.perf_counter() - start
                ran = np.asarray(ran) - done
                longest = int(ran.max())
                if longest:
                    if len(_EPOCH_TIMES) >= 256:
                        _EPOCH_TIMES.clear()
                    epoch_time = _EPOCH_TIMES[(program, size, np.shape(arrays[0]))] = seconds / longest
                    epoch_seconds.extend([seconds / longest] * longest)
                    program_epochs += longest
                for k in range(size):
                    member_epochs += int(ran[k])
                    for i in range(int(ran[k])):
                        row = {"epoch": int(done[k]) + 1 + i}
                        row.update({c: float(v) for c, v in zip(program.columns, rows[k][i])})
                        histories[k].append(row)
                for k in map(int, np.flatnonzero(np.asarray(halted))):
                    if k in halt_reasons:
                        continue
                    state, halt_reasons[k] = _halt(
                        program, member_slice(loops.state, k), train, member_slice(roots, k),
                        int(ran[k] + done[k]) + 1, "scan", None,
                    )  # fmt: skip
                    loops = loops._replace(state=_set_member(loops.state, k, state))
                    _warnings.warn(f"sweep member {k} ({table[k]}): {halt_reasons[k]}", NonFiniteLossWarning)
                furthest = int(np.max(np.asarray(jax.device_get(loops.epoch))))
                bar.update(furthest - bar.n)
                if recorder is not None:
                    finished = not _any_active(loops, epochs)
                    if finished or furthest % recorder.checkpoint_every == 0:
                        with guard.protect():
                            recorder.checkpoint(furthest, loops, histories, halt_reasons)
    except KeyboardInterrupt as interrupt:
        saved = None
        if recorder is not None:
            with quiet_absl():
                recorder.close()
            saved = newest_checkpoint(recorder.run_dir)
        done_epochs = int(np.max(np.asarray(jax.device_get(loops.epoch))))
        raise TrainingInterrupted(done_epochs, saved, None if recorder is None else recorder.run_dir) from interrupt
    except BaseException:
        if recorder is not None:
            recorder.close()
        raise
    finally:
        bar.close()

    stopped = np.asarray(jax.device_get(loops.stopped))
    stop_reasons: list[str | None] = []
    best_epochs: list[int | None] = []
    for k in range(size):
        stopper = None if loops.stopper is None else member_slice(loops.stopper, k)
        if k in halt_reasons:
            stop_reasons.append(halt_reasons[k])
        elif stopped[k]:
            stop_reasons.append(_early_stop_message(early_stopping, stopper))
        else:
            stop_reasons.append(None)
        best_epochs.append(_best_epoch(histories[k], early_stopping, stopper))
    has_best = np.zeros(size, bool) if loops.best is None else np.asarray(jax.device_get(loops.stopper.best_epoch)) > 0
    for k, history in enumerate(histories):
        history.selected_epoch, history.restored_best = best_epochs[k], bool(has_best[k])
    return SweepResult(
        members=[dict(m) for m in table],
        histories=histories,
        best_epochs=best_epochs,
        stop_reasons=stop_reasons,
        state=loops.state,
        best_weights=loops.best,
        restored=has_best,
        monitor=_monitor(early_stopping, histories),
        epoch_seconds=epoch_seconds,
        wasted_fraction=0.0 if not program_epochs else 1.0 - member_epochs / (size * program_epochs),
        seeds=[c.seed for c in configs],
    )


def _any_active(loops, epochs: int) -> bool:
    done, stopped, halted = (np.asarray(a) for a in jax.device_get((loops.epoch, loops.stopped, loops.halted)))
    return bool((~stopped & ~halted & (done < epochs)).any())


def _monitor(early_stopping, histories) -> tuple[str, str]:
    if early_stopping is not None:
        return early_stopping.monitor, "max" if early_stopping.maximize else "min"
    return ("val_loss" if histories and "val_loss" in histories[0] else "loss"), "min"


_EPOCH_TIMES: dict[Any, float] = {}
