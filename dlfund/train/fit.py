"""``dlfund.fit``: a thin host loop over compiled epochs, with validation, early stopping and callbacks."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from dlfund import _warnings
from dlfund import losses as losses_lib
from dlfund import metrics as metrics_lib
from dlfund import optimizers as optimizers_lib
from dlfund.history import History
from dlfund.train import checks, sources
from dlfund.train import devices as devices_lib
from dlfund.train import loop as loop_lib
from dlfund.train import precision as precision_lib
from dlfund.train.callbacks import Callback
from dlfund.train.compiles import CompileWatch
from dlfund.train.devices import Layout
from dlfund.train.early_stopping import EarlyStopping
from dlfund.train.evaluation import (
    EVAL_BATCH_SIZE,
    classes_from_outputs,
    evaluate_arrays,
    evaluate_source,
    output_shape,
)
from dlfund.train.execution import STRATEGIES, StreamData, _scan_epoch_guarded, choose_strategy
from dlfund.train.interrupts import InterruptGuard, TrainingInterrupted, newest_checkpoint, quiet_absl
from dlfund.train.options import FitConfig
from dlfund.train.run import RunDirectoryError, RunRecorder, describe_data, describe_model
from dlfund.train.state import TrainState, copy_arrays, create_train_state

# Streams derived from the seed: one for the state (dropout), one for the data order.
_STATE_STREAM, _ORDER_STREAM = 0, 1


class NonFiniteLossWarning(RuntimeWarning):
    """Training stopped because the loss or gradient became NaN/Inf."""


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
      model: the trained model (the same object that was passed in, updated in place and left in eval mode);
        with early stopping and ``restore_best``, it holds the best epoch's weights.
      history: per-epoch metrics (:class:`dlfund.History`).
      best_epoch: 1-based epoch with the best monitored value (early stopping's monitor, else ``val_loss``, else
        ``loss``); None if no epoch finished.
      state: the final :class:`TrainState` (last epoch, not the restored best), e.g. to continue training.
      stop_reason: why training ended early (early stopping, non-finite loss, a callback), or None.
      execution: the epoch strategy used ("scan", "chunk", "loop" or "stream").
      epoch_seconds: wall time of each epoch (the first includes compilation); the epochs of one compiled call
        (``epochs_per_call``) share its time equally. One entry per history row, and after a stop on a non-finite
        loss one more: the partial epoch replayed to find the step (``sum`` is the whole training time).
    """

    model: nnx.Module
    history: History
    best_epoch: int | None
    state: TrainState
    stop_reason: str | None
    execution: str
    epoch_seconds: list[float]
    config: dict[str, Any]

    def __repr__(self) -> str:
        """A few lines (a notebook cell ending in ``result`` shows them): epochs, best, stop reason, metrics."""
        restored = ", weights restored" if self.history.restored_best else ""
        best = "" if self.best_epoch is None else f" (best {self.best_epoch}{restored})"
        lines = [
            f"FitResult({type(self.model).__name__}, {len(self.history)} epochs{best}, execution={self.execution!r}, "
            f"{sum(self.epoch_seconds):.2f} s)"
        ]
        rows = {"last epoch": self.history.last()}
        if self.best_epoch is not None and self.best_epoch != rows["last epoch"].get("epoch"):
            rows[f"best epoch {self.best_epoch}"] = next(
                (r for r in self.history.rows if r.get("epoch") == self.best_epoch), {}
            )
        for label, row in rows.items():
            values = [f"{k}={v:.4g}" for k, v in row.items() if k != "epoch" and isinstance(v, float)]
            if values:
                lines.append(f"  {label}: {', '.join(values)}")
        if self.stop_reason:
            reason = self.stop_reason if len(self.stop_reason) <= 200 else self.stop_reason[:197] + "..."
            lines.append(f"  stopped: {reason}")
        lines.append("  fields: model, history, best_epoch, state, stop_reason, execution, epoch_seconds, config")
        return "\n".join(lines)


def _is_dataset(data: Any) -> bool:
    """A Dataset, or the SplitReaders of open_splits: splits that know their classes and normalization."""
    return hasattr(data, "train") and hasattr(data, "num_classes")


def _split_data(data: Any, validation_data: Any) -> tuple[Any, Any, int | None]:
    """(train split, validation split or None, dataset num_classes or None); a split is a pair or a reader."""
    if _is_dataset(data):
        val = validation_data if validation_data is not None else getattr(data, "val", None)
        if val is not None and _num_examples(val) == 0:  # loaded with val_fraction=0
            val = None
        return data.train, val, data.num_classes
    return data, validation_data, None


def _num_examples(split: Any) -> int:
    return len(split) if sources.is_host_source(split) else len(split[0])


