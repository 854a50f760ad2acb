"""The in-memory dataset that :func:`dlfund.data.load` returns, and the normalization fitted to it."""

from __future__ import annotations

import dataclasses

import numpy as np

Split = tuple[np.ndarray, np.ndarray]
"""An ``(x, y)`` pair: x (N, *input_shape) float32, y (N,) int32."""

SPLIT_NAMES = ("train", "val", "test")


@dataclasses.dataclass(frozen=True, eq=False)
class Normalization:
    """A fixed affine map ``x = (x_raw * scale - mean) / std`` from stored values to model inputs.

    ``mean`` and ``std`` are in units of ``x_raw * scale`` (for digits, ink in [0, 1]: the stored 0..16 counts
    times 1/16), so they read like the familiar per-channel image statistics.

    Attributes:
      mean: float32, broadcastable against one example and against a batch (N, *input_shape); e.g. (1, 1, 1)
        per channel for (8, 8, 1) images, (30,) per feature for tabular data.
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
          x_raw: (N, *input_shape) stored values of the split the statistics may come from (train only).
          axis: axes of ``x_raw`` to average over; must include 0 (the example axis).
          scale: see the class docstring.
        """
        if 0 not in axis:
            raise ValueError(f"axis must include the example axis 0, got {axis}")
        x = np.asarray(x_raw, np.float64) * scale
        # keepdims then dropping the example axis leaves statistics that broadcast against x and against x[0].
        mean = x.mean(axis=axis, keepdims=True)[0]
        std = x.std(axis=axis, keepdims=True)[0]
        # A constant feature has std 0 up to rounding; dividing by it would turn the feature into inf/NaN.
        std = np.where(std > np.finfo(np.float32).eps * np.maximum(np.abs(mean), 1.0), std, 1.0)
        return cls(mean=mean.astype(np.float32), std=std.astype(np.float32), scale=float(scale))

    def apply(self, x_raw: np.ndarray) -> np.ndarray:
        """Stored values (N, *input_shape) or (*input_shape) -> normalized float32 of the same shape."""
        return ((np.asarray(x_raw, np.float32) * np.float32(self.scale) - self.mean) / self.std).astype(np.float32)

    def invert(self, x: np.ndarray) -> np.ndarray:
        """Normalized inputs -> stored values (float32, same shape), e.g. to display an image."""
        return ((np.asarray(x, np.float32) * self.std + self.mean) / np.float32(self.scale)).astype(np.float32)


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A classification dataset held in memory as NumPy arrays, split into train, val and test.

    Attributes:
      name: registered name (see ``dlfund.data.DATASETS``).
      train, val, test: ``(x, y)`` pairs; x (N, *input_shape) float32 already normalized, y (N,) int32 in
        ``[0, num_classes)``. No example appears in two splits.
      num_classes: number of classes.
      input_shape: shape of one example, e.g. (8, 8, 1).
      class_names: one name per label value, ``class_names[y]`` names label ``y``.
      normalization: the map that produced x from the stored values, fitted on ``train`` only;
        ``normalization.invert(x)`` recovers the stored values.
    """

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    input_shape: tuple[int, ...]
    class_names: tuple[str, ...]
    normalization: Normalization

    def __post_init__(self):
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {self.num_classes} classes")
        for split, (x, y) in self.splits().items():
            if x.dtype != np.float32 or y.dtype != np.int32:
                raise ValueError(f"{split}: expected x float32 and y int32, got {x.dtype} and {y.dtype}")
            if x.shape[1:] != tuple(self.input_shape) or y.shape != x.shape[:1]:
                raise ValueError(f"{split}: x {x.shape} and y {y.shape} do not match input_shape {self.input_shape}")

    def splits(self) -> dict[str, Split]:
        """``{"train": (x, y), "val": (x, y), "test": (x, y)}``."""
        return {name: getattr(self, name) for name in SPLIT_NAMES}

    def __repr__(self) -> str:
        sizes = ", ".join(f"{name}={len(y)}" for name, (_, y) in self.splits().items())
        names = ", ".join(self.class_names)
        return (
            f"Dataset({self.name!r}, {sizes}; x (N, {', '.join(map(str, self.input_shape))}) float32, "
            f"y (N,) int32; {self.num_classes} classes: {names})"
        )
