"""What every dlfund model shares: its default loss, its input check, and its constructor arguments."""

from __future__ import annotations

import math
from typing import Any, ClassVar

from flax import nnx


class Model(nnx.Module):
    """Base class of dlfund's models (Flax NNX modules).

    Subclasses call ``self._remember(...)`` with their constructor arguments (so a run folder can rebuild the
    model from its config) and implement ``penultimate(x, *, rngs=None)`` (the features the head reads, [B, F])
    and ``__call__(x, *, rngs=None)``, where ``rngs`` is a PRNG key for dropout
    during training (ignored by models without dropout). Training/evaluation mode is NNX's ``model.train()`` /
    ``model.eval()``; the train and eval steps set it for you.
    """

    #: the loss ``dlfund.fit`` uses when none is given
    default_loss: ClassVar[str] = "softmax_cross_entropy"
    #: the attribute holding the output layer (``model.head(model.penultimate(x))`` is ``model(x)`` in eval mode);
    #: transfer learning replaces it and ``fit(freeze="backbone")`` trains only it
    head_name: ClassVar[str] = "head"

    def _remember(self, **config: Any) -> None:
        # A tuple of pairs is hashable and static: it lives in the graph definition, not in the state. The dropout
        # rate is a value in the state (blocks.Dropout), so the graph records only whether there is dropout:
        # models that differ in their rate share compiled programs.
        if "dropout" in config:
            config["dropout"] = config["dropout"] > 0
        self.config_items = tuple(config.items())

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments (without ``rngs``); ``dropout`` is the current rate of its dropout layers."""
        config = dict(self.config_items)
        if "dropout" in config:
            from dlfund.models.blocks import dropout_rate

            config["dropout"] = dropout_rate(self)
        return config

    def check_input(self, example_shape: tuple[int, ...]) -> None:
        """Raises ``ValueError`` naming expected and received shapes if one example of this shape does not fit."""


class FlatInputModel(Model):
    """A model that reads each example as a flat vector of ``in_features`` numbers (any shape, flattened)."""

    in_features: int

    def check_input(self, example_shape: tuple[int, ...]) -> None:
        got = math.prod(example_shape)
        if got != self.in_features:
            raise ValueError(
                f"{type(self).__name__} expects {self.in_features} input features per example "
                f"(in_features={self.in_features}), but the data's examples have shape {tuple(example_shape)} "
                f"= {got} features. Build the model with in_features={got}, or pass data of the right shape."
            )


def check_rate(name: str, rate: float) -> float:
    """A dropout-like probability in [0, 1)."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not (0.0 <= rate < 1.0):
        raise ValueError(f"{name} must be a probability in [0, 1), got {rate!r}")
    return float(rate)


def check_size(name: str, value: Any) -> int:
    """A positive integer layer size."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value