@dataclasses.dataclass
class _Split:
    """One split as given: checked arrays in memory, or a lazy reader whose batches are checked as they are read."""

    name: str
    arrays: tuple[np.ndarray, np.ndarray] | None = None
    reader: Any = None
    value_range: tuple[float, float] | None = None  # the inputs' (min, max), for arrays

    @classmethod
    def of(cls, name: str, split: Any) -> _Split:
        if sources.is_host_source(split):
            if len(split) == 0:
                raise ValueError(f"the {name} split is empty: there is nothing to train or evaluate on")
            return cls(name, reader=split)
        arrays, value_range = checks.as_split_with_range(name, split)
        return cls(name, arrays=arrays, value_range=value_range)

    def __len__(self) -> int:
        return len(self.arrays[0]) if self.arrays is not None else len(self.reader)

    @property
    def example_shape(self) -> tuple[int, ...]:
        if self.arrays is not None:
            return tuple(self.arrays[0].shape[1:])
        return sources.example_shape(self.reader, self.name)

    def place(self, placement: str, loss, num_classes, layout: Layout | None = None):
        """Device arrays ``(x, y)`` for ``placement="device"`` (on a mesh: a whole copy on every device, see
        :mod:`dlfund.train.devices`); a ``StreamData`` for ``"stream"``."""
        if placement == "device":
            x, y = self.arrays if self.arrays is not None else checks.as_split(self.name, self.reader.read(None))
            y = checks.check_targets(self.name, y, loss, num_classes)
            if layout is None:
                return jax.device_put((x, y))
            return layout.put(x, layout.replicated), layout.put(y, layout.replicated)
        if self.arrays is not None:
            x, y = self.arrays
            source = sources.ArraySource(x, checks.check_targets(self.name, y, loss, num_classes))
        else:
            source = self.reader
        sharding = None if layout is None else layout.batch
        return StreamData(source, functools.partial(checks.check_batch, self.name, loss, num_classes), sharding)


def _resolve_metrics(names: Sequence[Any], num_classes: int | None) -> tuple[Any, ...]:
    resolved = [metrics_lib.get_metric("loss", num_classes)]
    for spec in names:
        if num_classes is None and spec != "loss":
            raise ValueError(f"metric {spec!r} needs class predictions, but this is a regression loss; use metrics=()")
        metric = metrics_lib.get_metric(spec, num_classes)
        if isinstance(metric, metrics_lib.ConfusionMatrix):
            raise ValueError("the confusion matrix is not a per-epoch scalar; get it from dlfund.evaluate(...)")
        if metric.name not in [m.name for m in resolved]:
            resolved.append(metric)
    return tuple(resolved)


