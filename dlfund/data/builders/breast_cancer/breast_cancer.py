"""The Wisconsin diagnostic breast cancer data bundled with scikit-learn, as a TFDS dataset.

Labels differ from scikit-learn's: here 1 = malignant and 0 = benign (scikit-learn's ``load_breast_cancer``
has 0 = malignant, 1 = benign), so that the positive class of precision, recall and ROC curves is the disease.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from dlfund.data.builders.base import BundledBuilder

_DESCRIPTION = """\
Breast Cancer Wisconsin (Diagnostic) (W. H. Wolberg, W. N. Street, O. L. Mangasarian): 569 breast masses,
212 malignant and 357 benign, in the copy that scikit-learn ships (`sklearn.datasets.load_breast_cancer`).
Each example has 30 real-valued features computed from a digitized image of a fine needle aspirate: the mean,
the standard error and the "worst" (mean of the three largest values) of ten properties of the cell nuclei
(radius, texture, perimeter, area, smoothness, compactness, concavity, concave points, symmetry, fractal
dimension), in scikit-learn's feature order.

Stored as `features`: float32 (30,), and `label`: 0 = benign, 1 = malignant. Note that this is the reverse of
scikit-learn's encoding (0 = malignant), so that the positive class is the disease. Splits: a stratified 80/20
`train`/`test` split with a fixed seed.
"""

_CITATION = """\
@misc{wolberg1995wdbc,
  author       = {Wolberg, William H. and Street, W. Nick and Mangasarian, Olvi L.},
  title        = {Breast Cancer Wisconsin (Diagnostic)},
  year         = {1995},
  howpublished = {UCI Machine Learning Repository},
  doi          = {10.24432/C5DW2B},
}
@inproceedings{street1993nuclear,
  author    = {Street, W. Nick and Wolberg, William H. and Mangasarian, Olvi L.},
  title     = {Nuclear feature extraction for breast tumor diagnosis},
  booktitle = {IS\\&T/SPIE 1993 International Symposium on Electronic Imaging: Science and Technology},
  volume    = {1905},
  pages     = {861--870},
  address   = {San Jose, CA},
  year      = {1993},
}
"""

_HOMEPAGE = "https://archive.ics.uci.edu/dataset/17/breast+cancer+wisconsin+diagnostic"


class BreastCancer(BundledBuilder):
    """Wisconsin diagnostic breast cancer: ``features`` float32 (30,), ``label`` 0 = benign, 1 = malignant."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Initial release: stratified 80/20 train/test split; 1 = malignant."
    }
    FEATURE = "features"

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=_DESCRIPTION,
            features=tfds.features.FeaturesDict(
                {
                    "features": tfds.features.Tensor(shape=(30,), dtype=np.float32),
                    "label": tfds.features.ClassLabel(names=["benign", "malignant"]),
                }
            ),
            supervised_keys=("features", "label"),
            homepage=_HOMEPAGE,
            citation=_CITATION,
        )

    def _load_examples(self) -> tuple[np.ndarray, np.ndarray]:
        """Features (569, 30) float32 and labels (569,) with 1 = malignant."""
        # Imported here: scikit-learn takes about a second to import and is only needed to prepare the files.
        from sklearn.datasets import load_breast_cancer

        data = load_breast_cancer()
        # scikit-learn encodes malignant as 0; flip so that malignant is the positive class.
        malignant = (data.target == list(data.target_names).index("malignant")).astype(np.int64)
        return data.data.astype(np.float32), malignant
