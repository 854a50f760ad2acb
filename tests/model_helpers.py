"""Helpers shared by the model tests: cheap data, parameter counts, and a spy on dropout keys."""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx


def randn(seed, shape):
    """Standard normal float32 data from NumPy (jax.random in eager mode would compile a program per shape)."""
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def count(model):
    """Number of trainable parameters."""
    return sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


def dropout_keys(monkeypatch, model, x, key):
    """The dropout keys one training call of ``model`` uses, one per dropout site, in call order.

    A spy on ``dlfund.models.blocks.Dropout`` collects them while the call is traced (under jit: far cheaper than
    an eager call).
    """
    from dlfund.models.blocks import Dropout

    seen = []
    original = Dropout.__call__

    def spy(self, inputs, *, rngs=None):
        seen.append(rngs)
        return original(self, inputs, rngs=rngs)

    monkeypatch.setattr(Dropout, "__call__", spy)
    keys = nnx.jit(lambda m, x, k: (m(x, rngs=k), [jax.random.key_data(s) for s in seen])[1])(model, x, key)
    monkeypatch.undo()
    return [tuple(np.asarray(k).ravel()) for k in keys]