def fit(
    model: nnx.Module,
    data: Any,
    *,
    optimizer: str | Any = "adam",
    learning_rate: float | None = None,
    epochs: int = 10,
    batch_size: int = 32,
    seed: int = 0,
    weight_decay: float = 0.0,
    early_stopping: EarlyStopping | None = None,
    metrics: Sequence[Any] | None = None,
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
    validation_data: Any = None,
    loss: str | Any = None,
    label_smoothing: float | None = None,
    regularizers: Sequence[Any] = (),
    schedule: str = "constant",
    clip_norm: float | None = None,
    optimizer_options: dict[str, Any] | None = None,
    schedule_options: dict[str, Any] | None = None,
    execution: str = "auto",
    data_placement: str = "auto",
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
    checkpoint_every: int = 1,
    keep_checkpoints: int = 3,
    tensorboard: bool = True,
    run_info: dict[str, Any] | None = None,
    augment: Any = None,
    epochs_per_call: int | str = "auto",
    devices: Any = "auto",
    parallelism: str = "data",
    accumulate_steps: int = 1,
    precision: str = "float32",
    freeze: Any = None,
    freeze_batch_norm: bool = True,
    learning_rates: dict[str, float] | None = None,
) -> FitResult:
    """Trains ``model`` on ``data``; everything is validated before anything compiles.

    Each epoch shuffles the training set (on the device) and runs ``len(train) // batch_size`` optimizer steps;
    the ragged remainder is skipped for that epoch (a different remainder each epoch, since the order changes).
    Validation and evaluation use every example.

    Args:
      model: a Flax NNX module, e.g. ``dlfund.models.MLP(64, (128,), 10, rngs=nnx.Rngs(0))``.
      data: a :class:`dlfund.data.Dataset` (its train split, validated on its val split), the lazy
        :class:`dlfund.data.SplitReaders` of ``dlfund.data.open_splits`` (read into memory or streamed, see
        ``data_placement``), or an ``(x, y)`` pair.
      optimizer: sgd, momentum, nesterov, rmsprop, adam, adamw, adagrad, an ``Optimizer`` or an Optax
        transformation.
      learning_rate: peak learning rate, > 0; None: 1e-3 (Adam's published default) for an optimizer given by
        name. An ``Optimizer`` or an Optax transformation carries its own rate; for a transformation this value is
        only what the history's ``learning_rate`` column reports (None: NaN, not a rate the run never used).
      epochs: passes over the training set, >= 1.
      batch_size: examples per step, >= 1 (larger than the training set: one full batch, with a warning).
      seed: seeds the data order and dropout; the same seed gives the same history on the same machine.
      weight_decay: decoupled weight decay (skips biases and normalization scales).
      early_stopping: an :class:`EarlyStopping`, or None to train all epochs.
      metrics: training/validation metrics besides the loss, by name ("accuracy", "f1", "precision_macro", ...)
        or accumulator; default ``("accuracy",)`` for classification, none for regression.
      callbacks: :class:`dlfund.Callback` objects.
      progress: show a tqdm progress bar (works in Jupyter).
      validation_data: an ``(x, y)`` pair (overrides a Dataset's val split).
      loss: a name, ``Loss`` or callable; default: the model's ``default_loss``.
      label_smoothing: for softmax cross-entropy.
      regularizers: penalties added to the loss, e.g. ``("l2:1e-4",)``.
      schedule: learning-rate schedule: constant, cosine, warmup_cosine, exponential, step.
      clip_norm: clip the global gradient norm (None: off).
      optimizer_options / schedule_options: extra keyword arguments for the Optax optimizer / the schedule.
      execution: "auto" (measured best per backend and model), "scan", "chunk" or "loop".
      data_placement: "auto" (on the device if the training set takes at most 25% of its memory, else streamed
        from the host by a background thread), "device" or "stream"; the choice is logged (logger "dlfund") and
        recorded in the result's config.
      run_dir: write a run folder there (config, history, TensorBoard, checkpoints, plots, weights; see
        :mod:`dlfund.train.run`). None: nothing is written.
      resume: continue the run in ``run_dir`` from its newest usable checkpoint (same configuration required);
        the result is bit-identical to an uninterrupted run on the same machine.
      checkpoint_every: with ``run_dir``, save a checkpoint every this many epochs (and after the last).
      keep_checkpoints: how many of the latest checkpoints to keep; the best by the monitored metric (early
        stopping's, else ``val_loss``, else ``loss``) is kept as well.
      tensorboard: with ``run_dir``, write TensorBoard event files.
      run_info: more JSON-friendly information to record in ``config.json`` (the CLI records its options).
      augment: on-device augmentation of training images, e.g. ``("crop:4", "flip")`` (see
        :func:`dlfund.data.augment.compose`); applied inside the compiled step with its own key, never in
        evaluation. Needs image inputs [N, H, W, C].
      epochs_per_call: how many epochs one compiled call runs (training, validation and early stopping inside
        the program, one read of the results per call). "auto", with the scan strategy: calls of about
        ``CALL_SECONDS`` (0.5 s) from the measured epoch time, at most 64 epochs, except where the host needs each
        epoch (callbacks) or a checkpoint (``run_dir``: calls end at checkpoint epochs); the other strategies step
        from Python, one epoch per call. An int >= 1 fixes the call length (1: the classic epoch-by-epoch loop).
        The history is the same either way.
      devices: where to train: "auto" (every local device when there is more than one, else the one; in a
        multi-process run, see :mod:`dlfund.distributed`, every process's devices), an int (the first n local
        devices; 1: one device), a list of ``jax.Device`` or a ``jax.sharding.Mesh``. On
        several devices each batch is split over them (``batch_size`` is the global batch and must divide by
        their number), device-resident data is replicated on each, and the trained model's arrays stay on them
        (``evaluate``/``predict`` then split their batches too). See :mod:`dlfund.train.devices`.
      parallelism: "data" (weights and optimizer state replicated on every device) or "fsdp" (arrays of the
        weights and optimizer state of at least 256 KiB split over the devices as well; XLA gathers them where
        a layer needs them).
      accumulate_steps: gradient accumulation: each optimizer step averages the gradients of this many
        micro-batches of ``batch_size / accumulate_steps`` (computed one after another, so memory holds one
        micro-batch), which equals one step on the whole batch up to float rounding, except that batch norm
        normalizes each micro-batch by its own statistics (and moves its running averages once per
        micro-batch) and each micro-batch draws its own dropout masks. Schedules, ``state.step`` and the
        history count optimizer steps. ``batch_size`` must divide by it (and, on several devices, the
        micro-batch by the device count).
      precision: "float32", or "bfloat16": the training step computes in bfloat16 while the weights, gradients
        and optimizer moments stay float32, and the loss (with its softmax) and batch-norm statistics are
        float32; validation and evaluation run in float32 (:mod:`dlfund.train.precision`). On a CPU backend,
        where bfloat16 is slower than float32, it warns once and the config records it.
      freeze: parameters that do not train (transfer learning): "backbone" (all but the model's head), glob
        patterns of parameter paths (``"convs/*"``; ``dlfund.param_paths(model)`` lists them; a pattern also
        names everything under it) or a callable ``path -> bool``. Frozen parameters get no gradient, no
        optimizer state, no weight decay and no L2 penalty, and stay bit-identical. To unfreeze later, call
        ``fit`` again on the same model without ``freeze`` (see :mod:`dlfund.train.freezing`).
      freeze_batch_norm: batch-norm layers whose parameters are all frozen run in inference mode while training
        (their running statistics normalize and stay fixed), as in Keras; False lets them keep normalizing by
        each batch and moving their statistics.
      learning_rates: ``{pattern: rate}``: the matched parameters' own peak learning rate (discriminative
        fine-tuning, e.g. ``{"convs/*": 1e-4}`` with ``learning_rate=1e-3`` for the rest); the schedule's shape is
        shared. A pattern may not match a frozen parameter.
    Returns:
      a :class:`FitResult`.
    """
    options = {name: value for name, value in locals().items() if name not in ("model", "data")}
    return train_planned(plan_fit(model, data, FitConfig(**options)))


