"""TFDS builder for Fisher's iris data (150 flowers x 4 measurements, 3 species)."""

from __future__ import annotations

from dlfund.data.builders.iris.iris import Iris

__all__ = ["Iris"]
