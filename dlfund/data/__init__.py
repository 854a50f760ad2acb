"""Datasets as NumPy arrays: ``load(name)`` returns normalized train/val/test splits of a registered dataset.

The default datasets ship with scikit-learn, so they work offline. Each is a TFDS builder that writes
``array_record`` files under a data directory on first use (no TensorFlow needed), read back through TFDS's
random-access data source.
"""

from __future__ import annotations

from dlfund.data.catalog import DATASETS
from dlfund.data.dataset import Dataset, Normalization
from dlfund.data.loading import load

__all__ = ["DATASETS", "Dataset", "Normalization", "load"]
