"""``load``: a registered dataset as normalized NumPy train/val/test arrays; ``open_splits``: the same, lazily."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from dlfund.data.catalog import DATASETS, DatasetSpec
from dlfund.data.dataset import CLASSIFICATION, REGRESSION, Dataset, Normalization
from dlfund.data.errors import CorruptDatasetError
from dlfund.data.preparation import prepare, resolve_data_dir
from dlfund.data.reading import SplitReader
from dlfund.data.splitting import stratified_split


def load(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> Dataset:
    """Loads a registered dataset, preparing its files under ``data_dir`` on first use.

    Offline, no download needed (prepared from scikit-learn's bundled copies, or generated):
      - ``"digits"``: scikit-learn's 1797 8x8 handwritten digits, x (N, 8, 8, 1), 10 classes "0".."9".
        Test 359, train 1438 before the validation carve.
      - ``"digits_rows"``: the same digits as sequences, x (N, 8, 8) = (T, F): row t of the image is time step
        t. Same examples, labels and test split as ``"digits"``.
      - ``"breast_cancer"``: Wisconsin diagnostic breast cancer, x (N, 30), classes ("benign", "malignant").
        Label 1 = malignant (212 of 569), the positive class; scikit-learn's ``load_breast_cancer`` encodes it
        the other way round (0 = malignant). Test 114, train 455 before the validation carve.
      - ``"iris"``: 150 x 4 measurements (cm), classes ("setosa", "versicolor", "virginica"). Test 30.
      - ``"wine"``: 178 x 13 chemical measurements, classes ("class_0", "class_1", "class_2"). Test 36.
      - ``"sines"``: regression (``num_classes=None``), 2000 noisy sums of 2-3 sines: x (N, 32, 1) = a window
        of 32 steps, y (N,) float32 = the next value, in the window's normalized units. Test 400. See
        :func:`dlfund.data.persistence_mse` for the naive baseline.

    Downloaded from the network on first use (TensorFlow Datasets' builders, prepared without TensorFlow):
      - ``"mnist"``, ``"fashion_mnist"``, ``"kmnist"``: 28x28 grey images, x (N, 28, 28, 1), 10 classes;
        train 60000 before the carve, test 10000.
      - ``"cifar10"``, ``"cifar100"``: 32x32 colour images, x (N, 32, 32, 3), 10 / 100 (fine) classes;
        train 50000 before the carve, test 10000.

    The test split is fixed by the dataset (for the offline ones a stratified 20%, the same for every seed).
    ``val`` is a stratified ``val_fraction`` of the dataset's train split chosen by ``seed`` (a seeded random
    choice for regression); ``train`` is the rest. The normalization is fitted on that final train split only
    and applied to all three: 8-bit images ``x / 255`` (digits ``x / 16``), then one mean/std per channel;
    tabular data one mean/std per feature; ``sines`` one mean/std over all window values, also applied to y.
    It is kept in ``Dataset.normalization`` for evaluation and inference.

    Args:
      name: a registered dataset name (case-insensitive, "-" or "_"); see ``dlfund.data.DATASETS``.
      data_dir: where prepared files live; default ``$DLFUND_DATA_DIR`` or ``~/tensorflow_datasets``.
      download: for the downloaded datasets, when their files are missing: ``None`` downloads if the server
        answers within 2 s; ``False`` never downloads; ``True`` tries (and waits out TFDS's retries).
      val_fraction: share of the train split held out for validation, in ``[0, 1)``; 0 gives an empty val.
      seed: chooses the validation examples; the same seed gives identical arrays.

    Returns:
      A :class:`Dataset`: x float32 (N, *input_shape) per split; y (N,) int32 labels, or float32 for regression.

    Raises:
      ValueError: unknown ``name`` (the message lists the known names) or ``val_fraction`` out of range; both
        before any file is touched.
      DatasetNotPreparedError: the files are missing and cannot be downloaded now; raised within a few seconds,
        and the message says how to prepare them on a machine with network access.
      CorruptDatasetError: a prepared file is damaged; the message says what to delete. Nothing is deleted.
    """
    spec, readers = _open_raw(name, data_dir, download, val_fraction)
    # One read of the stored train split serves the validation carve, the statistics and the arrays.
    x_pool, y_pool = readers.pool.read_raw()
    train, val = _carve(spec, y_pool, val_fraction, seed)
    normalization = Normalization.fit(x_pool[train], axis=spec.stats_axes, scale=spec.scale)
    target_normalization = normalization.scalar() if spec.normalize_target else None
    x_test, y_test = readers.test.read_raw()

    def finish(x_raw: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        y = y if target_normalization is None else target_normalization.apply(y)
        return normalization.apply(x_raw), y

    return Dataset(
        name=readers.name,
        train=finish(x_pool[train], y_pool[train]),
        val=finish(x_pool[val], y_pool[val]),
        test=finish(x_test, y_test),
        num_classes=readers.num_classes,
        input_shape=readers.input_shape,
        class_names=readers.class_names,
        normalization=normalization,
        target_normalization=target_normalization,
    )


@dataclasses.dataclass(frozen=True, eq=False)
class SplitReaders:
    """A registered dataset's three splits as lazy :class:`SplitReader` objects, plus what :class:`Dataset` has.

    ``readers.train.read(range(a, b))`` returns the same normalized ``(x, y)`` that ``load`` puts at those
    positions of ``train``; :meth:`load` reads all three splits into a :class:`Dataset`.
    """

    name: str
    train: SplitReader
    val: SplitReader
    test: SplitReader
    num_classes: int | None
    input_shape: tuple[int, ...]
    class_names: tuple[str, ...]
    normalization: Normalization
    target_normalization: Normalization | None = None

    @property
    def task(self) -> str:
        """``"classification"`` or ``"regression"``."""
        return CLASSIFICATION if self.num_classes is not None else REGRESSION

    def load(self) -> Dataset:
        """Every split read into memory: the :class:`Dataset` that :func:`load` returns for the same arguments."""
        return Dataset(
            name=self.name,
            train=self.train.read(),
            val=self.val.read(),
            test=self.test.read(),
            num_classes=self.num_classes,
            input_shape=self.input_shape,
            class_names=self.class_names,
            normalization=self.normalization,
            target_normalization=self.target_normalization,
        )


def open_splits(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    chunk_size: int = 4096,
) -> SplitReaders:
    """Like :func:`load` (same arguments, same splits and normalization), without holding a split in memory.

    Preparing the readers reads the stored train split twice, ``chunk_size`` examples at a time: once for the
    labels that the stratified validation carve needs, once for the normalization statistics. Nothing else
    is kept in memory.

    Raises:
      The same errors as :func:`load`.
    """
    spec, raw = _open_raw(name, data_dir, download, val_fraction)
    train, val = _carve(spec, raw.pool.labels(chunk_size), val_fraction, seed)
    train_reader = raw.pool.subset(train)
    normalization = Normalization.fit_chunks(
        (x for x, _ in train_reader.chunks(chunk_size)), axis=spec.stats_axes, scale=spec.scale
    )
    target_normalization = normalization.scalar() if spec.normalize_target else None
    return SplitReaders(
        name=raw.name,
        train=train_reader.with_normalization(normalization, target_normalization),
        val=raw.pool.subset(val).with_normalization(normalization, target_normalization),
        test=raw.test.with_normalization(normalization, target_normalization),
        num_classes=raw.num_classes,
        input_shape=raw.input_shape,
        class_names=raw.class_names,
        normalization=normalization,
        target_normalization=target_normalization,
    )


@dataclasses.dataclass(frozen=True)
class _RawSplits:
    """A prepared dataset's stored ``train`` split (before the validation carve) and ``test`` split."""

    name: str
    pool: SplitReader
    test: SplitReader
    num_classes: int | None
    input_shape: tuple[int, ...]
    class_names: tuple[str, ...]


def _open_raw(
    name: str, data_dir: str | os.PathLike | None, download: bool | None, val_fraction: float
) -> tuple[DatasetSpec, _RawSplits]:
    spec = DATASETS.get(name)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if download not in (None, True, False):
        raise TypeError(f"download must be None, True or False, got {download!r}")
    builder = prepare(spec.builder(), resolve_data_dir(data_dir), download=download)
    features = builder.info.features
    if spec.task == CLASSIFICATION:
        labels = features[spec.target]
        num_classes, class_names = labels.num_classes, tuple(labels.names)
    else:
        num_classes, class_names = None, ()
    feature = features[spec.feature]
    input_shape = tuple(feature.shape)

    def reader(split: str) -> SplitReader:
        location = os.fspath(Path(builder.data_path))
        try:
            source = builder.as_data_source(split=split)
        except Exception as error:
            raise CorruptDatasetError(
                f"Could not open split {split!r} of dataset {builder.name!r} in {location} ({type(error).__name__}: "
                f"{error}). Delete the folder {location} and load the dataset again to prepare it anew. "
                "dlfund deleted nothing."
            ) from error
        return SplitReader(
            source=source,
            positions=np.arange(len(source), dtype=np.int64),
            feature=spec.feature,
            target=spec.target,
            input_shape=input_shape,
            stored_dtype=np.dtype(feature.np_dtype),
            task=spec.task,
            dataset=builder.name,
            location=location,
        )

    raw = _RawSplits(builder.name, reader("train"), reader("test"), num_classes, input_shape, class_names)
    return spec, raw


def _carve(spec: DatasetSpec, y_pool: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) positions within the stored train split; stratified by class for classification."""
    # One stratum for regression targets: a seeded random choice of positions.
    strata = y_pool if spec.task == CLASSIFICATION else np.zeros(len(y_pool), np.int64)
    return stratified_split(strata, val_fraction, seed)
