"""Models (Flax NNX modules) and the registry that builds them by name.

``MODELS`` maps a name to a builder ``build(input_shape, num_classes, *, rngs, **options) -> Model`` so that the
command line can say ``--model mlp``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from flax import nnx

from dlfund.models.base import FlatInputModel, Model
from dlfund.models.linear import LogisticRegression, Perceptron, perceptron_rule
from dlfund.models.mlp import MLP
from dlfund.registry import Registry

ModelBuilder = Callable[..., Model]
MODELS: Registry[ModelBuilder] = Registry("model")


@MODELS.register("mlp")
def _build_mlp(input_shape: tuple[int, ...], num_classes: int, *, rngs: nnx.Rngs, **options: Any) -> MLP:
    return MLP(math.prod(input_shape), num_classes=num_classes, rngs=rngs, **options)


@MODELS.register("logistic_regression")
def _build_logistic(
    input_shape: tuple[int, ...], num_classes: int, *, rngs: nnx.Rngs, **options: Any
) -> LogisticRegression:
    return LogisticRegression(math.prod(input_shape), max(num_classes, 2), rngs=rngs, **options)


@MODELS.register("perceptron")
def _build_perceptron(input_shape: tuple[int, ...], num_classes: int, *, rngs: nnx.Rngs, **options: Any) -> Perceptron:
    if num_classes > 2:
        raise ValueError(f"a perceptron is a binary classifier; this dataset has {num_classes} classes")
    return Perceptron(math.prod(input_shape), rngs=rngs, **options)


def build(name: str, input_shape: tuple[int, ...], num_classes: int, *, rngs: nnx.Rngs, **options: Any) -> Model:
    """Builds the model called ``name`` for examples of ``input_shape`` and ``num_classes`` classes."""
    return MODELS.get(name)(tuple(input_shape), num_classes, rngs=rngs, **options)


__all__ = [
    "MLP",
    "MODELS",
    "FlatInputModel",
    "LogisticRegression",
    "Model",
    "Perceptron",
    "build",
    "perceptron_rule",
]
