"""scikit-learn's 8x8 digits as sequences of rows (T=8 steps of F=8 features), as a TFDS dataset.

The same examples, labels and test split as ``digits``: the split is a function of the labels alone, so a
digit is in this dataset's test split exactly when it is in ``digits``'s.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from dlfund.data.builders.base import BundledBuilder
from dlfund.data.builders.digits.digits import _CITATION, _HOMEPAGE

_DESCRIPTION = """\
The 1797 8x8 handwritten digits of `digits` (scikit-learn's copy of the UCI optical recognition of handwritten
digits, values 0..16), each read as a sequence: time step t is image row t (top to bottom) and its 8 features
are that row's pixels (left to right). The classic first exercise for recurrent networks, at a size that
trains in seconds on a CPU.

Stored as `rows`: uint8 (8, 8) = (time, feature) with values 0..16, and `label`: the digit. Splits: the same
stratified 80/20 `train`/`test` split as `digits`.
"""


class DigitsRows(BundledBuilder):
    """The digits as sequences: ``rows`` uint8 (8, 8) = (T, F) in 0..16, ``label`` 0..9 (names "0".."9")."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release: the test split of digits 1.0.0."}
    FEATURE = "rows"

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=_DESCRIPTION,
            features=tfds.features.FeaturesDict(
                {
                    "rows": tfds.features.Tensor(shape=(8, 8), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(names=[str(d) for d in range(10)]),
                }
            ),
            supervised_keys=("rows", "label"),
            homepage=_HOMEPAGE,
            citation=_CITATION,
        )

    def _load_examples(self) -> tuple[np.ndarray, np.ndarray]:
        """Rows (1797, 8, 8) uint8 and labels (1797,) int."""
        # Imported here: scikit-learn takes about a second to import and is only needed to prepare the files.
        from sklearn.datasets import load_digits

        digits = load_digits()
        return digits.images.astype(np.uint8), digits.target
