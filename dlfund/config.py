"""Typed run configuration: one dataclass whose fields are the command line's options and the run's config.json.

The command line (tyro) derives its flags, types and help from these fields; a JSON/YAML config file holds the
same keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from pathlib import Path
from typing import Any

from dlfund.data.catalog import DATASETS
from dlfund.models import MODELS


def _field(default: Any, help: str, **extra: Any) -> Any:
    return dataclasses.field(default=default, metadata={"help": help, **extra})


# The generic model flags each model takes (see TrainConfig.model_options); the other models take none of them.
_MODEL_FLAGS: dict[str, tuple[str, ...]] = {
    "mlp": ("hidden", "activation", "dropout", "batch_norm"),
    "cnn": ("hidden", "activation", "dropout", "batch_norm"),
    **{m: ("hidden", "dropout") for m in ("rnn", "lstm", "gru", "transformer")},
}


@dataclasses.dataclass
class TrainConfig:
    """Every option of ``dlfund train``; the defaults reproduce the README's main job."""

    model: str = _field("mlp", f"model: {', '.join(MODELS.names())}")
    dataset: str = _field(
        "digits",
        f"dataset, offline: {', '.join(n for n in DATASETS.names() if not DATASETS.get(n).downloads)}; downloaded "
        f"once: {', '.join(n for n in DATASETS.names() if DATASETS.get(n).downloads)}",
    )
    epochs: int = _field(40, "passes over the training set (early stopping may end sooner)")
    batch_size: int = _field(32, "examples per optimizer step; 32 gives many updates per epoch on small data")
    learning_rate: float = _field(1e-3, "peak learning rate (1e-3: Adam's published default)")
    optimizer: str = _field("adam", "sgd, momentum, nesterov, rmsprop, adam, adamw or adagrad")
    schedule: str = _field("cosine", "learning-rate schedule: constant, cosine, warmup_cosine, exponential, step")
    weight_decay: float = _field(0.0, "decoupled weight decay (skips biases and normalization scales)")
    clip_norm: float | None = _field(None, "clip the global gradient norm to this value")
    loss: str | None = _field(None, "loss name; default: the model's own")
    label_smoothing: float = _field(0.0, "label smoothing for softmax cross-entropy")
    l2: float = _field(0.0, "L2 penalty added to the loss (kernels only)")
    activation: str = _field("relu", "hidden-layer activation of mlp and cnn (see dlfund.activations)")
    hidden: tuple[int, ...] | None = _field(
        None,
        "hidden widths, e.g. --hidden 256 128: mlp layers, cnn dense head; rnn/lstm/gru/transformer: one width per "
        "layer (all equal); None: the model's default",
    )
    dropout: float = _field(0.0, "dropout rate, in [0, 1) (mlp, cnn, rnn, lstm, gru, transformer)")
    batch_norm: bool = _field(False, "batch normalization (mlp and cnn)")
    augment: tuple[str, ...] = _field((), "on-device augmentations of training images, e.g. --augment crop:4 flip")
    patience: int = _field(10, "early-stopping patience in epochs on val_loss; 0 disables early stopping")
    seed: int = _field(0, "seed for initialization, data order and dropout")
    val_fraction: float = _field(0.1, "fraction of the training split held out for validation")
    execution: str = _field("auto", "epoch execution: auto, scan, chunk or loop")
    devices: str = _field(
        "auto", "devices to train on: auto (every local device), or a number (1: one device); batch_size is global"
    )
    parallelism: str = _field(
        "data", "on several devices: data (each batch split, weights replicated) or fsdp (large weights split too)"
    )
    accumulate_steps: int = _field(
        1, "gradient accumulation: micro-batches of batch_size / k per optimizer step (memory holds one)"
    )
    precision: str = _field("float32", "float32, or bfloat16 (compute in bf16, float32 weights; for GPUs and TPUs)")
    coordinator_address: str | None = _field(
        None, "multi-process run: HOST:PORT of process 0 (with --num-processes and --process-id; needs --run-dir)"
    )
    num_processes: int | None = _field(None, "multi-process run: how many processes take part")
    process_id: int | None = _field(None, "multi-process run: this process's index, 0 .. num_processes - 1")
    data_dir: str | None = _field(None, "where datasets are prepared; None: $DLFUND_DATA_DIR or ~/tensorflow_datasets")
    download: bool = _field(
        False,
        "download a dataset that is not prepared even if its server did not answer a 2 s probe (dlfund.data.load's "
        "download=True); default: download only when the server answers",
    )
    run_dir: str | None = _field(None, "output folder; None: runs/<model>-<dataset>-<time>")
    checkpoint_every: int = _field(1, "save a checkpoint every this many epochs (and after the last)")
    keep_checkpoints: int = _field(3, "how many of the latest checkpoints to keep (the best is kept too)")
    progress: bool = _field(True, "show a progress bar")

    def model_options(self, *, regression: bool = False) -> dict[str, Any]:
        """Constructor options of ``self.model`` from the generic flags (hidden widths, activation, dropout, ...).

        Raises:
          ValueError: ``hidden`` with unequal widths for a model whose layers all have one width.
        """
        self._check_model_flags()
        hidden = None if self.hidden is None else tuple(self.hidden)
        if self.model == "mlp":
            options = {"activation": self.activation, "dropout": self.dropout, "batch_norm": self.batch_norm}
            return {**options, **({"hidden": hidden} if hidden is not None else {})}
        if self.model == "cnn":
            options = {"activation": self.activation, "dropout": self.dropout, "batch_norm": self.batch_norm}
            return {**options, **({"dense": hidden} if hidden is not None else {})}
        if self.model in ("rnn", "lstm", "gru", "transformer"):
            options: dict[str, Any] = {"dropout": self.dropout}
            if hidden is not None:
                if len(set(hidden)) != 1:
                    raise ValueError(f"--hidden for {self.model} gives one width per layer, all equal; got {hidden}")
                width, depth = ("width", "depth") if self.model == "transformer" else ("hidden", "num_layers")
                options.update({width: hidden[0], depth: len(hidden)})
            if regression and self.model != "transformer":
                options["output"] = "regress"
            return options
        return {}

    def _check_model_flags(self) -> None:
        """Refuses a model flag set away from its default for a model that does not take it (it would be dropped
        without a word: --dropout 0.5 with --model resnet trained without dropout)."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for flag in ("hidden", "activation", "dropout", "batch_norm"):
            models = [m for m, flags in _MODEL_FLAGS.items() if flag in flags]
            if getattr(self, flag) != defaults[flag] and self.model not in models:
                raise ValueError(
                    f"--{flag.replace('_', '-')} does not apply to --model {self.model}; it applies to "
                    f"{', '.join(models)}"
                )

    def loss_for(self, ds: Any) -> str | None:
        """The loss to train and evaluate with: ``--loss``, else MSE on a regression dataset, else the model's."""
        return self.loss or ("mse" if ds.num_classes is None else None)

    def fit_config(self, ds: Any, **overrides: Any) -> Any:
        """The :class:`dlfund.FitConfig` these options mean for a dataset ``ds`` (the one place where flags become
        fit options); ``overrides``: more fit options (run_dir, resume, progress, run_info, ...)."""
        from dlfund.train.early_stopping import EarlyStopping
        from dlfund.train.options import FitConfig

        options = dict(
            optimizer=self.optimizer,
            learning_rate=self.learning_rate,
            epochs=self.epochs,
            batch_size=self.batch_size,
            seed=self.seed,
            weight_decay=self.weight_decay,
            early_stopping=EarlyStopping(patience=self.patience) if self._patience() > 0 else None,
            loss=self.loss_for(ds),
            label_smoothing=self.label_smoothing or None,
            regularizers=(f"l2:{self.l2}",) if self.l2 else (),
            augment=self.augment,
            schedule=self.schedule,
            clip_norm=self.clip_norm,
            execution=self.execution,
            devices=self.device_count(),
            parallelism=self.parallelism,
            accumulate_steps=self.accumulate_steps,
            precision=self.precision,
            progress=self.progress,
            checkpoint_every=self.checkpoint_every,
            keep_checkpoints=self.keep_checkpoints,
        )
        return FitConfig.of(**{**options, **overrides})

    def _patience(self) -> int:
        """``--patience``: 0 turns early stopping off; a negative value is refused, not read as 0."""
        if self.patience < 0:
            raise ValueError(f"--patience must be >= 0 (0 turns early stopping off), got {self.patience}")
        return self.patience

    def device_count(self) -> int | str:
        """``--devices`` as ``fit`` takes it: "auto" or a positive int."""
        value = str(self.devices).strip()
        if value == "auto":
            return value
        if value.isdigit() and int(value) >= 1:
            return int(value)
        raise ValueError(f"--devices must be 'auto' or a number of devices >= 1, got {self.devices!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """A config from a dict (e.g. a config file); unknown keys are refused with the closest known ones."""
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            hints = [
                f"{k!r} (did you mean {', '.join(difflib.get_close_matches(k, known, n=2)) or 'none'}?)"
                for k in unknown
            ]
            raise ValueError(f"unknown config keys: {'; '.join(hints)}. Known keys: {', '.join(known)}")
        values = dict(values)
        if "augment" in values:
            augment = values["augment"]
            values["augment"] = (augment,) if isinstance(augment, str) else tuple(augment)
        if values.get("hidden") is not None:
            hidden = values["hidden"]
            values["hidden"] = (hidden,) if isinstance(hidden, int) else tuple(hidden)
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> TrainConfig:
        """A config from a JSON or YAML file of ``key: value`` pairs (the same keys as the command line)."""
        import json

        import yaml

        path = Path(path)
        text = path.read_text()
        if not text.strip():
            values = {}
        elif path.suffix == ".json":
            try:
                values = json.loads(text)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path} is not valid JSON: {error}") from None
        else:
            try:
                values = yaml.safe_load(text)
            except yaml.YAMLError as error:
                raise ValueError(f"{path} is not valid YAML: {error}") from None
        if not isinstance(values, dict):
            raise ValueError(f"{path}: a config file holds key: value pairs, got {type(values).__name__}")
        values = {k.replace("-", "_"): v for k, v in values.items()}
        return cls.from_dict({k: _coerce(cls, k, v) for k, v in values.items()})


#: The sweepable flags of ``dlfund sweep``: its field -> the member key of :func:`dlfund.sweep`.
SWEEP_AXES = {
    "learning_rate": "learning_rate",
    "seeds": "seed",
    "weight_decay": "weight_decay",
    "l2": "l2",
    "label_smoothing": "label_smoothing",
    "dropout": "dropout",
}


@dataclasses.dataclass
class SweepConfig(TrainConfig):
    """Every option of ``dlfund sweep``: those of ``dlfund train``, with several values allowed for the sweepable
    ones. Every combination of the values given is one member (``dlfund.grid``); all train as one program."""

    learning_rate: tuple[float, ...] = _field((1e-3,), "peak learning rates, e.g. --learning-rate 1e-3 3e-3 1e-2")
    seeds: tuple[int, ...] = _field((0,), "member seeds (initialization, data order, dropout), e.g. --seeds 0 1 2")
    weight_decay: tuple[float, ...] = _field((0.0,), "decoupled weight decays (skips biases and norm scales)")
    l2: tuple[float, ...] = _field((0.0,), "L2 penalties added to the loss (kernels only)")
    label_smoothing: tuple[float, ...] = _field((0.0,), "label smoothings for softmax cross-entropy")
    dropout: tuple[float, ...] = _field((0.0,), "dropout rates (the rate is a value of the program, like the rest)")
    seed: int = _field(0, "seed of the train/validation split (the members' own seeds are --seeds)")
    run_dir: str | None = _field(None, "output folder; None: runs/sweep-<model>-<dataset>-<time>")

    def members(self) -> dict[str, list[Any]]:
        """Every combination of the flags given several values (one member if none was)."""
        from dlfund.train.members import grid

        axes = {key: list(getattr(self, flag)) for flag, key in SWEEP_AXES.items() if len(getattr(self, flag)) > 1}
        return grid(**axes) if axes else {"seed": [self.seeds[0]]}

    def shared(self) -> TrainConfig:
        """The options every member shares, as a ``TrainConfig`` (a flag's first value where it has one value)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(TrainConfig)}
        for flag in SWEEP_AXES:
            if flag != "seeds":
                values[flag] = getattr(self, flag)[0]
        # Swept dropout needs dropout layers in the model: build it with the largest rate (each member sets its own).
        values["dropout"] = max(self.dropout)
        return TrainConfig(**values)


def _coerce_to(kind: type, name: str, value: Any) -> Any:
    if isinstance(value, str) and kind in (float, int):
        try:
            return kind(value)
        except ValueError:
            raise ValueError(f"config key {name!r} must hold numbers, got {value!r}") from None
    return value


def _coerce(cls: type, name: str, value: Any) -> Any:
    """A config-file value as its field's type: YAML 1.1 reads ``1e-3`` (no dot) as a string, not a float."""
    import typing

    field_type = typing.get_type_hints(cls).get(name)
    if typing.get_origin(field_type) is tuple and typing.get_args(field_type)[-1] is Ellipsis:
        # A list field (a sweep's values): one value is a list of one; each element is coerced.
        (element,) = typing.get_args(field_type)[:-1]
        values = value if isinstance(value, (list, tuple)) else [value]
        return tuple(_coerce_to(element, name, v) for v in values)
    numeric = [t for t in (float, int) if field_type is t or t in typing.get_args(field_type)]
    if isinstance(value, str) and numeric:
        try:
            return numeric[0](value)
        except ValueError:
            raise ValueError(f"config key {name!r} must be a number, got {value!r}") from None
    return value
