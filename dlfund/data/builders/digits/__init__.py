"""TFDS builder for scikit-learn's copy of the UCI optical handwritten digits (8x8, 10 classes)."""

from __future__ import annotations

from dlfund.data.builders.digits.digits import Digits

__all__ = ["Digits"]
