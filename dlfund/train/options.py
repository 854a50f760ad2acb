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


def check_names(options: dict[str, Any], what: str = "fit option") -> None:
    """Raises ValueError for names that are not fit options, with the closest known ones."""
    known = FitConfig.names()
    unknown = [name for name in options if name not in known]
    if unknown:
        hints = [
            f"{n!r} (did you mean {', '.join(difflib.get_close_matches(n, known, n=2)) or 'none'}?)" for n in unknown
        ]
        raise ValueError(f"unknown {what}: {'; '.join(hints)}. Known: {', '.join(known)}")
