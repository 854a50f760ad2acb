"""Which parameters train: ``fit(freeze=...)``, frozen batch norm, and per-parameter learning rates.

A parameter is named by its path in the model, as in weights files: ``"convs/0/kernel"``, ``"head/bias"``
(:func:`param_paths` lists them). ``freeze`` picks the parameters that stay fixed:

- ``"backbone"``: everything but the model's head (the attribute its class names in ``head_name``);
- glob patterns (one string or several): ``"convs/*"``; a pattern also matches everything under it, so
  ``"convs"`` and ``"convs/0"`` name whole layers;
- a callable ``path -> bool`` (True: frozen).

Frozen parameters leave the differentiated arguments of the train step, so no gradient is computed for them, the
optimizer holds no moments for them and neither weight decay nor an L2 penalty touches them: they stay bit for bit
what they were. Batch-norm layers whose parameters are all frozen also run in inference mode during training (their
running statistics normalize and do not move: Keras's rule, so that a frozen backbone is really fixed), unless
``freeze_batch_norm=False``.

``learning_rates={pattern: rate}`` gives the matched parameters their own peak learning rate (discriminative
fine-tuning: a small rate for the backbone, the base rate for the head). The schedule's shape is shared; the
update of each matched parameter is scaled by ``rate / learning_rate``, which for every built-in optimizer
(all end by multiplying by the learning rate) is exactly training it at ``rate``, its decoupled weight decay
included.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import math
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

BACKBONE = "backbone"


def path_name(path: Iterable[Any]) -> str:
    """A state path as a string: ``("convs", 0, "kernel")`` -> ``"convs/0/kernel"``."""
    return "/".join(str(part) for part in path)


def param_paths(model: nnx.Module) -> list[str]:
    """The paths of ``model``'s trainable parameters (``nnx.Param``), in the model's state order.

    >>> param_paths(dlfund.models.MLP(4, (8,), 3, rngs=nnx.Rngs(0)))
    ['dense/0/bias', 'dense/0/kernel', 'head/bias', 'head/kernel']
    """
    return [path_name(path) for path, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))]


def matches(pattern: str, path: str) -> bool:
    """Whether a glob ``pattern`` names ``path``, or a layer that holds it (``"convs/0"`` names
    ``"convs/0/kernel"``)."""
    pattern = pattern.strip("/")
    return fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(path, pattern + "/*")


def _top_level(paths: list[str]) -> str:
    return ", ".join(dict.fromkeys(p.split("/")[0] for p in paths))


def _patterns(what: str, value: Any) -> tuple[str, ...]:
    patterns = (value,) if isinstance(value, str) else tuple(value)
    if not patterns or not all(isinstance(p, str) and p.strip("/") for p in patterns):
        raise ValueError(f"{what} takes glob patterns of parameter paths such as 'convs/*', got {value!r}")
    return patterns


def _matched(what: str, pattern: str, paths: list[str]) -> list[str]:
    hits = [p for p in paths if matches(pattern, p)]
    if not hits:
        raise ValueError(
            f"{what} pattern {pattern!r} matches no parameter of the model; its parameters start with: "
            f"{_top_level(paths)} (dlfund.param_paths(model) lists them all)"
        )
    return hits


def head_name(model: nnx.Module) -> str:
    """The attribute of ``model`` that holds its head; for a module of one's own, an attribute called ``head``."""
    name = getattr(type(model), "head_name", "head")
    if not isinstance(getattr(model, name, None), nnx.Module):
        raise ValueError(
            f"{type(model).__name__} has no head module (attribute {name!r}), so 'backbone' (all but the head) is "
            "undefined; name the output layer `head`, or freeze by patterns (dlfund.param_paths(model) lists them)"
        )
    return name


def frozen_paths(model: nnx.Module, freeze: Any) -> tuple[str, ...]:
    """The paths ``freeze`` names (see the module docstring); ``None`` or ``()``: none.

    Raises:
      ValueError: a pattern that matches no parameter (the message lists the top-level names), an unknown spec,
        or a spec that freezes every parameter (nothing would train).
    """
    if freeze is None:
        return ()
    if not isinstance(freeze, (str, list, tuple)) and not callable(freeze):
        raise ValueError(
            f"freeze takes 'backbone', glob patterns of parameter paths or a callable path -> bool; got {freeze!r}"
        )
    if isinstance(freeze, (list, tuple)) and not freeze:
        return ()
    paths = param_paths(model)
    if freeze == BACKBONE:
        head = head_name(model)
        frozen = [p for p in paths if not matches(head, p)]
    elif callable(freeze):
        frozen = [p for p in paths if freeze(p)]
    else:
        frozen = sorted({hit for pattern in _patterns("freeze", freeze) for hit in _matched("freeze", pattern, paths)})
        frozen = [p for p in paths if p in frozen]
    if len(frozen) == len(paths):
        raise ValueError(
            f"freeze={_describe(freeze)!r} freezes all {len(paths)} parameters of the model: nothing would train. "
            "Leave some out (freeze='backbone' trains the head)"
        )
    return tuple(frozen)


def _describe(freeze: Any) -> Any:
    if callable(freeze) and not isinstance(freeze, str):
        return getattr(freeze, "__name__", "callable")
    return freeze if isinstance(freeze, str) else list(freeze)


