"""``FitConfig``: every option of :func:`dlfund.fit` in one frozen object.

``fit(model, data, **options)`` builds one; :func:`dlfund.sweep` builds one per member (its base options with the
member's values replaced); the command line builds one from its :class:`dlfund.config.TrainConfig`. A new option
is a field here (and a keyword of ``fit``: its signature is a contract, and a test checks that both agree).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Sequence
from typing import Any

from dlfund.train.callbacks import Callback
from dlfund.train.early_stopping import EarlyStopping


@dataclasses.dataclass(frozen=True, eq=False)
class FitConfig:
    """The options of one training run; the fields, defaults and meanings are :func:`dlfund.fit`'s keywords."""

    optimizer: str | Any = "adam"
    learning_rate: float | None = None
    epochs: int = 10
    batch_size: int = 32
    seed: int = 0
    weight_decay: float = 0.0
    early_stopping: EarlyStopping | None = None
    metrics: Sequence[Any] | None = None
    callbacks: Sequence[Callback] = ()
    progress: bool = True
    validation_data: Any = None
    loss: str | Any = None
    label_smoothing: float | None = None
    regularizers: Sequence[Any] = ()
    schedule: str = "constant"
    clip_norm: float | None = None
    optimizer_options: dict[str, Any] | None = None
    schedule_options: dict[str, Any] | None = None
    execution: str = "auto"
    data_placement: str = "auto"
    run_dir: str | os.PathLike | None = None
    resume: bool = False
    checkpoint_every: int = 1
    keep_checkpoints: int = 3
    tensorboard: bool = True
    run_info: dict[str, Any] | None = None
    augment: Any = None
    epochs_per_call: int | str = "auto"
    devices: Any = "auto"
    parallelism: str = "data"
    accumulate_steps: int = 1
    precision: str = "float32"
    freeze: Any = None
    freeze_batch_norm: bool = True
    learning_rates: dict[str, float] | None = None

    def __post_init__(self) -> None:
        # A lone value where a sequence goes: wrap it, as ``augment`` does; iterating the string "l2:1e-4" would
        # report an unknown regularizer 'l'.
        for name in ("regularizers", "metrics", "callbacks"):
            value = getattr(self, name)
            if value is None or isinstance(value, (list, tuple)):
                continue
            lone = isinstance(value, (str, Callback)) or callable(value)
            object.__setattr__(self, name, (value,) if lone else _as_tuple(name, value))
        for callback in self.callbacks:
            if not all(callable(getattr(callback, hook, None)) for hook in _CALLBACK_HOOKS):
                raise TypeError(
                    f"callbacks must be dlfund.Callback objects (subclass dlfund.Callback, or use "
                    f"dlfund.LambdaCallback(on_epoch_end=...)); got {callback!r}"
                )
        if self.early_stopping is not None and not isinstance(self.early_stopping, EarlyStopping):
            patience = self.early_stopping if type(self.early_stopping) is int and self.early_stopping > 0 else 5
            raise TypeError(
                f"early_stopping must be a dlfund.EarlyStopping or None, got {self.early_stopping!r}; e.g. "
                f"early_stopping=dlfund.EarlyStopping(patience={patience})"
            )

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def of(cls, **options: Any) -> FitConfig:
        """A config from keyword options; an unknown name is refused with the closest known ones."""
        check_names(options)
        return cls(**options)

    def as_kwargs(self) -> dict[str, Any]:
        """The options as ``fit``'s keyword arguments (``dlfund.fit(model, data, **config.as_kwargs())``)."""
        return {name: getattr(self, name) for name in self.names()}

    def replace(self, **changes: Any) -> FitConfig:
        """A copy with ``changes`` (names checked as in :meth:`of`)."""
        check_names(changes)
        return dataclasses.replace(self, **changes)


_CALLBACK_HOOKS = ("on_train_begin", "on_epoch_end", "on_train_end")


def _as_tuple(name: str, value: Any) -> tuple[Any, ...]:
    """``value`` (any iterable but a string) as a tuple; anything else is refused with the option named."""
    try:
        return tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be a list or tuple, got {value!r}") from None


def check_names(options: dict[str, Any], what: str = "fit option") -> None:
    """Raises ValueError for names that are not fit options, with the closest known ones."""
    known = FitConfig.names()
    unknown = [name for name in options if name not in known]
    if unknown:
        hints = [
            f"{n!r} (did you mean {', '.join(difflib.get_close_matches(n, known, n=2)) or 'none'}?)" for n in unknown
        ]
        raise ValueError(f"unknown {what}: {'; '.join(hints)}. Known: {', '.join(known)}")
