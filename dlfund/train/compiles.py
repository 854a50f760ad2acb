"""A warning when a run's training program compiles more than once, naming what changed between the calls.

One ``fit`` compiles its programs in its first call; every later call must reuse them. A later compilation means
that some input of the program changed its shape, dtype, weak type or device layout between calls (or a static
value did), and every such call then pays a compilation: usually a bug (ours or a reader's), always a cost. XLA
reports every compilation to ``jax.monitoring`` with the program's name; :class:`CompileWatch` counts the
compilations of dlfund's training programs during each call and, from the second call on, warns once per run with
the inputs whose signature differs from the first call's.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import jax

from dlfund import _warnings


class RecompileWarning(RuntimeWarning):
    """A run's training program compiled again after its first call."""


#: The programs a training call runs (jit names as XLA reports them, without "jit(...)").
TRAINING_PROGRAMS = frozenset(
    {
        "run_epochs",
        "_run_members",
        "_steps",
        "_batch_step",
        "_close",
        "_end_of_epoch_kept",
        "evaluate_arrays",
        "_eval_update",
        "epoch_order",
    }
)

_lock = threading.Lock()
_compiled: list[str] = []  # names of the programs compiled in this process, in order


def _listen(event: str, duration: float, **kwargs: Any) -> None:
    if event == "/jax/core/compile/backend_compile_duration":
        name = str(kwargs.get("fun_name", ""))
        if name.startswith("jit(") and name.endswith(")"):
            name = name[4:-1]
        with _lock:
            _compiled.append(name)


jax.monitoring.register_event_duration_secs_listener(_listen)


def compilations() -> int:
    """How many XLA compilations this process has made so far (all programs)."""
    return len(_compiled)


def signature(tree: Any) -> dict[str, Any]:
    """What a program is specialized on, per input leaf (shape, dtype, weak type, device layout, memory layout)
    and the static part (the tree structure, which holds the static fields: graph, optimizer, objective, layout)."""
    leaves = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        deleted = bool(getattr(leaf, "is_deleted", lambda: False)())  # a donated input: its layouts are gone
        try:
            sharding = getattr(leaf, "sharding", None)
            layout = None if sharding is None or deleted else _describe_sharding(sharding)
            memory = None if deleted else getattr(getattr(leaf, "format", None), "layout", None)
            memory = None if memory is None else str(memory)
        except Exception:
            layout = memory = None
        leaves[jax.tree_util.keystr(path)] = (
            tuple(getattr(leaf, "shape", ())),
            str(getattr(leaf, "dtype", type(leaf).__name__)),
            bool(getattr(leaf, "weak_type", False)),
            layout,
            memory,
            getattr(leaf, "committed", None),
        )
    return {"leaves": leaves, "static": jax.tree.structure(tree)}


def _describe_sharding(sharding: Any) -> str:
    spec = getattr(sharding, "spec", None)
    devices = len(sharding.device_set)
    where = f"{devices} device{'s' * (devices != 1)}"
    return f"{type(sharding).__name__}({where if spec is None else f'{spec}, {where}'})"


def describe_changes(before: dict[str, Any], after: dict[str, Any], limit: int = 5) -> str:
    """The inputs whose signature differs, in words (at most ``limit`` named)."""
    changes = []
    if before["static"] != after["static"]:
        changes.append("the static part of the state (graph, optimizer, objective or layout) or its structure")
    fields = ("shape", "dtype", "weak type", "layout", "memory layout", "committed to a device")
    for path, old in before["leaves"].items():
        new = after["leaves"].get(path)
        if new is None or new == old:
            continue
        # What a donated input no longer says (None) is not a change.
        differ = [f"{name} {a} -> {b}" for name, a, b in zip(fields, old, new) if a != b and None not in (a, b)]
        if not differ:
            continue
        changes.append(f"{path or 'input'}: {', '.join(differ)}")
    if not changes:
        return "no input of the state changed: the batches did (a reader that returns other shapes or dtypes?)"
    more = f" (and {len(changes) - limit} more)" if len(changes) > limit else ""
    return "; ".join(changes[:limit]) + more


class CompileWatch:
    """Watches the calls of one run: the first may compile, later ones must not (else one warning)."""

    def __init__(self, what: str = "fit") -> None:
        self.what = what
        self.calls = 0
        self.warned = False
        self._first: dict[str, Any] | None = None

    @contextlib.contextmanager
    def call(self, inputs: Any, epoch: int):
        """Around one training call; ``inputs``: what the call is given (the loop state), ``epoch``: the first
        epoch it runs. Its signature is read before the call (inputs are donated)."""
        first = self.calls == 0
        before = signature(inputs) if first else None
        start = compilations()
        yield
        self.calls += 1
        if first:
            self._first = before
            return
        if self.warned:
            return
        with _lock:
            new = [name for name in _compiled[start:] if name in TRAINING_PROGRAMS]
        if new:
            self.warned = True
            # Read after the call: shapes, dtypes and layouts of donated inputs are still known (only a check per
            # call otherwise, so a run that compiles once pays nothing for this).
            _warnings.warn(
                f"{self.what}: the training program ({', '.join(sorted(set(new)))}) compiled again in call "
                f"{self.calls} (epoch {epoch}); a run should compile once. Changed since the first call: "
                f"{describe_changes(self._first, signature(inputs))}",
                RecompileWarning,
            )
