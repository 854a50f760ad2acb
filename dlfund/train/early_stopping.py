"""Early stopping as a pure init/update state machine (usable on the host and inside jit/scan alike)."""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp

from dlfund.train.checks import check_positive_int

_MODES = ("auto", "min", "max")
# Words of a column name ("val_balanced_accuracy" -> balanced, accuracy) that say which way it improves. A name
# with neither kind, or both, is refused in auto mode: guessing "min" for an unknown score would stop a run that is
# still improving and restore its worst epoch.
_HIGHER_IS_BETTER = ("accuracy", "acc", "precision", "recall", "f1", "auc", "iou", "dice", "r2")
_LOWER_IS_BETTER = ("loss", "error", "mse", "mae", "rmse", "msle", "crossentropy", "perplexity", "hinge")


def improves_upward(monitor: str) -> bool | None:
    """Whether a history column improves by going up (True), down (False), or cannot be told from its name (None).

    ``accuracy``, ``top_5_accuracy``, ``f1_macro``, ``roc_auc``, ``val_average_precision`` go up; ``loss``,
    ``val_mse``, ``error_rate`` go down.
    """
    words = monitor.lower().removeprefix("val_").split("_")
    up = any(w in _HIGHER_IS_BETTER or w.endswith("accuracy") for w in words)
    down = any(w in _LOWER_IS_BETTER or w.endswith(("loss", "error")) for w in words)
    return None if up == down else up


class EarlyStoppingState(NamedTuple):
    """Attributes: best value so far, its epoch (-1: none yet), epochs since it, and whether to stop now."""

    best: jax.Array
    best_epoch: jax.Array
    wait: jax.Array
    stop: jax.Array


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """Stop training when a monitored quantity has not improved for ``patience`` epochs.

    An epoch improves on the best so far when its value beats the best by more than ``min_delta`` (lower for
    ``mode="min"``, higher for ``"max"``; ``"auto"`` infers the direction from the name, and refuses a name that
    does not tell it). Training stops after ``patience`` epochs in a row without improvement; with
    ``restore_best``, ``fit`` returns the weights of the best epoch. A NaN value never counts as an improvement.

    Args:
      monitor: a history column, e.g. "val_loss" (default) or "val_accuracy".
      patience: epochs without improvement before stopping, >= 1. 5: tolerant of the usual epoch-to-epoch noise
        of a small validation set without wasting many epochs.
      min_delta: minimum change that counts as an improvement, >= 0.
      mode: "auto", "min" or "max".
      restore_best: return the best epoch's weights rather than the last epoch's.
    """

    monitor: str = "val_loss"
    patience: int = 5
    min_delta: float = 0.0
    mode: str = "auto"
    restore_best: bool = True

    def __post_init__(self):
        if self.mode not in _MODES:
            raise ValueError(f"EarlyStopping mode must be one of {_MODES}, got {self.mode!r}")
        if not isinstance(self.monitor, str):
            raise TypeError(f"EarlyStopping monitor must be a history column's name, got {self.monitor!r}")
        # NumPy integers and floats (from np.arange in a sweep, say) count as numbers; stored as Python ones, so the
        # run's config stays JSON.
        object.__setattr__(self, "patience", check_positive_int("EarlyStopping patience", self.patience))
        if (
            isinstance(self.min_delta, bool)
            or not isinstance(self.min_delta, numbers.Real)
            or not (self.min_delta >= 0)
            or math.isinf(self.min_delta)
        ):
            raise ValueError(f"EarlyStopping min_delta must be a finite number >= 0, got {self.min_delta!r}")
        object.__setattr__(self, "min_delta", float(self.min_delta))
        if self.mode == "auto" and improves_upward(self.monitor) is None:
            raise ValueError(
                f"EarlyStopping cannot tell from the name {self.monitor!r} whether it improves by going up or down; "
                "pass mode='max' (a score, like accuracy) or mode='min' (a loss or an error)"
            )

    @property
    def maximize(self) -> bool:
        if self.mode != "auto":
            return self.mode == "max"
        return bool(improves_upward(self.monitor))

    def init(self) -> EarlyStoppingState:
        worst = -jnp.inf if self.maximize else jnp.inf
        return EarlyStoppingState(
            best=jnp.asarray(worst, jnp.float32),
            best_epoch=jnp.asarray(-1, jnp.int32),
            wait=jnp.asarray(0, jnp.int32),
            stop=jnp.asarray(False),
        )

    def update(
        self,
        state: EarlyStoppingState,
        value: jax.Array,
        epoch: jax.Array,
        *,
        patience: jax.Array | None = None,
        min_delta: jax.Array | None = None,
    ) -> EarlyStoppingState:
        """The state after an epoch whose monitored quantity is ``value``.

        ``patience`` / ``min_delta``: arrays that replace this rule's own (inside a compiled loop they are values
        in its state, so another patience does not compile the training program again).
        """
        value = jnp.asarray(value, jnp.float32)
        patience = self.patience if patience is None else patience
        min_delta = self.min_delta if min_delta is None else min_delta
        sign = 1.0 if self.maximize else -1.0
        improved = jnp.isfinite(value) & (sign * (value - state.best) > min_delta)
        # The first finite value always becomes the best. With best starting at -+inf and a finite min_delta the
        # comparison above already says so; this keeps it true for any starting value.
        improved = improved | (jnp.isfinite(value) & (state.best_epoch < 0))
        wait = jnp.where(improved, 0, state.wait + 1)
        return EarlyStoppingState(
            best=jnp.where(improved, value, state.best),
            best_epoch=jnp.where(improved, jnp.asarray(epoch, jnp.int32), state.best_epoch),
            wait=wait,
            stop=wait >= patience,
        )