def held_batch_norms(model: nnx.Module, frozen: tuple[str, ...]) -> tuple[str, ...]:
    """Paths of the batch-norm layers (``nnx.BatchNorm``) whose parameters are all frozen."""
    frozen_set = set(frozen)
    held = []
    for path, module in nnx.iter_modules(model):
        if isinstance(module, nnx.BatchNorm):
            name = path_name(path)
            own = [path_name((*path, *sub)) for sub, _ in nnx.to_flat_state(nnx.state(module, nnx.Param))]
            if own and all(p in frozen_set for p in own):
                held.append(name)
    return tuple(held)


@dataclasses.dataclass(frozen=True)
class Freezing:
    """The frozen part of a model, a static field of the train state (equal freezings share programs).

    Attributes:
      frozen: paths of the parameters that do not train.
      held_norms: paths of the batch-norm layers that run in inference mode during training.
    """

    frozen: tuple[str, ...]
    held_norms: tuple[str, ...] = ()

    def _is_frozen(self, path: tuple[Any, ...], _value: Any) -> bool:
        return path_name(path) in self._frozen_set

    @functools.cached_property
    def _frozen_set(self) -> frozenset[str]:  # read once per parameter while a step is traced
        return frozenset(self.frozen)

    def split(self, params: nnx.State) -> tuple[nnx.State, nnx.State]:
        """``(trainable, frozen)`` parts of ``params``; ``nnx.merge_state`` puts them back together."""
        frozen, trainable = nnx.split_state(params, self._is_frozen, ...)
        return trainable, frozen

    def hold_norms(self, module: nnx.Module) -> None:
        """Sets the held batch-norm layers of a rebuilt ``module`` to use their running statistics."""
        if not self.held_norms:
            return
        held = set(self.held_norms)
        for path, layer in nnx.iter_modules(module):
            if path_name(path) in held:
                layer.use_running_average = True


def make_freezing(model: nnx.Module, freeze: Any, *, freeze_batch_norm: bool = True) -> Freezing | None:
    """The :class:`Freezing` of ``freeze`` on ``model``, or None when nothing is frozen."""
    frozen = frozen_paths(model, freeze)
    if not frozen:
        return None
    return Freezing(frozen=frozen, held_norms=held_batch_norms(model, frozen) if freeze_batch_norm else ())


def check_rate(what: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} must be a positive number, got {value!r}")
    return float(value)


def path_rates(model: nnx.Module, learning_rates: Mapping[str, float] | None, frozen: tuple[str, ...]) -> dict:
    """``{path: rate}`` of the parameters that ``learning_rates`` (``{pattern: rate}``) names.

    Raises:
      ValueError: a pattern that matches nothing, a parameter matched by two patterns, a pattern that matches a
        frozen parameter, or a rate that is not a positive number.
    """
    if not learning_rates:
        return {}
    if not isinstance(learning_rates, Mapping):
        raise ValueError(
            f"learning_rates maps glob patterns to rates, e.g. {{'convs/*': 1e-4}}; got {learning_rates!r}"
        )
    paths = param_paths(model)
    frozen_set = set(frozen)
    rates: dict[str, float] = {}
    owner: dict[str, str] = {}
    for pattern, rate in learning_rates.items():
        (pattern,) = _patterns("learning_rates", pattern)
        rate = check_rate(f"learning_rates[{pattern!r}]", rate)
        for path in _matched("learning_rates", pattern, paths):
            if path in frozen_set:
                raise ValueError(
                    f"learning_rates pattern {pattern!r} matches {path!r}, which is frozen: a frozen parameter does "
                    "not train at any rate; drop it from freeze or from learning_rates"
                )
            if path in owner:
                raise ValueError(
                    f"parameter {path!r} matches two learning_rates patterns, {owner[path]!r} and {pattern!r}; "
                    "make them disjoint"
                )
            owner[path], rates[path] = pattern, rate
    return rates


def _key_name(key: Any) -> str:
    for attribute in ("key", "idx", "name"):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


def rate_scales(trainable: nnx.State, rates: dict[str, float], base_rate: float) -> Any:
    """Per-parameter update factors: float32 scalars in the tree of ``trainable``, ``rate / base_rate`` for the
    paths in ``rates`` and 1 elsewhere; None when ``rates`` is empty."""
    if not rates:
        return None

    def factor(key_path: tuple[Any, ...], _leaf: Any) -> jax.Array:
        # The key path ends in the Variable's ``value`` attribute (a GetAttrKey), which is not part of the
        # parameter's name; a layer called "value" (an attention's value projection) is a DictKey and is.
        if key_path and isinstance(key_path[-1], jax.tree_util.GetAttrKey) and key_path[-1].name == "value":
            key_path = key_path[:-1]
        name = path_name(_key_name(k) for k in key_path)
        return jnp.asarray(rates.get(name, base_rate) / base_rate, jnp.float32)

    return jax.tree_util.tree_map_with_path(factor, trainable)


def scale_updates(updates: Any, scales: Any) -> Any:
    """``updates`` times their factors (``scales`` from :func:`rate_scales`; None: unchanged)."""
    if scales is None:
        return updates
    return jax.tree.map(lambda u, s: u * s.astype(u.dtype), updates, scales)
