"""What the builders of offline datasets share: a fixed train/test split, made once when the files are written."""

from __future__ import annotations

import abc
import logging
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

from dlfund.data.splitting import TEST_SEED, stratified_split

_LOG = logging.getLogger(__name__)


class BundledBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Writes a dataset that needs no download (shipped in a Python package, or generated) as train and test.

    The test split is a stratified ``TEST_FRACTION`` of the examples chosen with ``SPLIT_SEED`` (a plain
    seeded random choice for regression targets, which have no classes); both are fixed here, not by callers,
    so every user and every run evaluates on the same test examples. Records are kept in the source order
    (``disable_shuffling``) so that a split reads back in the order it was written.

    Subclasses define ``_info`` and ``_load_examples`` and set ``FEATURE``, the name of the input feature, and
    for regression ``TARGET`` and ``STRATIFIED = False``.
    """

    TEST_FRACTION: ClassVar[float] = 0.2
    SPLIT_SEED: ClassVar[int] = TEST_SEED
    FEATURE: ClassVar[str]
    TARGET: ClassVar[str] = "label"
    STRATIFIED: ClassVar[bool] = True
    disable_shuffling = True

    @abc.abstractmethod
    def _load_examples(self) -> tuple[np.ndarray, np.ndarray]:
        """The whole dataset: inputs (N, *feature_shape) in the feature's dtype, targets (N,): int labels or floats."""

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator]:
        inputs, labels = self._load_examples()
        # Every example in one stratum makes the stratified split a seeded random split of all positions.
        strata = labels if self.STRATIFIED else np.zeros(len(labels), np.int64)
        train, test = stratified_split(strata, self.TEST_FRACTION, self.SPLIT_SEED)
        return {
            "train": self._generate_examples(inputs, labels, train),
            "test": self._generate_examples(inputs, labels, test),
        }

    def _generate_examples(
        self, inputs: np.ndarray, labels: np.ndarray, positions: np.ndarray
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        # The key is the example's index in the source dataset, so a record can be traced back to it.
        for i in positions:
            # .item(): a Python int for a ClassLabel, a Python float for a float32 scalar target.
            yield int(i), {self.FEATURE: inputs[i], self.TARGET: labels[i].item()}

    # TFDS prints these two banners to stdout; for a sub-second local preparation with nothing to download
    # they are noise ("Downloading ... Unknown size"), so they go to the debug log instead.
    def _log_download_bytes(self) -> None:
        _LOG.debug("Preparing dataset %s in %s", self.name, self.data_dir)

    def _log_download_done(self) -> None:
        _LOG.debug("Prepared dataset %s in %s", self.name, self.data_dir)