@dataclasses.dataclass
class FitPlan:
    """What :func:`plan_fit` decided, ready for :func:`train_planned`: the state, the placed data, the program.

    Attributes:
      model: the user's model (updated in place at the end).
      state: the initial :class:`TrainState`.
      train, val: placed data (device arrays ``(x, y)`` or a ``StreamData``); val None without validation.
      order_root: the key whose ``fold_in(order_root, epoch)`` orders each epoch's batches.
      options: the :class:`FitConfig`, with checked values.
      steps_per_epoch, example_shape, num_classes: what the checks found.
      metrics: resolved metric accumulators; strategy: the epoch strategy; config: the JSON-friendly config.
      recorder: the run folder's :class:`RunRecorder`, or None.
    """

    model: nnx.Module
    state: TrainState
    train: Any
    val: Any
    order_root: jax.Array
    options: FitConfig
    steps_per_epoch: int
    example_shape: tuple[int, ...]
    num_classes: int | None
    metrics: tuple[Any, ...]
    strategy: str
    config: dict[str, Any]
    recorder: RunRecorder | None


def build_state(
    model: nnx.Module,
    options: FitConfig,
    steps_per_epoch: int,
    *,
    decay_term: bool = False,
    copy_model: bool = True,
    layout: Layout | None = None,
) -> TrainState:
    """The initial train state of ``model`` under ``options`` (optimizer, loss, penalties, augmentation, keys);
    ``decay_term``: keep the optimizer's weight-decay term even at a weight decay of 0 (a sweep whose members decay
    by 0 and by more has one program); ``copy_model``: see :func:`create_train_state`; ``layout``: the devices
    (None: one)."""
    opt = optimizers_lib.get(
        options.optimizer,
        learning_rate=options.learning_rate,
        schedule=options.schedule,
        total_steps=options.epochs * steps_per_epoch,
        weight_decay=options.weight_decay,
        clip_norm=options.clip_norm,
        schedule_options=options.schedule_options,
        **(options.optimizer_options or {}),
    )
    if decay_term and isinstance(opt, optimizers_lib.Optimizer):
        opt = dataclasses.replace(opt, decays=True)
    return create_train_state(
        model,
        optimizer=opt,
        loss=losses_lib.for_model(model, options.loss, label_smoothing=options.label_smoothing),
        regularizers=tuple(options.regularizers),
        augment=options.augment,
        key=jax.random.fold_in(jax.random.key(options.seed), _STATE_STREAM),
        copy_model=copy_model,
        layout=layout,
        accumulate_steps=options.accumulate_steps,
        precision=options.precision,
        freeze=options.freeze,
        freeze_batch_norm=bool(options.freeze_batch_norm),
        learning_rates=options.learning_rates,
    )


def order_root(seed: int) -> jax.Array:
    """The root key of the data order of a run with this seed."""
    return jax.random.fold_in(jax.random.key(seed), _ORDER_STREAM)


