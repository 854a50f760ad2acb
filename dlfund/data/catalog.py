"""The registry of dataset names that :func:`dlfund.data.load` accepts, and how each one is normalized."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from dlfund.data.dataset import CLASSIFICATION, REGRESSION
from dlfund.registry import Registry

if TYPE_CHECKING:
    import tensorflow_datasets as tfds


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """How to get one dataset and turn its stored values into model inputs.

    Attributes:
      builder: returns the TFDS builder class; a function so that TFDS is imported only once it is needed.
      feature: name of the input feature in the builder's records.
      scale: factor applied to the stored values before the mean/std normalization.
      stats_axes: axes of x (N, *input_shape) that mean and std average over: per channel for images, per
        feature for tabular data.
      target: name of the label (classification) or target value (regression) in the records.
      task: ``"classification"`` or ``"regression"``.
      normalize_target: regression targets that are the next value of the single input channel are mapped
        with the input's normalization, so that inputs and targets share units.
      downloads: the files come from the network (prepared once); False: offline (shipped or generated).
    """

    builder: Callable[[], type[tfds.core.GeneratorBasedBuilder]]
    feature: str
    scale: float
    stats_axes: tuple[int, ...]
    target: str = "label"
    task: str = CLASSIFICATION
    normalize_target: bool = False
    downloads: bool = False


def _builder(module: str, name: str) -> Callable[[], type[tfds.core.GeneratorBasedBuilder]]:
    """A deferred import of ``dlfund.data.builders.<module>.<name>``."""

    def get() -> type[tfds.core.GeneratorBasedBuilder]:
        return getattr(importlib.import_module(f"dlfund.data.builders.{module}"), name)

    return get


_PIXELS = (0, 1, 2)  # N, H, W of (N, H, W, C): one mean/std per channel
_FEATURES = (0,)  # N of (N, F): one mean/std per feature

DATASETS: Registry[DatasetSpec] = Registry("dataset")
# Ink counts 0..16 -> [0, 1], then one mean/std for the single channel (axes N, H, W).
DATASETS.register(
    "digits", DatasetSpec(_builder("digits", "Digits"), feature="image", scale=1 / 16, stats_axes=_PIXELS)
)
# The 8 columns of a row are pixels of one image, so they share the digits' single ink statistic; per-column
# statistics would turn the rare ink of the nearly empty edge columns into inputs of ~20 that saturate tanh.
DATASETS.register(
    "digits_rows",
    DatasetSpec(_builder("digits_rows", "DigitsRows"), feature="rows", scale=1 / 16, stats_axes=(0, 1, 2)),
)
for _name, _cls in [("breast_cancer", "BreastCancer"), ("iris", "Iris"), ("wine", "Wine")]:
    DATASETS.register(_name, DatasetSpec(_builder(_name, _cls), feature="features", scale=1.0, stats_axes=_FEATURES))
# One series per example; the target is the series' next value, in the window's own units.
DATASETS.register(
    "sines",
    DatasetSpec(
        _builder("sines", "Sines"),
        feature="window",
        scale=1.0,
        stats_axes=(0, 1),
        target="target",
        task=REGRESSION,
        normalize_target=True,
    ),
)
# TensorFlow Datasets' image classification sets: 8-bit pixels -> [0, 1], then one mean/std per channel.
for _name, _cls in [
    ("mnist", "Mnist"),
    ("fashion_mnist", "FashionMnist"),
    ("kmnist", "Kmnist"),
    ("cifar10", "Cifar10"),
    ("cifar100", "Cifar100"),
]:
    DATASETS.register(
        _name,
        DatasetSpec(_builder("downloaded", _cls), feature="image", scale=1 / 255, stats_axes=_PIXELS, downloads=True),
    )
