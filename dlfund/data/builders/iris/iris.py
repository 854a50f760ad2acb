"""Fisher's iris data bundled with scikit-learn, as a TFDS dataset."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from dlfund.data.builders.base import BundledBuilder

_DESCRIPTION = """\
Iris (R. A. Fisher, 1936): 150 iris flowers, 50 of each of three species (setosa, versicolor, virginica), in
the copy that scikit-learn ships (`sklearn.datasets.load_iris`). Each flower has 4 measurements in cm: sepal
length, sepal width, petal length, petal width, in that order. Setosa is linearly separable from the other two;
versicolor and virginica overlap slightly.

Stored as `features`: float32 (4,), and `label`: the species. Splits: a stratified 80/20 `train`/`test` split
with a fixed seed.
"""

_CITATION = """\
@article{fisher1936iris,
  author  = {Fisher, R. A.},
  title   = {The Use of Multiple Measurements in Taxonomic Problems},
  journal = {Annals of Eugenics},
  volume  = {7},
  number  = {2},
  pages   = {179--188},
  year    = {1936},
  doi     = {10.1111/j.1469-1809.1936.tb02137.x},
}
"""

_HOMEPAGE = "https://archive.ics.uci.edu/dataset/53/iris"


class Iris(BundledBuilder):
    """Iris: ``features`` float32 (4,) in cm, ``label`` 0..2 = setosa, versicolor, virginica."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release: stratified 80/20 train/test split."}
    FEATURE = "features"

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=_DESCRIPTION,
            features=tfds.features.FeaturesDict(
                {
                    "features": tfds.features.Tensor(shape=(4,), dtype=np.float32),
                    "label": tfds.features.ClassLabel(names=["setosa", "versicolor", "virginica"]),
                }
            ),
            supervised_keys=("features", "label"),
            homepage=_HOMEPAGE,
            citation=_CITATION,
        )

    def _load_examples(self) -> tuple[np.ndarray, np.ndarray]:
        """Features (150, 4) float32 and labels (150,) in scikit-learn's order of species."""
        # Imported here: scikit-learn takes about a second to import and is only needed to prepare the files.
        from sklearn.datasets import load_iris

        data = load_iris()
        return data.data.astype(np.float32), data.target