def plan_fit(model: nnx.Module, data: Any, options: FitConfig) -> FitPlan:
    """Validates everything, builds the state, places the data and chooses the strategy; nothing trains
    (:func:`fit` is ``train_planned(plan_fit(...))``)."""
    epochs = checks.check_positive_int("epochs", options.epochs)
    checkpoint_every = checks.check_positive_int("checkpoint_every", options.checkpoint_every)
    if options.resume and options.run_dir is None:
        raise ValueError("resume=True needs the run_dir of the run to continue")
    batch_size = checks.check_positive_int("batch_size", options.batch_size)
    learning_rate = options.learning_rate
    if isinstance(options.optimizer, str) and learning_rate is None:
        learning_rate = optimizers_lib.DEFAULT_LEARNING_RATE
    if learning_rate is not None:
        learning_rate = checks.check_learning_rate(learning_rate)
    validation_data = options.validation_data
    train_split, val_split, dataset_classes = _split_data(data, validation_data)
    train_data = _Split.of("train", train_split)
    val_data = _Split.of("validation", val_split) if val_split is not None else None
    # Arrays the user gave directly (not a Dataset's, which are normalized): check that they look normalized.
    given_as_arrays = [(train_split, train_data)] if not _is_dataset(data) else []
    if val_data is not None and (validation_data is not None or not _is_dataset(data)):
        given_as_arrays.append((val_split, val_data))
    checks.warn_unnormalized(
        [
            problem
            for split, checked in given_as_arrays
            if checked.arrays is not None
            and (problem := checks.scale_problem(checked.name, np.asarray(split[0]), checked.value_range)) is not None
        ]
    )
    example_shape = train_data.example_shape
    checks.check_model_input(model, example_shape)
    if val_data is not None and val_data.example_shape != example_shape:
        raise ValueError(f"validation examples have shape {val_data.example_shape}, training examples {example_shape}")

    batch_size = checks.effective_batch_size(batch_size, len(train_data))
    layout = devices_lib.resolve_layout(options.devices, options.parallelism)
    accumulate_steps = checks.check_positive_int("accumulate_steps", options.accumulate_steps)
    if batch_size % accumulate_steps:
        raise ValueError(
            f"batch_size={batch_size} does not split into accumulate_steps={accumulate_steps} equal micro-batches; "
            f"use a batch size that {accumulate_steps} divides, e.g. "
            f"{max(accumulate_steps, batch_size // accumulate_steps * accumulate_steps)}"
        )
    devices_lib.check_batch_divides(batch_size, layout, accumulate_steps=accumulate_steps)
    steps_per_epoch = len(train_data) // batch_size
    options = options.replace(
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        checkpoint_every=checkpoint_every,
        accumulate_steps=accumulate_steps,
    )
    precision = precision_lib.check_precision(options.precision)
    precision_note = precision_lib.backend_note(
        precision, (layout.devices[0] if layout is not None else jax.devices()[0]).platform
    )
    state = build_state(model, options, steps_per_epoch, layout=layout)
    if state.augment is not None:
        state.augment.validate(example_shape)
    objective_loss = state.objective.loss
    out_shape = output_shape(state, example_shape)
    checks.check_loss_fits_outputs(objective_loss, out_shape)
    num_classes = classes_from_outputs(objective_loss, out_shape)
    if dataset_classes is None:
        checks.check_outputs_fit_labels(
            out_shape,
            objective_loss,
            {
                split.name: labels
                for split in (train_data, val_data)
                if split is not None
                and split.arrays is not None
                and (labels := checks.integral_labels(split.arrays[1])) is not None
            },
        )
    checks.check_loss_fits_classes(objective_loss, dataset_classes)
    binary_ok = num_classes == 2 and dataset_classes is not None and dataset_classes <= 2
    if dataset_classes is not None and num_classes not in (None, dataset_classes) and not binary_ok:
        raise ValueError(
            f"the model distinguishes {num_classes} classes (its output shape) but the dataset has "
            f"{dataset_classes}; build the model with num_classes={dataset_classes}"
        )
    for split in (train_data, val_data):
        if split is not None and split.arrays is not None:  # readers' labels are checked batch by batch
            checks.check_targets(split.name, split.arrays[1], objective_loss, num_classes)
            checks.check_target_shape(split.name, split.arrays[1].shape, objective_loss, out_shape)
    placement, _ = sources.choose_placement(
        sources.data_bytes(len(train_data), example_shape),
        options.data_placement,
        device=None if layout is None else layout.devices[0],
    )
    metrics = options.metrics
    if metrics is None:
        metrics = ("accuracy",) if num_classes is not None else ()
    train_metrics = _resolve_metrics(metrics, num_classes)
    columns = [m.name for m in train_metrics]
    if val_data is not None:
        columns += [f"val_{c}" for c in columns]
    early_stopping = options.early_stopping
    if early_stopping is not None and early_stopping.monitor not in columns:
        close = difflib.get_close_matches(early_stopping.monitor, columns, n=2)
        if early_stopping.monitor.startswith("val_") and val_data is None:
            hint = " (pass validation_data)"
        else:
            hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
        raise ValueError(
            f"early stopping monitors {early_stopping.monitor!r}, which this run does not record{hint}; "
            f"recorded: {', '.join(columns)}"
        )
    strategy = choose_strategy(model, options.execution, placement=placement)
    options = options.replace(
        epochs_per_call=_check_epochs_per_call(options.epochs_per_call, strategy, options.callbacks),
        callbacks=tuple(options.callbacks),
    )
    config = {
        "optimizer": state.optimizer.describe(),
        "loss": objective_loss.describe(),
        "regularizers": [p.describe() for p in state.objective.penalties],
        "epochs": epochs,
        "batch_size": batch_size,
        "accumulate_steps": accumulate_steps,
        "steps_per_epoch": steps_per_epoch,
        "seed": options.seed,
        "metrics": [m.name for m in train_metrics],
        "execution": strategy,
        "epochs_per_call": options.epochs_per_call,
        "num_train": len(train_data),
        "num_val": 0 if val_data is None else len(val_data),
        "data_placement": placement,
        "early_stopping": None if early_stopping is None else dataclasses.asdict(early_stopping),
        "augment": [] if state.augment is None else state.augment.describe(),
        "devices": 1 if layout is None else layout.size,
        "parallelism": "data" if layout is None else layout.parallelism,
        "precision": precision,
        **({"precision_note": precision_note} if precision_note else {}),
        **_freezing_config(state, options),
    }
    recorder = None
    if options.run_dir is not None:
        monitor = early_stopping.monitor if early_stopping else ("val_loss" if val_data is not None else "loss")
        mode = "max" if early_stopping is not None and early_stopping.maximize else "min"
        recorder = RunRecorder(
            options.run_dir,
            config=config,
            extra={
                "model": describe_model(model),
                "data": describe_data(data, example_shape, num_classes),
                **(options.run_info or {}),
            },
            resume=options.resume,
            checkpoint_every=checkpoint_every,
            keep=checks.check_positive_int("keep_checkpoints", options.keep_checkpoints),
            monitor=monitor,
            mode=mode,
            tensorboard=options.tensorboard,
        )
    return FitPlan(
        model=model,
        state=state,
        train=train_data.place(placement, objective_loss, num_classes, layout),
        val=None if val_data is None else val_data.place(placement, objective_loss, num_classes, layout),
        order_root=order_root(options.seed),
        options=options,
        steps_per_epoch=steps_per_epoch,
        example_shape=example_shape,
        num_classes=num_classes,
        metrics=train_metrics,
        strategy=strategy,
        config=config,
        recorder=recorder,
    )


