"""TFDS builder for scikit-learn's 8x8 digits read as sequences: 8 time steps of 8 pixels each."""

from __future__ import annotations

from dlfund.data.builders.digits_rows.digits_rows import DigitsRows

__all__ = ["DigitsRows"]
