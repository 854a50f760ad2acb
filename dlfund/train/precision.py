"""Mixed precision: the training step computes in bfloat16 on float32 master weights.

``fit(..., precision="bfloat16")`` keeps every parameter, gradient and optimizer moment in float32 (Optax keeps its
moments in the parameters' dtype, so float32 master weights give float32 moments). Inside the training step the
model is rebuilt with each layer's computation dtype set to bfloat16 (Flax's ``dtype``, beside ``param_dtype``
float32): a layer casts its float32 weights and its inputs to bfloat16 and computes there. Batch and layer
normalization compute their statistics in float32 (Flax reduces in float32) and keep their running averages in
float32; the model's outputs are cast back to float32 before the loss, so the softmax of the cross-entropy, the
loss and its mean are float32. Validation, ``evaluate`` and ``predict`` run in float32 on the float32 weights.

bfloat16 pays on GPUs and TPUs, which have bfloat16 matrix units. XLA:CPU has none and converts around every
bfloat16 operation: on a CPU backend ``fit`` warns once and records the note in its config.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from dlfund import _warnings

PRECISIONS = ("float32", "bfloat16")

_warned: set[str] = set()


def check_precision(precision: str) -> str:
    """``precision`` if known, else a ValueError listing the known ones."""
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}. Known: {', '.join(PRECISIONS)}.")
    return precision


def compute_in(module: nnx.Module, dtype) -> int:
    """Sets the computation dtype of every layer of ``module`` that has one (Flax layers: ``dtype`` beside
    ``param_dtype``), in place; returns how many layers were set. For a rebuilt module inside a program only."""
    count = 0
    for _, layer in nnx.iter_modules(module):
        if hasattr(layer, "dtype") and hasattr(layer, "param_dtype"):
            layer.dtype = dtype
            count += 1
    return count


def to_compute(x: jax.Array, precision: str) -> jax.Array:
    """Floating inputs in the computation dtype (token ids and other integers stay as they are)."""
    if precision == "float32" or not jnp.issubdtype(x.dtype, jnp.floating):
        return x
    return x.astype(jnp.bfloat16)


def to_float32(outputs: jax.Array) -> jax.Array:
    """Outputs back in float32, for the loss and the metrics."""
    return outputs.astype(jnp.float32) if jnp.issubdtype(outputs.dtype, jnp.floating) else outputs


def backend_note(precision: str, platform: str) -> str | None:
    """A note (and, once per process and platform, a warning) when ``precision`` is slow on ``platform``."""
    if precision != "bfloat16" or platform != "cpu":
        return None
    note = (
        "precision='bfloat16' on the CPU backend: XLA:CPU has no bfloat16 matrix units and converts around every "
        "bfloat16 operation, so this runs slower than float32 here (see benchmarks/bench_parallel.py); it is meant "
        "for GPUs and TPUs"
    )
    if platform not in _warned:
        _warned.add(platform)
        _warnings.warn(note, UserWarning)
    return note