def _freezing_config(state: TrainState, options: FitConfig) -> dict[str, Any]:
    """What trains, for config.json (and the resume check: a run resumes only with the same frozen part)."""
    freezing = state.freezing
    return {
        "frozen": [] if freezing is None else list(freezing.frozen),
        "held_batch_norms": [] if freezing is None else list(freezing.held_norms),
        "learning_rates": {str(k): float(v) for k, v in (options.learning_rates or {}).items()},
    }


def train_planned(plan: FitPlan) -> FitResult:
    """Trains a :class:`FitPlan` (callbacks' ``on_train_begin`` first)."""
    for callback in plan.options.callbacks:
        callback.on_train_begin(plan.config)
    options = plan.options
    return _train(
        model=plan.model,
        state=plan.state,
        train=plan.train,
        val=plan.val,
        order_root=plan.order_root,
        epochs=options.epochs,
        batch_size=options.batch_size,
        metrics=plan.metrics,
        early_stopping=options.early_stopping,
        callbacks=options.callbacks,
        progress=options.progress,
        strategy=plan.strategy,
        epochs_per_call=options.epochs_per_call,
        config=plan.config,
        recorder=plan.recorder,
    )


def _check_epochs_per_call(value: Any, strategy: str, callbacks: Sequence[Callback]) -> int | str:
    if value == "auto":
        return value
    value = checks.check_positive_int("epochs_per_call", value)
    if value > 1 and strategy != "scan":
        raise ValueError(
            f"epochs_per_call={value} needs the scan strategy (the whole epoch on the device); the {strategy!r} "
            "strategy steps from Python, one epoch per call. Use epochs_per_call='auto' or execution='scan'"
        )
    if value > 1 and callbacks:
        raise ValueError(
            f"epochs_per_call={value} with callbacks: a callback sees every epoch on the host, so every call is one "
            "epoch long; use epochs_per_call='auto' (or 1), or no callbacks"
        )
    return value


def _nonfinite_message(epoch: int, step_in_epoch: int, steps: int, global_step: int, measurements) -> str:
    if not np.isfinite(measurements["loss"][step_in_epoch]):
        what = "loss"
    elif not np.isfinite(measurements["grad_norm"][step_in_epoch]):
        what = "gradient"
    else:
        what = "weights (the update overflowed)"
    return (
        f"training stopped: the {what} became NaN/Inf at epoch {epoch}, step {step_in_epoch + 1} of {steps} "
        f"(global step {global_step}). The model keeps the weights from before that step. Usual causes: a "
        "learning rate that is too high, inputs that are not normalized, or log(0)/division by 0 in a custom "
        "loss. Try a smaller learning_rate, clip_norm=1.0, or check the data."
    )


