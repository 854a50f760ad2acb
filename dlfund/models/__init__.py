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
from dlfund.models.blocks import Dropout, MultiHeadSelfAttention, attention, dropout_rate, set_dropout
from dlfund.models.cnn import CNN
from dlfund.models.linear import LogisticRegression, Perceptron, perceptron_rule
from dlfund.models.mlp import MLP
from dlfund.models.resnet import ResNet
from dlfund.models.rnn import GRU, LSTM, RNN, RecurrentModel
from dlfund.models.transformer import Transformer, default_patch_size
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


def _image_shape(model: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ValueError(f"the {model} model takes images: input_shape (H, W, C), got {input_shape}")
    return input_shape


@MODELS.register("cnn")
def _build_cnn(input_shape: tuple[int, ...], num_classes: int, *, rngs: nnx.Rngs, **options: Any) -> CNN:
    return CNN(_image_shape("cnn", input_shape), num_classes=num_classes, rngs=rngs, **options)


@MODELS.register("resnet")
def _build_resnet(input_shape: tuple[int, ...], num_classes: int, *, rngs: nnx.Rngs, **options: Any) -> ResNet:
    return ResNet(_image_shape("resnet", input_shape), num_classes=num_classes, rngs=rngs, **options)


def _sequence_features(model: str, input_shape: tuple[int, ...]) -> int:
    # (T, F) sequences; an image (H, W, C) is read row by row: H steps of W*C numbers.
    if len(input_shape) < 2:
        raise ValueError(
            f"the {model} model reads sequences: input_shape (T, F), or (H, W, C) read row by row; got "
            f"{input_shape} (one flat vector per example has no time axis)"
        )
    return math.prod(input_shape[1:])


def _recurrent_builder(name: str, cls: type[RecurrentModel]) -> ModelBuilder:
    def build_recurrent(input_shape: tuple[int, ...], num_classes: int, *, rngs: nnx.Rngs, **options: Any):
        return cls(_sequence_features(name, input_shape), num_classes=num_classes, rngs=rngs, **options)

    build_recurrent.__name__ = f"_build_{name}"
    return build_recurrent


MODELS.register("rnn", _recurrent_builder("rnn", RNN))
MODELS.register("lstm", _recurrent_builder("lstm", LSTM))
MODELS.register("gru", _recurrent_builder("gru", GRU))


@MODELS.register("transformer")
def _build_transformer(
    input_shape: tuple[int, ...], num_classes: int, *, rngs: nnx.Rngs, **options: Any
) -> Transformer:
    """Sequences (T, F): F features per token, max_len T. Images (H, W, C): p x p patches, p from
    :func:`default_patch_size` unless ``patch_size`` is given, and max_len the number of patches."""
    if len(input_shape) == 3:
        h, w, c = input_shape
        p = options.pop("patch_size", None) or default_patch_size(h, w)
        options.setdefault("max_len", (h // p) * (w // p))  # a p that does not divide H, W fails in Transformer
        return Transformer(p * p * c, num_classes, patch_size=p, image_shape=input_shape, rngs=rngs, **options)
    options.setdefault("max_len", input_shape[0])
    return Transformer(_sequence_features("transformer", input_shape), num_classes, rngs=rngs, **options)


#: The classes ``dlfund.load_model`` may rebuild from a run folder's recorded class name and arguments. Only these:
#: a name from a file someone shared must not reach arbitrary attributes of this module.
MODEL_CLASSES: dict[str, type[Model]] = {
    cls.__name__: cls for cls in (Perceptron, LogisticRegression, MLP, CNN, ResNet, RNN, LSTM, GRU, Transformer)
}


def build(name: str, input_shape: tuple[int, ...], num_classes: int, *, rngs: nnx.Rngs, **options: Any) -> Model:
    """Builds the model called ``name`` for examples of ``input_shape`` and ``num_classes`` classes."""
    return MODELS.get(name)(tuple(input_shape), num_classes, rngs=rngs, **options)


__all__ = [
    "CNN",
    "GRU",
    "LSTM",
    "MLP",
    "MODELS",
    "MODEL_CLASSES",
    "RNN",
    "Dropout",
    "FlatInputModel",
    "LogisticRegression",
    "Model",
    "MultiHeadSelfAttention",
    "Perceptron",
    "RecurrentModel",
    "ResNet",
    "Transformer",
    "attention",
    "build",
    "default_patch_size",
    "dropout_rate",
    "perceptron_rule",
    "set_dropout",
]
