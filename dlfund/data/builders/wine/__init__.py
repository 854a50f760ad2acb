"""TFDS builder for the UCI wine recognition data (178 wines x 13 chemical measurements, 3 cultivars)."""

from __future__ import annotations

from dlfund.data.builders.wine.wine import Wine

__all__ = ["Wine"]