def _train(
    *,
    model,
    state,
    train,
    val,
    order_root,
    epochs,
    batch_size,
    metrics,
    early_stopping,
    callbacks,
    progress,
    strategy,
    epochs_per_call,
    config,
    recorder,
) -> FitResult:
    """The host side of training: calls of one or more compiled epochs, then reporting (History, progress bar,
    run folder, callbacks). Every decision between epochs is made inside the program (:mod:`dlfund.train.loop`)."""
    history, stopper_state, best, done, stop_reason = History(), None, None, 0, None
    # A multi-process run has one progress bar, process 0's, moved once per call: every process must compile the
    # same program, so none of them reports epoch by epoch from inside it.
    single_process = jax.process_count() == 1
    progress = progress and jax.process_index() == 0
    try:
        if recorder is not None:
            state, done, history, stopper_state, best = recorder.start(state, early_stopping)
    except RunDirectoryError as error:
        raise RunDirectoryError(f"{error}. Nothing was trained.") from error
    program = loop_lib.EpochProgram.of(
        batch_size=batch_size,
        metrics=metrics,
        validation=val is not None,
        val_batch_size=_val_batch_size(val, state.layout),
        early_stopping=early_stopping,
        report=progress and strategy == "scan" and single_process,
    )
    loop = loop_lib.init_loop(
        state, program, epoch=done, stopper=stopper_state, best=best, early_stopping=early_stopping
    )
    if bool(loop.stopped):
        stop_reason = _early_stop_message(early_stopping, loop.stopper)  # a resumed run that had stopped early
    epoch_seconds: list[float] = []
    bar = tqdm(desc="fit", unit="epoch", disable=not progress, leave=True, initial=done, total=epochs)
    guard = InterruptGuard()
    watch = CompileWatch("fit")
    with guard.installed():
        try:
            if program.report:
                # Epochs inside one compiled call report as they end: the bar moves, with that epoch's numbers.
                loop_lib.report_to(
                    lambda epoch, row: _show_epoch(bar, epoch, dict(zip(program.columns, np.asarray(row).tolist())))
                )
            # Seconds per epoch: from an earlier fit of the same program and data shape (a re-run notebook cell),
            # then measured on this fit's calls (the first call of a new program includes compiling).
            timing_key = (program, strategy, tuple(np.shape(train[0])) if strategy == "scan" else None)
            epoch_time = _EPOCH_TIMES.get(timing_key)
            while done < epochs and stop_reason is None:
                size = _call_size(epochs_per_call, done, epochs, recorder, callbacks, strategy, epoch_time)
                start = time.perf_counter()
                with watch.call(loop, done + 1):
                    if strategy == "scan":
                        x, y = train
                        # Without validation the program ignores x_val, y_val: the training arrays stand in (a
                        # slice would be two eager operations a call, ~0.7 ms).
                        x_val, y_val = val if val is not None else (x, y)
                        loop, rows = loop_lib.run_epochs(
                            loop, np.int32(size), x, y, x_val, y_val, order_root, program=program
                        )
                        halted_result = None
                    else:
                        loop, rows, halted_result = _host_epoch(program, loop, train, val, order_root, strategy)
                rows, ran, halted = jax.device_get((rows, loop.epoch, loop.halted))
                ran = int(ran) - done
                seconds = time.perf_counter() - start
                if ran:
                    if len(_EPOCH_TIMES) >= 256:
                        _EPOCH_TIMES.clear()
                    epoch_time = _EPOCH_TIMES[timing_key] = seconds / ran
                # Every row goes into the history first: a run folder that fails below leaves it whole.
                first = done + 1
                call_rows = [
                    {"epoch": first + i, **{c: float(v) for c, v in zip(program.columns, rows[i])}} for i in range(ran)
                ]
                for row in call_rows:
                    history.append(row)
                    epoch_seconds.append(seconds / ran)
                for i, row in enumerate(call_rows):
                    done = row["epoch"]
                    last = i == ran - 1
                    if last and bool(loop.stopped):
                        stop_reason = _early_stop_message(early_stopping, loop.stopper)
                    _show_epoch(bar, done, row)
                    # Recorded before the callbacks run, so that a callback that raises leaves this epoch on disk.
                    # Calls end at checkpoint epochs, so only a call's last epoch may be saved: with its state.
                    with guard.protect():
                        saved = recorder is not None and recorder.epoch_end(
                            done, row, loop.state, loop.stopper, loop_lib.best_weights(loop),
                            last=last and (done == epochs or stop_reason is not None),
                        )  # fmt: skip
                    # Every callback sees every epoch (calls are one epoch long when there are callbacks).
                    if any([bool(c.on_epoch_end(done, dict(row), loop.state)) for c in callbacks]):
                        stop_reason = stop_reason or f"a callback asked to stop after epoch {done}"
                        if recorder is not None and not saved:
                            with guard.protect():
                                recorder.checkpoint(done, loop.state, loop.stopper, loop_lib.best_weights(loop))
                if bool(halted):
                    start = time.perf_counter()
                    state, stop_reason = _halt(
                        program, loop.state, train, order_root, done + 1, strategy, halted_result
                    )
                    loop = loop._replace(state=state)
                    epoch_seconds.append(time.perf_counter() - start)
                    _warnings.warn(stop_reason, NonFiniteLossWarning)
                guard.raise_pending()  # a Ctrl-C that landed where it could not be raised (a gc callback)
        except RunDirectoryError as error:
            stop_reason = f"training stopped: {error}. The result returned here holds the trained state in memory."
            _warnings.warn(stop_reason, RuntimeWarning)
            recorder.close(quietly=True)
            recorder = None
        except KeyboardInterrupt as interrupt:
            bar.close()
            saved_epoch = None
            if recorder is not None:  # let the checkpoint being written finish, without Orbax's thread noise
                with quiet_absl():
                    recorder.close(quietly=True)
                saved_epoch = newest_checkpoint(recorder.run_dir)
            raise TrainingInterrupted(len(history), saved_epoch, None if recorder is None else recorder.run_dir) from (
                interrupt
            )
        except BaseException:
            if recorder is not None:  # let the checkpoints already started finish
                recorder.close(quietly=True)
            raise
        finally:
            loop_lib.report_to(None)
            bar.close()

        state, best = loop.state, loop_lib.best_weights(loop)
        best_epoch = _best_epoch(history, early_stopping, loop.stopper)
        history.selected_epoch, history.restored_best = best_epoch, best is not None
        params, model_state = best if best is not None else (state.params, state.model_state)
        # Copies, so that the model never shares buffers with a state that a later compiled step may donate.
        nnx.update(model, *copy_arrays((params, model_state)))
        model.eval()
        fit_result = FitResult(
            model=model,
            history=history,
            best_epoch=best_epoch,
            state=state,
            stop_reason=stop_reason,
            execution=strategy,
            epoch_seconds=epoch_seconds,
            config=config,
        )
        if recorder is not None:
            outcome = {
                "epochs_run": len(history),
                "epochs": epochs,
                "best_epoch": best_epoch,
                "restored_best": best is not None,
                "stop_reason": stop_reason,
                # this call's training time (a resumed run's earlier sessions are not counted)
                "train_seconds": round(sum(epoch_seconds), 3),
            }
            try:
                with guard.protect(then_raise=False):
                    recorder.finish(model, history, outcome)
            except RunDirectoryError as error:
                fit_result.stop_reason = f"{stop_reason + '; ' if stop_reason else ''}{error}"
                _warnings.warn(str(error), RuntimeWarning)
        for callback in callbacks:
            callback.on_train_end(fit_result)
        return fit_result


