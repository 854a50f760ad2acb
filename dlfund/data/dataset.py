"""The in-memory dataset that :func:`dlfund.data.load` returns, and the normalization fitted to it."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np

Split = tuple[np.ndarray, np.ndarray]
"""An ``(x, y)`` pair: x (N, *input_shape) float32; y (N,) int32 class ids, or float32 regression targets."""

SPLIT_NAMES = ("train", "val", "test")
CLASSIFICATION = "classification"
REGRESSION = "regression"

# Examples per chunk when fitting statistics: bounds the float64 working copy (CIFAR-10's train split in float64
# at once would be 1.2 GB; a chunk of 4096 of its images is 100 MB).
_FIT_CHUNK = 4096


@dataclasses.dataclass(frozen=True, eq=False)
class Normalization:
    """A fixed affine map ``x = (x_raw * scale - mean) / std`` from stored values to model inputs.

    ``mean`` and ``std`` are in units of ``x_raw * scale`` (for digits, ink in [0, 1]: the stored 0..16 counts
    times 1/16), so they read like the familiar per-channel image statistics.

    Attributes:
      mean: float32, broadcastable against one example and against a batch (N, *input_shape); e.g. (1, 1, 1)
        per channel for (8, 8, 1) images, (30,) per feature for tabular data, () for one scalar.
      std: float32, same shape as ``mean``; never 0 (a feature that is constant on train gets std 1).
      scale: factor applied to the stored values before centring.
    """

    mean: np.ndarray
    std: np.ndarray
    scale: float = 1.0

    @classmethod
    def fit(cls, x_raw: np.ndarray, *, axis: tuple[int, ...], scale: float = 1.0) -> Normalization:
        """Fits mean and std of ``x_raw * scale`` over ``axis``.

        Args:
          x_raw: (N, *input_shape) stored values of the split the statistics may come from (train only), N >= 1.
          axis: axes of ``x_raw`` to average over; must include 0 (the example axis).
          scale: see the class docstring.
        """
        x_raw = np.asarray(x_raw)
        chunks = (x_raw[start : start + _FIT_CHUNK] for start in range(0, len(x_raw), _FIT_CHUNK))
        return cls.fit_chunks(chunks, axis=axis, scale=scale)

    @classmethod
    def fit_chunks(cls, chunks: Iterable[np.ndarray], *, axis: tuple[int, ...], scale: float = 1.0) -> Normalization:
        """Like :meth:`fit`, over a split that arrives in chunks (n_i, *input_shape), e.g. from a ``SplitReader``.

        One pass: the per-chunk means and squared deviations are merged with Chan et al.'s parallel update in
        float64, which matches a two-pass computation over the whole split to float64 rounding.
        """
        if 0 not in axis:
            raise ValueError(f"axis must include the example axis 0, got {axis}")
        count, mean, m2 = 0, None, None
        for chunk in chunks:
            if len(chunk) == 0:
                continue
            x = np.asarray(chunk, np.float64) * scale
            # keepdims then dropping the example axis leaves statistics that broadcast against x and against x[0].
            chunk_mean = x.mean(axis=axis, keepdims=True)[0]
            chunk_m2 = ((x - chunk_mean) ** 2).sum(axis=axis, keepdims=True)[0]
            chunk_count = x.size // chunk_mean.size
            if mean is None:
                count, mean, m2 = chunk_count, chunk_mean, chunk_m2
                continue
            total = count + chunk_count
            delta = chunk_mean - mean
            mean = mean + delta * (chunk_count / total)
            m2 = m2 + chunk_m2 + delta**2 * (count * chunk_count / total)
            count = total
        if mean is None:
            raise ValueError("cannot fit a normalization on an empty split: it needs at least one training example")
        std = np.sqrt(m2 / count)
        # A constant feature has std 0 up to rounding; dividing by it would turn the feature into inf/NaN.
        std = np.where(std > np.finfo(np.float32).eps * np.maximum(np.abs(mean), 1.0), std, 1.0)
        return cls(mean=mean.astype(np.float32), std=std.astype(np.float32), scale=float(scale))

    @classmethod
    def identity(cls, shape: tuple[int, ...] = ()) -> Normalization:
        """The map that leaves values unchanged (mean 0, std 1, scale 1), with statistics of ``shape``."""
        return cls(mean=np.zeros(shape, np.float32), std=np.ones(shape, np.float32), scale=1.0)

    def apply(self, x_raw: np.ndarray) -> np.ndarray:
        """Stored values (N, *input_shape) or (*input_shape) -> normalized float32 of the same shape."""
        return ((np.asarray(x_raw, np.float32) * np.float32(self.scale) - self.mean) / self.std).astype(np.float32)

    def invert(self, x: np.ndarray) -> np.ndarray:
        """Normalized inputs -> stored values (float32, same shape), e.g. to display an image."""
        return ((np.asarray(x, np.float32) * self.std + self.mean) / np.float32(self.scale)).astype(np.float32)

    def to_dict(self) -> dict:
        """A JSON-friendly form (nested lists; float32 values survive the round trip through JSON exactly)."""
        return {
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "shape": list(self.mean.shape),
            "scale": self.scale,
        }

    @classmethod
    def from_dict(cls, record: dict) -> Normalization:
        """The map :meth:`to_dict` described."""
        shape = tuple(record.get("shape", ()))
        mean = np.asarray(record["mean"], np.float32).reshape(shape)
        std = np.asarray(record["std"], np.float32).reshape(shape)
        return cls(mean=mean, std=std, scale=float(record.get("scale", 1.0)))

    def scalar(self) -> Normalization:
        """The same map with scalar statistics (shape ()), for values of any shape; needs a single mean/std.

        A forecast target (N,) is the next value of a one-channel input (N, T, 1): it is normalized with the
        input's map, but the (1, 1) statistics would broadcast (N,) to (1, N).
        """
        if self.mean.size != 1:
            raise ValueError(f"only a map with one mean and std has a scalar form; this one has {self.mean.size}")
        return Normalization(mean=self.mean.reshape(()), std=self.std.reshape(()), scale=self.scale)


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A classification or regression dataset held in memory as NumPy arrays, split into train, val and test.

    Attributes:
      name: registered name (see ``dlfund.data.DATASETS``) or the name given to ``from_arrays``/``image_folder``.
      train, val, test: ``(x, y)`` pairs; x (N, *input_shape) float32 already normalized. Classification: y (N,)
        int32 in ``[0, num_classes)``. Regression: y (N,) float32. No example appears in two splits.
      num_classes: number of classes; ``None`` for a regression dataset.
      input_shape: shape of one example, e.g. (8, 8, 1).
      class_names: one name per label value, ``class_names[y]`` names label ``y``; empty for regression.
      normalization: the map that produced x from the stored values, fitted on ``train`` only;
        ``normalization.invert(x)`` recovers the stored values. Reuse it for any new input at inference.
      target_normalization: regression only, the map that produced y from the stored targets (``invert`` it to
        read predictions in the original units), or ``None`` when y is as stored. For a forecast (``sines``)
        it is the input's own map in scalar form, so ``x[:, -1, 0]`` and ``y`` are in the same units.
    """

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int | None
    input_shape: tuple[int, ...]
    class_names: tuple[str, ...]
    normalization: Normalization
    target_normalization: Normalization | None = None

    def __post_init__(self):
        expected_y = np.int32 if self.num_classes is not None else np.float32
        if self.num_classes is None and self.class_names:
            raise ValueError(f"a regression dataset (num_classes=None) has no class names, got {self.class_names}")
        if self.num_classes is not None and len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {self.num_classes} classes")
        if self.num_classes is not None and self.target_normalization is not None:
            raise ValueError("class labels are not normalized: target_normalization must be None for classification")
        for split, (x, y) in self.splits().items():
            if x.dtype != np.float32 or y.dtype != expected_y:
                raise ValueError(
                    f"{split}: expected x float32 and y {np.dtype(expected_y)} ({self.task}), "
                    f"got {x.dtype} and {y.dtype}"
                )
            if x.shape[1:] != tuple(self.input_shape) or y.shape != x.shape[:1]:
                raise ValueError(f"{split}: x {x.shape} and y {y.shape} do not match input_shape {self.input_shape}")

    @property
    def task(self) -> str:
        """``"classification"`` (integer labels, ``num_classes`` set) or ``"regression"`` (float targets)."""
        return CLASSIFICATION if self.num_classes is not None else REGRESSION

    def splits(self) -> dict[str, Split]:
        """``{"train": (x, y), "val": (x, y), "test": (x, y)}``."""
        return {name: getattr(self, name) for name in SPLIT_NAMES}

    def __repr__(self) -> str:
        sizes = ", ".join(f"{name}={len(y)}" for name, (_, y) in self.splits().items())
        x_part = f"x ({', '.join(['N', *map(str, self.input_shape)])}) float32"
        if self.num_classes is None:
            return f"Dataset({self.name!r}, {sizes}; {x_part}, y (N,) float32; regression)"
        names = ", ".join(self.class_names[:10]) + (", ..." if len(self.class_names) > 10 else "")
        return f"Dataset({self.name!r}, {sizes}; {x_part}, y (N,) int32; {self.num_classes} classes: {names})"
