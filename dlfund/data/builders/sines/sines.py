"""A deterministic synthetic time-series regression dataset: predict the next value of a noisy sum of sines.

Every example is its own series, so no two examples share values and any split of them is free of leakage
(windows cut from one long series would put overlapping values in train and test).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from dlfund.data.builders.base import BundledBuilder

NUM_SERIES = 2000
WINDOW = 32
SEED = 20261124
NOISE_STD = 0.1
# Frequencies in cycles per step: periods from 6 to 48 steps, so a window of 32 shows at least 2/3 of a cycle
# of the slowest component and the fastest is still sampled 6 times per cycle.
FREQUENCY_RANGE = (1 / 48, 1 / 6)
AMPLITUDE_RANGE = (0.3, 1.0)

_DESCRIPTION = f"""\
Synthetic one-step forecasting, generated deterministically (no download, no randomness at load time):
{NUM_SERIES} independent series s(t) = sum_k a_k sin(2 pi f_k t + phi_k) + e_t for t = 0..{WINDOW}, with 2 or 3
components (chosen per series), frequencies f_k uniform in [1/48, 1/6] cycles per step, phases phi_k uniform in
[0, 2 pi), amplitudes a_k uniform in [0.3, 1.0], and Gaussian noise e_t of standard deviation {NOISE_STD}.

Stored as `window`: float32 ({WINDOW}, 1) = s(0..{WINDOW - 1}) as (time, feature), and `target`: float32
s({WINDOW}), the value that follows the window. Splits: a seeded random 80/20 `train`/`test` split of the series.
The naive forecast "the next value equals the last one" (persistence) is the baseline a model must beat.
"""


class Sines(BundledBuilder):
    """Noisy sums of sines: ``window`` float32 (32, 1) = (T, F), ``target`` float32, the next value."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release: 2000 series of 33 values, 80/20 split."}
    FEATURE = "window"
    TARGET = "target"
    STRATIFIED = False

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=_DESCRIPTION,
            features=tfds.features.FeaturesDict(
                {
                    "window": tfds.features.Tensor(shape=(WINDOW, 1), dtype=np.float32),
                    "target": tfds.features.Scalar(dtype=np.float32),
                }
            ),
            supervised_keys=("window", "target"),
        )

    def _load_examples(self) -> tuple[np.ndarray, np.ndarray]:
        """Windows (2000, 32, 1) float32 and next values (2000,) float32."""
        return generate_sines(NUM_SERIES, WINDOW, SEED)


def generate_sines(num_series: int, window: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``num_series`` noisy sums of sines of ``window + 1`` values: windows (N, window, 1) and next values (N,).

    The random numbers are the raw output of NumPy's PCG64 turned into floats here, because NumPy promises a
    fixed stream only for its bit generators, not for ``Generator.normal`` and friends: the dataset must not
    change when NumPy is upgraded.
    """
    steps = window + 1
    # Per series: 1 uniform for the number of components, 3 x (frequency, phase, amplitude), 2 per noise value.
    per_series = 1 + 9 + 2 * steps
    raw = np.random.PCG64(seed).random_raw(num_series * per_series).reshape(num_series, per_series)
    uniform = (raw >> np.uint64(11)).astype(np.float64) * 2.0**-53  # 53 random bits -> [0, 1)
    components = 2 + (uniform[:, 0] < 0.5)  # (N,) 2 or 3
    frequency = _between(uniform[:, 1:4], FREQUENCY_RANGE)  # (N, 3)
    phase = 2 * np.pi * uniform[:, 4:7]
    amplitude = _between(uniform[:, 7:10], AMPLITUDE_RANGE) * (np.arange(3) < components[:, None])
    # Box-Muller: 1 - u lies in (0, 1], so the logarithm is finite.
    u1, u2 = 1.0 - uniform[:, 10 : 10 + steps], uniform[:, 10 + steps :]
    noise = NOISE_STD * np.sqrt(-2 * np.log(u1)) * np.cos(2 * np.pi * u2)  # (N, steps)

    t = np.arange(steps)
    waves = amplitude[:, :, None] * np.sin(2 * np.pi * frequency[:, :, None] * t + phase[:, :, None])  # (N, 3, steps)
    series = (waves.sum(axis=1) + noise).astype(np.float32)  # (N, steps)
    return series[:, :window, np.newaxis], series[:, window]


def _between(uniform: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    low, high = bounds
    return low + (high - low) * uniform
