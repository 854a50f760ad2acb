"""``load``: a registered dataset as normalized NumPy train/val/test arrays."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from dlfund.data.catalog import DATASETS
from dlfund.data.dataset import Dataset, Normalization
from dlfund.data.preparation import prepare, resolve_data_dir
from dlfund.data.splitting import stratified_split

if TYPE_CHECKING:
    import tensorflow_datasets as tfds


def load(name: str, *, data_dir: str | os.PathLike | None = None, val_fraction: float = 0.1, seed: int = 0) -> Dataset:
    """Loads a dataset that needs no download, preparing its files under ``data_dir`` on first use.

    Datasets (``dlfund.data.DATASETS``):
      - ``"digits"``: scikit-learn's 1797 8x8 handwritten digits, x (N, 8, 8, 1), 10 classes "0".."9".
        Test 359, train 1438 before the validation carve.
      - ``"breast_cancer"``: Wisconsin diagnostic breast cancer, x (N, 30), classes ("benign", "malignant").
        Label 1 = malignant (212 of 569), the positive class; scikit-learn's ``load_breast_cancer`` encodes it
        the other way round (0 = malignant). Test 114, train 455 before the validation carve.

    The test split is fixed by the dataset (a stratified 20%, the same for every seed). ``val`` is a
    stratified ``val_fraction`` of the dataset's train split chosen by ``seed``; ``train`` is the rest. The
    normalization (digits: x / 16, then one mean/std for the channel; breast_cancer: mean/std per feature) is
    fitted on that final train split only and applied to all three.

    Args:
      name: a registered dataset name (case-insensitive, "-" or "_").
      data_dir: where prepared files live; default ``$DLFUND_DATA_DIR`` or ``~/tensorflow_datasets``.
      val_fraction: share of the train split held out for validation, in ``[0, 1)``; 0 gives an empty val.
      seed: chooses the validation examples; the same seed gives identical arrays.

    Returns:
      A :class:`Dataset` with x float32 (N, *input_shape) and y int32 (N,) per split.

    Raises:
      ValueError: unknown ``name`` (the message lists the known names) or ``val_fraction`` out of range; both
        before any file is touched.
    """
    spec = DATASETS.get(name)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    builder = prepare(spec.builder(), resolve_data_dir(data_dir))
    x_pool, y_pool = _read_split(builder, "train", spec.feature)
    x_test, y_test = _read_split(builder, "test", spec.feature)

    train, val = stratified_split(y_pool, val_fraction, seed)
    normalization = Normalization.fit(x_pool[train], axis=spec.stats_axes, scale=spec.scale)
    labels = builder.info.features["label"]
    return Dataset(
        name=builder.name,
        train=(normalization.apply(x_pool[train]), y_pool[train]),
        val=(normalization.apply(x_pool[val]), y_pool[val]),
        test=(normalization.apply(x_test), y_test),
        num_classes=labels.num_classes,
        input_shape=tuple(builder.info.features[spec.feature].shape),
        class_names=tuple(labels.names),
        normalization=normalization,
    )


def _read_split(builder: tfds.core.DatasetBuilder, split: str, feature: str) -> tuple[np.ndarray, np.ndarray]:
    """One split, in order: stored inputs (N, *feature_shape) in the feature's dtype, labels (N,) int32."""
    source = builder.as_data_source(split=split)
    # One batched read of every record instead of N single lookups.
    records = source.__getitems__(list(range(len(source))))
    inputs = np.stack([record[feature] for record in records])
    labels = np.asarray([record["label"] for record in records], dtype=np.int32)
    return inputs, labels
