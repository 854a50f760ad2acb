"""The members of a sweep: ``dlfund.grid`` and the checks and per-member options of ``dlfund.sweep``.

A member is a dict of the sweepable values (:data:`SWEEPABLE`); each of them is a value of the compiled program
(an array in the train state), so K members with different values stack into one state and train as one program.
Anything that changes shapes or the program itself (hidden sizes, batch size, epochs, the optimizer's name, the
schedule) cannot differ between members: it is refused, with the advice to run one sweep per setting.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import numbers
from collections.abc import Sequence
from typing import Any

from dlfund import losses as losses_lib
from dlfund import regularizers as regularizers_lib
from dlfund.train.options import FitConfig

#: Member keys, each a value inside the train state: what it means for member k's ``fit``.
SWEEPABLE = {
    "seed": "initialization (model_fn(nnx.Rngs(seed))), data order and dropout keys",
    "learning_rate": "peak learning rate of the schedule",
    "weight_decay": "decoupled weight decay",
    "l2": "strength of the L2 penalty ('l2:VALUE' in regularizers, added if there is none)",
    "label_smoothing": "label smoothing of softmax cross-entropy",
    "dropout": "rate of every dropout layer (model_fn must build the model with dropout > 0; any rate)",
}

#: Model settings people try to sweep: they change the model's shapes, so they belong to model_fn.
_MODEL_SETTINGS = {
    "hidden",
    "width",
    "depth",
    "num_layers",
    "num_classes",
    "activation",
    "batch_norm",
    "model",
    "channels",
    "dense",
}


def grid(**axes: Sequence[Any]) -> dict[str, list[Any]]:
    """Every combination of the values given, as ``dlfund.sweep``'s members (the last key varies fastest).

    ``dlfund.grid(learning_rate=[1e-3, 3e-3], seed=[0, 1, 2])`` gives 6 members: learning rate 1e-3 with seeds
    0, 1, 2, then 3e-3 with seeds 0, 1, 2.
    """
    if not axes:
        raise ValueError("dlfund.grid needs at least one key, e.g. dlfund.grid(seed=[0, 1, 2])")
    values = {}
    for key, options in axes.items():
        if isinstance(options, (str, bytes)) or not isinstance(options, Sequence):
            raise ValueError(f"grid({key}=...) takes a list of values, got {options!r}")
        if not options:
            raise ValueError(f"grid({key}=[]) is empty: every key needs at least one value")
        values[key] = list(options)
    combinations = list(itertools.product(*values.values()))
    return {key: [c[i] for c in combinations] for i, key in enumerate(values)}


def member_table(members: dict[str, Sequence[Any]], fit_options: dict[str, Any]) -> list[dict[str, Any]]:
    """The members as one dict per member; every problem is refused with what to do instead.

    Raises:
      ValueError: members empty, not lists, of unequal lengths, an unknown or program-changing key, a key that is
        also a fit option, or a value out of range.
    """
    if not isinstance(members, dict) or not members:
        raise ValueError(
            "members is empty: give a dict of lists, one value per member, e.g. {'learning_rate': [1e-3, 3e-3]} "
            "or dlfund.grid(learning_rate=[1e-3, 3e-3], seed=[0, 1])"
        )
    for key, values in members.items():
        if key not in SWEEPABLE:
            raise ValueError(_unsweepable(key))
        if key in fit_options:
            raise ValueError(f"{key!r} is both a member key and a fit option; give it in one place")
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise ValueError(
                f"members[{key!r}] must be a list with one value per member, got {values!r}; a value shared by "
                "all members is a fit option"
            )
        if not values:
            raise ValueError(f"members[{key!r}] is empty: a sweep needs at least one member")
    lengths = {key: len(values) for key, values in members.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{k} has {n}" for k, n in lengths.items())
        raise ValueError(
            f"members must all have the same number of values ({listed}); for every combination use dlfund.grid(...)"
        )
    size = next(iter(lengths.values()))
    table = [{key: members[key][i] for key in members} for i in range(size)]
    for i, member in enumerate(table):
        for key, value in member.items():
            _check_value(i, key, value)
    return table


def _unsweepable(key: str) -> str:
    sweepable = ", ".join(SWEEPABLE)
    if key in FitConfig.names():
        return (
            f"{key!r} cannot differ between members: it changes the compiled program or the shapes, and all "
            f"members train as one program. Run one sweep per {key} (a loop over dlfund.sweep calls). "
            f"Sweepable keys: {sweepable}"
        )
    if key in _MODEL_SETTINGS:
        return (
            f"{key!r} is a model setting: it changes the model's shapes, and all members train as one program. "
            f"Run one sweep per {key}, each with its own model_fn. Sweepable keys: {sweepable}"
        )
    return f"unknown member key {key!r}; sweepable keys: {sweepable}"


def _check_value(index: int, key: str, value: Any) -> None:
    where = f"member {index}: {key}={value!r}"
    if key == "seed":
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f"{where}: a seed is an int")
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{where}: must be a finite number")
    if key == "learning_rate" and not value > 0:
        raise ValueError(f"{where}: the learning rate must be > 0")
    if key in ("weight_decay", "l2") and value < 0:
        raise ValueError(f"{where}: must be >= 0")
    if key == "label_smoothing" and not 0 <= value < 1:
        raise ValueError(f"{where}: label smoothing must be in [0, 1)")
    if key == "dropout" and not 0 <= value < 1:
        raise ValueError(f"{where}: a dropout rate must be in [0, 1)")


def member_options(base: FitConfig, member: dict[str, Any], model: Any) -> FitConfig:
    """Member ``member``'s fit options: ``base`` with its values in.

    What is on for one member is on for all (a term that is 0 for some): weight decay (``decay_term`` of
    ``build_state``), label smoothing and the L2 penalty then have one program. Their value 0 gives the same
    numbers as leaving the term out, except label smoothing 0, which uses the smoothed formula of the
    cross-entropy (equal up to float rounding).
    """
    changes: dict[str, Any] = {key: member[key] for key in ("seed", "learning_rate", "weight_decay") if key in member}
    if "label_smoothing" in member:
        loss = losses_lib.for_model(model, base.loss, label_smoothing=base.label_smoothing)
        if loss.fn is not losses_lib.softmax_cross_entropy:
            raise ValueError(f"label_smoothing applies to softmax_cross_entropy only, not to {loss.name!r}")
        changes["loss"] = dataclasses.replace(loss, smoothed=True, label_smoothing=float(member["label_smoothing"]))
        changes["label_smoothing"] = None
    if "l2" in member:
        penalties = [regularizers_lib.get(r) for r in base.regularizers]
        l2 = regularizers_lib.L2(member["l2"])
        named = [i for i, p in enumerate(penalties) if getattr(p, "name", None) == "l2"]
        if named:
            penalties[named[0]] = dataclasses.replace(penalties[named[0]], coefficient=float(member["l2"]))
        else:
            penalties.append(l2)
        changes["regularizers"] = tuple(penalties)
    return base.replace(**changes)
