"""The registry of dataset names that :func:`dlfund.data.load` accepts, and how each one is normalized."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

from dlfund.registry import Registry

if TYPE_CHECKING:
    import tensorflow_datasets as tfds


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """How to get one dataset and turn its stored values into model inputs.

    Attributes:
      builder: returns the TFDS builder class; a function so that TFDS is imported only once it is needed.
      feature: name of the input feature in the builder's records (the other one is ``"label"``).
      scale: factor applied to the stored values before the mean/std normalization.
      stats_axes: axes of x (N, *input_shape) that mean and std average over: per channel for images, per
        feature for tabular data.
    """

    builder: Callable[[], type[tfds.core.GeneratorBasedBuilder]]
    feature: str
    scale: float
    stats_axes: tuple[int, ...]


def _digits_builder() -> type[tfds.core.GeneratorBasedBuilder]:
    from dlfund.data.builders.digits import Digits

    return Digits


def _breast_cancer_builder() -> type[tfds.core.GeneratorBasedBuilder]:
    from dlfund.data.builders.breast_cancer import BreastCancer

    return BreastCancer


DATASETS: Registry[DatasetSpec] = Registry("dataset")
# Ink counts 0..16 -> [0, 1], then one mean/std for the single channel (axes N, H, W).
DATASETS.register("digits", DatasetSpec(_digits_builder, feature="image", scale=1 / 16, stats_axes=(0, 1, 2)))
DATASETS.register("breast_cancer", DatasetSpec(_breast_cancer_builder, feature="features", scale=1.0, stats_axes=(0,)))
