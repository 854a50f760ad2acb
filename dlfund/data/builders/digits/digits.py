"""The 1797 8x8 handwritten digits bundled with scikit-learn, as a TFDS dataset."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from dlfund.data.builders.base import BundledBuilder

_DESCRIPTION = """\
Optical recognition of handwritten digits (E. Alpaydin and C. Kaynak, 1998): 1797 images of the digits 0-9,
written by 13 people, in the copy that scikit-learn ships (`sklearn.datasets.load_digits`, the test set of the
UCI dataset). NIST's preprocessing programs extracted normalized 32x32 bitmaps from preprinted forms; each 4x4
block was then replaced by its count of on pixels, giving an 8x8 image of integers in 0..16.

Stored as `image`: uint8 (8, 8, 1) with values 0..16, and `label`: the digit. Splits: a stratified 80/20
`train`/`test` split with a fixed seed.
"""

_CITATION = """\
@misc{alpaydin1998optdigits,
  author       = {Alpaydin, E. and Kaynak, C.},
  title        = {Optical Recognition of Handwritten Digits},
  year         = {1998},
  howpublished = {UCI Machine Learning Repository},
  doi          = {10.24432/C50P49},
}
@article{alpaydin1998cascading,
  author  = {Alpaydin, Ethem and Kaynak, Cenk},
  title   = {Cascading Classifiers},
  journal = {Kybernetika},
  volume  = {34},
  number  = {4},
  pages   = {369--374},
  year    = {1998},
}
"""

_HOMEPAGE = "https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits"


class Digits(BundledBuilder):
    """scikit-learn's 8x8 digits: ``image`` uint8 (8, 8, 1) in 0..16, ``label`` 0..9 (names "0".."9")."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release: stratified 80/20 train/test split."}
    FEATURE = "image"

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=_DESCRIPTION,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(names=[str(d) for d in range(10)]),
                }
            ),
            supervised_keys=("image", "label"),
            homepage=_HOMEPAGE,
            citation=_CITATION,
        )

    def _load_examples(self) -> tuple[np.ndarray, np.ndarray]:
        """Images (1797, 8, 8, 1) uint8 and labels (1797,) int."""
        # Imported here: scikit-learn takes about a second to import and is only needed to prepare the files.
        from sklearn.datasets import load_digits

        digits = load_digits()
        return digits.images.astype(np.uint8)[..., np.newaxis], digits.target
