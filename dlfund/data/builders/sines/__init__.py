"""TFDS builder for a synthetic forecasting task: the next value of a noisy sum of sines."""

from __future__ import annotations

from dlfund.data.builders.sines.sines import Sines, generate_sines

__all__ = ["Sines", "generate_sines"]
