"""Datasets as NumPy arrays: normalized train/val/test splits of a registered dataset, or of your own data.

- ``load(name)``: a registered dataset (``DATASETS``). The offline ones ship with scikit-learn or are generated;
  MNIST-family and CIFAR sets are downloaded once. Each is a TFDS builder that writes ``array_record`` files
  under a data directory on first use (no TensorFlow needed), read back through TFDS's random-access data
  source. ``open_splits(name)`` gives the same splits as lazy readers (``SplitReader.read(indices)``).
- ``from_arrays(x, y)`` and ``image_folder(path)``: your own data, split and normalized by the same rules.
- ``augment``: on-device augmentation of image batches (``compose(("crop:4", "flip"))``), applied inside the train
  step by ``dlfund.fit(..., augment=...)``.
"""

from __future__ import annotations

from dlfund.data import augment
from dlfund.data.arrays import from_arrays
from dlfund.data.baselines import persistence_mse
from dlfund.data.catalog import DATASETS
from dlfund.data.dataset import Dataset, Normalization
from dlfund.data.errors import CorruptDatasetError, DatasetNotPreparedError
from dlfund.data.folders import image_folder
from dlfund.data.loading import SplitReaders, load, open_splits
from dlfund.data.reading import SplitReader

__all__ = [
    "DATASETS",
    "CorruptDatasetError",
    "Dataset",
    "DatasetNotPreparedError",
    "Normalization",
    "SplitReader",
    "SplitReaders",
    "augment",
    "from_arrays",
    "image_folder",
    "load",
    "open_splits",
    "persistence_mse",
]
