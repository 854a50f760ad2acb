"""What the builders of datasets bundled with scikit-learn share: a fixed stratified train/test split."""

from __future__ import annotations

import abc
import logging
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

from dlfund.data.splitting import stratified_split

_LOG = logging.getLogger(__name__)


class BundledBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Writes a dataset that is already on disk (inside a Python package) as ``train`` and ``test`` splits.

    The test split is a stratified ``TEST_FRACTION`` of the examples chosen with ``SPLIT_SEED``; both are
    fixed here, not by callers, so every user and every run evaluates on the same test examples. Records are
    kept in the source order (``disable_shuffling``) so that a split reads back in the order it was written.

    Subclasses define ``_info`` and ``_load_examples`` and set ``FEATURE``, the name of the input feature.
    """

    TEST_FRACTION: ClassVar[float] = 0.2
    SPLIT_SEED: ClassVar[int] = 8020
    FEATURE: ClassVar[str]
    disable_shuffling = True

    @abc.abstractmethod
    def _load_examples(self) -> tuple[np.ndarray, np.ndarray]:
        """The whole dataset: inputs (N, *feature_shape) in the feature's dtype, labels (N,) int."""

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator]:
        inputs, labels = self._load_examples()
        train, test = stratified_split(labels, self.TEST_FRACTION, self.SPLIT_SEED)
        return {
            "train": self._generate_examples(inputs, labels, train),
            "test": self._generate_examples(inputs, labels, test),
        }

    def _generate_examples(
        self, inputs: np.ndarray, labels: np.ndarray, positions: np.ndarray
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        # The key is the example's index in the source dataset, so a record can be traced back to it.
        for i in positions:
            yield int(i), {self.FEATURE: inputs[i], "label": int(labels[i])}

    # TFDS prints these two banners to stdout; for a sub-second local preparation with nothing to download
    # they are noise ("Downloading ... Unknown size"), so they go to the debug log instead.
    def _log_download_bytes(self) -> None:
        _LOG.debug("Preparing dataset %s in %s", self.name, self.data_dir)

    def _log_download_done(self) -> None:
        _LOG.debug("Prepared dataset %s in %s", self.name, self.data_dir)
