"""The UCI wine recognition data bundled with scikit-learn, as a TFDS dataset."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from dlfund.data.builders.base import BundledBuilder

_DESCRIPTION = """\
Wine recognition (M. Forina et al.): a chemical analysis of 178 wines grown in the same region of Italy from
three cultivars (59, 71 and 48 wines), in the copy that scikit-learn ships (`sklearn.datasets.load_wine`).
Each wine has 13 measurements, in scikit-learn's order: alcohol, malic acid, ash, alcalinity of ash,
magnesium, total phenols, flavanoids, nonflavanoid phenols, proanthocyanins, colour intensity, hue,
OD280/OD315 of diluted wines, proline. Their scales differ by three orders of magnitude (hue ~1, proline
~750), which is why the features are standardized one by one.

Stored as `features`: float32 (13,), and `label`: the cultivar, named "class_0".."class_2" as in the source.
Splits: a stratified 80/20 `train`/`test` split with a fixed seed.
"""

_CITATION = """\
@misc{forina1991wine,
  author       = {Forina, M. and Leardi, R. and Armanino, C. and Lanteri, S.},
  title        = {Wine},
  year         = {1991},
  howpublished = {UCI Machine Learning Repository},
  doi          = {10.24432/C5PC7J},
}
@techreport{aeberhard1992comparison,
  author      = {Aeberhard, S. and Coomans, D. and de Vel, O.},
  title       = {Comparison of Classifiers in High Dimensional Settings},
  institution = {James Cook University of North Queensland},
  number      = {92-02},
  year        = {1992},
}
"""

_HOMEPAGE = "https://archive.ics.uci.edu/dataset/109/wine"


class Wine(BundledBuilder):
    """Wine recognition: ``features`` float32 (13,), ``label`` 0..2 = "class_0".."class_2" (the cultivar)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release: stratified 80/20 train/test split."}
    FEATURE = "features"

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=_DESCRIPTION,
            features=tfds.features.FeaturesDict(
                {
                    "features": tfds.features.Tensor(shape=(13,), dtype=np.float32),
                    "label": tfds.features.ClassLabel(names=["class_0", "class_1", "class_2"]),
                }
            ),
            supervised_keys=("features", "label"),
            homepage=_HOMEPAGE,
            citation=_CITATION,
        )

    def _load_examples(self) -> tuple[np.ndarray, np.ndarray]:
        """Features (178, 13) float32 and labels (178,)."""
        # Imported here: scikit-learn takes about a second to import and is only needed to prepare the files.
        from sklearn.datasets import load_wine

        data = load_wine()
        return data.data.astype(np.float32), data.target
