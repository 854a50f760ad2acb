"""TFDS builder for the Wisconsin diagnostic breast cancer data (569 x 30 features, benign/malignant)."""

from __future__ import annotations

from dlfund.data.builders.breast_cancer.breast_cancer import BreastCancer

__all__ = ["BreastCancer"]
