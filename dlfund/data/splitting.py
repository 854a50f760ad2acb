"""Deterministic stratified splits of example positions.

Used twice: inside the dataset builders for the fixed train/test split, and by :func:`dlfund.data.load` to
carve the validation split out of train. The order comes from a hash of ``(seed, position)`` rather than
from a NumPy random generator because NumPy does not promise the same stream across versions, and a test set
must never change when a library is upgraded.
"""

from __future__ import annotations

import hashlib

import numpy as np

TEST_SEED = 8020
"""Seed of every fixed train/test split (the bundled datasets', ``from_arrays``'s): never a caller's seed, so
that runs with different seeds are evaluated on the same test examples."""


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Splits positions ``0..N-1`` into kept and held-out parts, each with the class mix of ``labels``.

    Exactly ``round(fraction * N)`` positions are held out. Each class contributes its proportional share,
    rounded so that the shares add up to that total (largest remainder; ties go to the smaller label).
    Within a class the held-out positions are the first ones in a seeded, version-independent pseudo-random
    order.

    Args:
      labels: (N,) integer class labels.
      fraction: share of the examples to hold out, in ``[0, 1)``.
      seed: any integer; the same seed always gives the same split.

    Returns:
      ``(kept, held_out)``: (N - H,) and (H,) int64 positions into ``labels``, each sorted ascending,
      disjoint, together covering ``0..N-1``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must have shape (N,), got {labels.shape}")
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    classes, counts = np.unique(labels, return_counts=True)
    quotas = fraction * counts
    shares = np.floor(quotas).astype(np.int64)
    missing = round(fraction * len(labels)) - int(shares.sum())
    # A stable sort on the negated remainders hands the leftover examples to the largest remainders first.
    shares[np.argsort(-(quotas - shares), kind="stable")[:missing]] += 1

    per_class = [
        _seeded_order(np.flatnonzero(labels == cls), seed)[:share] for cls, share in zip(classes, shares, strict=True)
    ]
    held_out = np.sort(np.concatenate(per_class)) if per_class else np.zeros(0, np.int64)
    kept = np.setdiff1d(np.arange(len(labels)), held_out)
    return kept.astype(np.int64), held_out.astype(np.int64)


def _seeded_order(positions: np.ndarray, seed: int) -> np.ndarray:
    """``positions`` (K,) reordered by a keyed hash: a pseudo-random permutation fixed by the seed alone."""
    keys = [hashlib.blake2b(f"{int(seed)}:{int(p)}".encode(), digest_size=8).digest() for p in positions]
    return positions[sorted(range(len(positions)), key=keys.__getitem__)]