def _show_epoch(bar, epoch: int, row: dict[str, Any]) -> None:
    """Moves the progress bar to ``epoch`` (if it is not there yet) with that epoch's metrics beside it."""
    if epoch <= bar.n:
        return  # reported already while its compiled call ran (or a halted epoch, which did not count)
    bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k not in ("epoch", "learning_rate")}, refresh=False)
    bar.update(epoch - bar.n)


def _val_batch_size(val, layout: Layout | None = None) -> int:
    """Validation rows per batch (on a mesh rounded up to split over its devices: the extra rows are masked)."""
    if val is None:
        return 1
    # The same batch size for streamed as for device-resident data, so both paths compute the same numbers.
    size = min(EVAL_BATCH_SIZE, len(val.source) if isinstance(val, StreamData) else val[0].shape[0])
    return size if layout is None else layout.round_up(size)


_EPOCH_TIMES: dict[Any, float] = {}

#: "auto" sizes calls to last about this long: reading results back once per call then costs nothing next to
#: the call, and a Ctrl-C (which stops the host at once but not a call the device is running) loses at most this.
CALL_SECONDS = 0.5


def _call_size(
    epochs_per_call, done: int, epochs: int, recorder, callbacks, strategy: str, epoch_time: float | None
) -> int:
    """How many epochs the next compiled call runs.

    "auto": about :data:`CALL_SECONDS` of epochs, from the epoch time measured so far (the first call runs one
    epoch: it includes compiling), so a small model's whole run is one or two calls while a large model's epochs
    run one per call, where a read-back costs nothing next to an epoch. Callbacks see every epoch, a run folder
    checkpoints every ``checkpoint_every`` epochs, and the strategies that step from Python run one epoch per call.
    """
    if strategy != "scan" or callbacks:
        return 1
    if epochs_per_call == "auto" and jax.process_count() > 1:
        # Every process must run the same calls, and measured times differ between processes: the longest call.
        epoch_time = CALL_SECONDS / loop_lib.ROWS_PER_CALL
    if epochs_per_call == "auto":
        size = 1 if epoch_time is None else int(CALL_SECONDS / max(epoch_time, 1e-6))
    else:
        size = epochs_per_call
    if recorder is not None:
        size = min(size, recorder.checkpoint_every - done % recorder.checkpoint_every)
    return max(1, min(size, epochs - done, loop_lib.ROWS_PER_CALL))


def _host_epoch(program, loop, train, val, order_root, strategy):
    """One epoch of a strategy that steps from Python (loop, chunk, stream), then the same end-of-epoch transition
    as the compiled calls. Returns ``(loop, rows [1, columns], the EpochResult if it went non-finite)``."""
    epoch = int(loop.epoch) + 1
    result = STRATEGIES[strategy](
        loop.state, train, jax.random.fold_in(order_root, epoch), batch_size=program.batch_size, metrics=program.metrics
    )
    if bool(result.halted):
        return loop._replace(state=result.state, halted=jnp.asarray(True)), None, result
    options = {"batch_size": program.val_batch_size, "metrics": program.metrics}
    parts = [jnp.stack(result.metrics)]
    if isinstance(val, StreamData):
        parts.append(jnp.stack(evaluate_source(result.state, val, **options)))
    elif val is not None:
        parts.append(jnp.stack(evaluate_arrays(result.state, val[0], val[1], **options)))
    parts.append(result.measurements["learning_rate"][-1:])
    row = jnp.concatenate([p.astype(jnp.float32) for p in parts])
    return loop_lib.end_of_epoch_jit(program, loop._replace(state=result.state), row), row[None], None


def _halt(program, state, train, order_root, epoch: int, strategy: str, halted_result) -> tuple[TrainState, str]:
    """The state right before the step that went non-finite in ``epoch``, and the message that says where.

    A compiled call does not apply a non-finite epoch; it is replayed here with the guarded step, which stops
    exactly before the bad step (the per-step strategies have done that already: ``halted_result``).
    """
    result = halted_result
    if result is None:  # a compiled call flagged the epoch: replay it guarded (the unguarded pass is known to fail)
        key = jax.random.fold_in(order_root, epoch)
        result = _scan_epoch_guarded(state, *train, key, batch_size=program.batch_size, metrics=program.metrics)
    measurements = jax.device_get(result.measurements)
    ok = np.isfinite(measurements["loss"]) & np.isfinite(measurements["grad_norm"]) & measurements["state_finite"]
    bad = int(np.argmin(ok))
    message = _nonfinite_message(epoch, bad, len(measurements["loss"]), int(result.state.step) + 1, measurements)
    return result.state, message


def _early_stop_message(early_stopping: EarlyStopping, stopper_state) -> str:
    return (
        f"early stopping: {early_stopping.monitor} did not improve for {early_stopping.patience} epochs "
        f"(best {float(stopper_state.best):.6g} at epoch {int(stopper_state.best_epoch)})"
    )


def _best_epoch(history: History, early_stopping, stopper_state) -> int | None:
    if not len(history):
        return None
    if stopper_state is not None and int(stopper_state.best_epoch) > 0:
        return int(stopper_state.best_epoch)
    monitor = "val_loss" if "val_loss" in history else "loss"
    return history.best_epoch(monitor, mode="min")
