"""Regularization penalties added to the loss, pluggable by name or callable.

``"l2:1e-4"`` (or ``L2(1e-4)``) adds ``1e-4 * sum(w ** 2)`` over the weight matrices/kernels to the training loss;
``"l1:1e-5"`` adds ``1e-5 * sum(|w|)``. By default biases and normalization scales (parameters with fewer than 2
dimensions) are not penalized: shrinking them does not reduce a network's capacity, it only biases its outputs.

The other regularizers live where they act: dropout is a layer option of the models (active in training, off in
evaluation), decoupled weight decay and gradient clipping are optimizer options (:mod:`dlfund.optimizers`), and early
stopping is :class:`dlfund.EarlyStopping`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from dlfund.optimizers import kernels_only
from dlfund.registry import Registry, callable_name

Mask = Callable[[Any], Any]


def all_parameters(params: Any) -> Any:
    """Mask that penalizes every parameter, biases and scales included."""
    return jax.tree.map(lambda _: True, params)


@dataclasses.dataclass(frozen=True)
class Penalty:
    """``coefficient * sum(fn(w))`` over the parameters selected by ``mask``; hashable by value.

    Attributes:
      name: e.g. "l2".
      coefficient: >= 0. Not compared (``compare=False``): penalties that differ only in strength are equal, so
        they share compiled programs; a train state carries the strength as an array (see ``coefficient=``).
      fn: elementwise penalty, e.g. ``jnp.square``.
      mask: params -> pytree of Python bools (which parameters to penalize).
    """

    name: str
    coefficient: float = dataclasses.field(compare=False)
    fn: Callable[[jax.Array], jax.Array]
    mask: Mask = kernels_only

    def __call__(self, params: Any, coefficient: Any = None) -> jax.Array:
        """The penalty, a float32 scalar; ``coefficient`` (e.g. a traced value) overrides the penalty's own."""
        selected = [p for p, keep in zip(jax.tree.leaves(params), jax.tree.leaves(self.mask(params))) if keep]
        total = sum((jnp.sum(self.fn(p)) for p in selected), jnp.zeros([], jnp.float32))
        return (self.coefficient if coefficient is None else coefficient) * total

    def describe(self) -> str:
        # repr: the shortest text that parses back to the same float (":g" kept 6 digits: 1.2345678e-4 came back
        # as 1.23457e-4, another penalty on resume).
        return f"{self.name}:{self.coefficient!r}"


def L2(coefficient: float = 1e-4, mask: Mask = kernels_only) -> Penalty:
    """Squared-L2 penalty ``coefficient * sum(w**2)``. 1e-4: a common default for small dense nets."""
    return Penalty("l2", _coefficient(coefficient), jnp.square, mask)


def L1(coefficient: float = 1e-5, mask: Mask = kernels_only) -> Penalty:
    """L1 penalty ``coefficient * sum(|w|)``, which drives weights to exactly zero (sparsity)."""
    return Penalty("l1", _coefficient(coefficient), jnp.abs, mask)


def _coefficient(value: Any) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"a penalty coefficient must be a number, got {value!r}") from None
    if math.isnan(value) or value < 0:
        raise ValueError(f"a penalty coefficient must be >= 0, got {value}")
    return value


REGULARIZERS: Registry[Callable[..., Penalty]] = Registry("regularizer")
REGULARIZERS.register("l2", L2)
REGULARIZERS.register("l1", L1)


@dataclasses.dataclass(frozen=True)
class CallablePenalty:
    """A user's ``fn(params) -> scalar`` used as a penalty."""

    fn: Callable[[Any], jax.Array]
    coefficient = 1.0  # the scale a train state carries for it (a user's function has its own strength inside)

    def __call__(self, params: Any, coefficient: Any = None) -> jax.Array:
        value = jnp.asarray(self.fn(params), jnp.float32)
        return value if coefficient is None else coefficient * value

    def describe(self) -> str:
        return callable_name(self.fn)


def get(spec: str | Penalty | Callable[[Any], jax.Array]) -> Penalty | CallablePenalty:
    """A penalty from ``"name"``, ``"name:coefficient"`` (e.g. ``"l2:1e-4"``), a ``Penalty`` or a callable.

    Raises:
      ValueError: unknown name (the message lists the known ones) or a bad coefficient.
    """
    if isinstance(spec, (Penalty, CallablePenalty)):
        return spec
    if isinstance(spec, str):
        name, _, coefficient = spec.partition(":")
        factory = REGULARIZERS.get(name)
        return factory(coefficient) if coefficient else factory()
    if callable(spec):
        return CallablePenalty(spec)
    raise TypeError(f"a regularizer must be a name like 'l2:1e-4', a Penalty or a callable, got {spec!r}")


def total_penalty(
    penalties: tuple[Penalty | CallablePenalty, ...], params: Any, coefficients: tuple[Any, ...] | None = None
) -> jax.Array:
    """Sum of all penalties on ``params`` (0 when there are none); ``coefficients``: one strength per penalty
    (e.g. traced values from a train state), default each penalty's own."""
    if coefficients is None:
        coefficients = (None,) * len(penalties)
    return sum((p(params, c) for p, c in zip(penalties, coefficients, strict=True)), jnp.zeros([], jnp.float32))
