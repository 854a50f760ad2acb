"""``summary(model)``: a model's layers, their output shapes and parameter counts, like Keras's ``model.summary()``.

The output shapes come from tracing one forward pass abstractly (``jax.eval_shape``): nothing is computed or
compiled, so a ResNet or a Transformer is summarized in a fraction of a second, and so is a model built abstractly
with ``nnx.eval_shape`` (whose weights were never allocated).

Why not ``nnx.tabulate`` (flax 0.12.8)? It compiles and runs every layer with ``jax.jit`` (1-5 s for dlfund's
ResNet and Transformer on a CPU), returns only a rendered string, lists helper methods (``penultimate``,
``features``) as rows, counts batch statistics and dropout rates into its "Total Parameters", does not accept
abstract inputs (``jax.ShapeDtypeStruct``), and when the model raises during its trace it leaves the patched
methods of every layer class in place, so that later plain calls of any ``nnx.Linear`` in the process fail.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import html
import itertools
import math
import threading
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Path = tuple[Any, ...]


@dataclasses.dataclass(frozen=True)
class SummaryRow:
    """One layer (a sub-module that the forward pass called), or parameters no called layer holds.

    Attributes:
      path: the layer's path in the model, e.g. ``"blocks/0/conv1"`` (the names ``dlfund.param_paths`` and
        ``fit(freeze=...)`` use).
      type: the layer's class name (``"Linear"``); for a variable held by the model itself (a Transformer's
        ``cls_token``), the variable's type (``"Param"``).
      output_shape: the shape of the layer's output for the summarized batch, e.g. ``(1, 128)``; a tuple/list/dict
        of shapes for a layer with several outputs (a recurrent cell returns ``((c, h), y)``); None for a row that
        the forward pass did not call (a variable, or a layer the model holds but does not use).
      trainable_params: parameters (``nnx.Param``) in this layer and the layers nested in it.
      non_trainable_params: batch-norm running statistics (``nnx.BatchStat``) in it and its nested layers.
      depth: 1 plus the number of rows it is nested in (1: a top-level row; ``blocks/0/conv1`` is 2 when
        ``blocks/0`` is a row). The top-level rows together hold every parameter once.
    """

    path: str
    type: str
    output_shape: Any
    trainable_params: int
    non_trainable_params: int
    depth: int

    @property
    def params(self) -> int:
        """All parameters, trainable or not (Keras's "Param #")."""
        return self.trainable_params + self.non_trainable_params


@dataclasses.dataclass(frozen=True)
class Summary:
    """What :func:`summary` returns: print it (a text table), show it in a notebook (an HTML table), or read it.

    Attributes:
      model: the model's class name.
      input_shape: the traced batch's shape, ``(batch_size, *example_shape)``.
      output_shape: the model's output shape for that batch (a tree of shapes for several outputs).
      rows: one :class:`SummaryRow` per layer, in the order the forward pass first calls them (a layer before the
        layers nested in it), then parameters held outside any called layer.
      trainable_params: parameters (``nnx.Param``) of the whole model.
      non_trainable_params: batch-norm running statistics (``nnx.BatchStat``) of the whole model; other state
        (dropout rates, random-number state) is not a parameter and is not counted.
      trainable_bytes, non_trainable_bytes: their memory (size times dtype width).
    """

    model: str
    input_shape: tuple[int, ...]
    output_shape: Any
    rows: tuple[SummaryRow, ...]
    trainable_params: int
    non_trainable_params: int
    trainable_bytes: int
    non_trainable_bytes: int

    @property
    def total_params(self) -> int:
        """Trainable and non-trainable parameters together (Keras's "Total params")."""
        return self.trainable_params + self.non_trainable_params

    @property
    def param_bytes(self) -> int:
        """The memory of all parameters, trainable or not."""
        return self.trainable_bytes + self.non_trainable_bytes

    def _table(self) -> tuple[list[str], list[list[str]]]:
        headers = ["Layer (type)", "Output Shape", "Param #"]
        cells = [
            [
                "  " * (row.depth - 1) + f"{row.path} ({row.type})",
                "-" if row.output_shape is None else format_shape(row.output_shape),
                f"{row.params:,}",
            ]
            for row in self.rows
        ]
        return headers, cells

    def _totals(self) -> list[str]:
        lines = [
            f"Total params: {self.total_params:,} ({format_bytes(self.param_bytes)})",
            f"Trainable params: {self.trainable_params:,} ({format_bytes(self.trainable_bytes)})",
            f"Non-trainable params: {self.non_trainable_params:,} ({format_bytes(self.non_trainable_bytes)})",
        ]
        if self.non_trainable_params:
            lines[-1] += ": batch-norm running statistics"
        return lines

    def _notes(self) -> list[str]:
        notes = []
        if any(row.depth > 1 for row in self.rows):
            notes.append("A row's Param # includes the layers indented under it.")
        if any(row.output_shape is None for row in self.rows):
            notes.append("Output Shape '-': not called by the forward pass (a variable, or an unused layer).")
        return notes

    def __str__(self) -> str:
        headers, cells = self._table()
        widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(headers)]
        widths[0] = max(widths[0], 28)
        widths[1] = max(widths[1], 20)

        def line(values: list[str]) -> str:
            return " " + "  ".join(
                [f"{values[0]:<{widths[0]}}", f"{values[1]:<{widths[1]}}", f"{values[2]:>{widths[2]}}"]
            )

        rule = sum(widths) + 2 * (len(widths) - 1) + 2
        title = (
            f"Model: {self.model}, input {format_shape(self.input_shape)} -> output {format_shape(self.output_shape)}"
        )
        text = [title, "_" * rule, line(headers), "=" * rule, *(line(c) for c in cells), "=" * rule]
        text += self._totals()
        notes = self._notes()
        if notes:
            text += ["_" * rule, *notes]
        return "\n".join(text)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        headers, cells = self._table()
        esc = html.escape
        head = "".join(
            f'<th style="text-align:{"right" if i == 2 else "left"}">{esc(h)}</th>' for i, h in enumerate(headers)
        )
        body = []
        for row, (_, shape, params) in zip(self.rows, cells):
            name = f"{esc(row.path)} <span style='color:#777'>({esc(row.type)})</span>"
            body.append(
                f'<tr><td style="text-align:left;padding-left:{0.5 + 1.5 * (row.depth - 1):.1f}em">{name}</td>'
                f'<td style="text-align:left"><code>{esc(shape)}</code></td>'
                f'<td style="text-align:right">{esc(params)}</td></tr>'
            )
        caption = (
            f"<b>{esc(self.model)}</b>: input <code>{esc(format_shape(self.input_shape))}</code> &rarr; output "
            f"<code>{esc(format_shape(self.output_shape))}</code>"
        )
        foot = "<br>".join(esc(t) for t in self._totals() + self._notes())
        return (
            f"<table><caption style='text-align:left'>{caption}</caption><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table><p>{foot}</p>"
        )


def format_shape(shape: Any) -> str:
    """``(1, 128)`` for a shape tuple; ``[(1, 16), (1, 16)]`` for a tuple or list of shapes, ``{k: ...}`` for a
    dict, so that several outputs read as one value."""
    if isinstance(shape, tuple) and all(isinstance(d, int) for d in shape):
        return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"
    if isinstance(shape, dict):
        return "{" + ", ".join(f"{k}: {format_shape(v)}" for k, v in shape.items()) + "}"
    if isinstance(shape, (tuple, list)):
        return "[" + ", ".join(format_shape(s) for s in shape) + "]"
    return str(shape)


def format_bytes(n: int) -> str:
    """Bytes in binary units: ``512 B``, ``37.54 KiB``, ``1.20 MiB``."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def summary(
    model: nnx.Module,
    input_shape: tuple[int, ...] | int | None = None,
    *,
    batch_size: int = 1,
    depth: int | None = None,
) -> Summary:
    """The layers of ``model``, their output shapes and parameter counts (trainable vs batch-norm statistics).

    >>> print(dlfund.summary(dlfund.models.MLP(64, (128,), 10, rngs=nnx.Rngs(0))))  # doctest: +SKIP
    Model: MLP, input (1, 64) -> output (1, 10)
    _____________________________________________________________
     Layer (type)                  Output Shape          Param #
    =============================================================
     dense/0 (Linear)              (1, 128)                8,320
     head (Linear)                 (1, 10)                 1,290
    =============================================================
    Total params: 9,610 (37.54 KiB)
    Trainable params: 9,610 (37.54 KiB)
    Non-trainable params: 0 (0 B)

    The forward pass is traced abstractly in eval mode (no dropout, batch norm on its running statistics), on a
    copy of the model: nothing is computed or compiled and ``model`` is not changed.

    Args:
      model: an NNX module called as ``model(x)`` on a batch x [batch_size, *input_shape]; dlfund's models, or any
        other.
      input_shape: the shape of one example, without the batch axis, e.g. ``(28, 28, 1)``. None: the shape the
        model records (MLP, perceptron and logistic regression: ``(in_features,)``; CNN and ResNet: their
        ``input_shape``; a ViT: its ``image_shape``). Sequence models (RNN, LSTM, GRU, a Transformer on sequences)
        take sequences of any length, so they need it: ``input_shape=(T, F)``.
      batch_size: the batch axis of the traced input (shown in the output shapes).
      depth: show layers nested at most this deep (1: the model's own attributes); None: all. Totals always
        cover the whole model.

    Returns:
      a :class:`Summary`: ``print`` it, show it in a notebook, or read ``.rows``, ``.total_params``,
      ``.trainable_params``, ``.non_trainable_params``, ``.param_bytes``.

    Raises:
      ValueError: the model does not record its input shape and none was given (the message says what to pass),
        an input shape the model does not accept (the model's own message), or a forward pass that fails on it.
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"summary takes a Flax NNX module, got {type(model).__name__}")
    example_shape = _example_shape(model, input_shape)
    batch_size = _positive_int("batch_size", batch_size)
    if depth is not None:
        depth = _positive_int("depth", depth)
    check = getattr(model, "check_input", None)
    if callable(check):
        check(example_shape)  # dlfund's models name the expected and the received shape
    calls, output = _trace(model, (batch_size, *example_shape))
    variables = _variables(model)
    rows = _rows(model, calls, variables)
    if depth is not None:
        rows = [row for row in rows if row.depth <= depth]
    trainable = [v for v in variables if v.trainable]
    frozen = [v for v in variables if not v.trainable]
    return Summary(
        model=type(model).__name__,
        input_shape=(batch_size, *example_shape),
        output_shape=output,
        rows=tuple(rows),
        trainable_params=sum(v.size for v in trainable),
        non_trainable_params=sum(v.size for v in frozen),
        trainable_bytes=sum(v.bytes for v in trainable),
        non_trainable_bytes=sum(v.bytes for v in frozen),
    )


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def known_input_shape(model: nnx.Module) -> tuple[int, ...] | None:
    """The shape of one example that ``model`` records, or None when it takes several (sequences of any length)
    or does not say."""
    image_shape = getattr(model, "image_shape", None)  # a Transformer on patches (a ViT)
    if image_shape is not None:
        return tuple(image_shape)
    shape = getattr(model, "input_shape", None)  # CNN, ResNet
    if shape is not None:
        return tuple(shape)
    from dlfund.models.base import FlatInputModel

    if isinstance(model, FlatInputModel):  # MLP, perceptron, logistic regression: flat vectors
        return (model.in_features,)
    return None


def _example_shape(model: nnx.Module, input_shape: Any) -> tuple[int, ...]:
    name = type(model).__name__
    if input_shape is None:
        shape = known_input_shape(model)
        if shape is not None:
            return shape
        from dlfund.models.base import Model

        features = getattr(model, "in_features", None)
        if isinstance(model, Model) and features is not None:  # RNN, LSTM, GRU, a Transformer on sequences
            raise ValueError(
                f"summary needs input_shape for this {name}: it reads sequences (T, {features}) of any length T, "
                f"so the shapes of its layers depend on T; pass the shape of one example, e.g. "
                f"summary(model, input_shape=(16, {features})) for sequences of 16 steps"
            )
        raise ValueError(
            f"summary needs input_shape for this {name}, which does not record the shape of its examples; pass "
            "the shape of one example without the batch axis, e.g. summary(model, input_shape=(28, 28, 1))"
        )
    shape = (input_shape,) if isinstance(input_shape, (int, np.integer)) else input_shape
    try:
        shape = tuple(shape)
    except TypeError:
        raise ValueError(f"input_shape must be a tuple of positive integers, got {input_shape!r}") from None
    for i, d in enumerate(shape):
        _positive_int(f"input_shape[{i}]", d)
    if not shape:
        raise ValueError("input_shape must hold at least one dimension (one example's shape, without the batch axis)")
    return tuple(int(d) for d in shape)


def _shapes(tree: Any) -> Any:
    """Each array of ``tree`` replaced by its shape tuple; tuples, lists and dicts keep their structure."""
    if isinstance(tree, dict):
        return {k: _shapes(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_shapes(v) for v in tree]
    if isinstance(tree, tuple):  # named tuples too, as plain tuples
        return tuple(_shapes(v) for v in tree)
    shape = getattr(tree, "shape", None)
    return tuple(int(d) for d in shape) if shape is not None else tree


@dataclasses.dataclass(frozen=True)
class _Call:
    order: int
    type: str
    output_shape: Any


def _trace(model: nnx.Module, batch_shape: tuple[int, ...]) -> tuple[dict[Path, _Call], Any]:
    """Traces ``model`` on an abstract batch; returns the first call of each called sub-module (by path) and the
    model's output shape."""
    graphdef, state = nnx.split(model)
    calls: dict[Path, _Call] = {}

    def forward(state, x):
        # A copy inside the trace: switching it to eval mode and any state it writes (batch statistics) stay
        # there, and its variables are abstract, so nothing is computed.
        copy = nnx.merge(graphdef, state)
        copy.eval()
        modules = {id(node): (path, node) for path, node in nnx.iter_graph(copy) if isinstance(node, nnx.Module)}
        with _recording(modules, calls):
            return copy(x)

    try:
        # A fresh closure each time: jax caches traces by function, and a cached trace would record no calls.
        out = jax.eval_shape(forward, state, jax.ShapeDtypeStruct(batch_shape, jnp.float32))
    except Exception as error:  # a shape error deep inside a layer; say which input caused it
        raise ValueError(
            f"{type(model).__name__} cannot run on a batch of shape {batch_shape}: {type(error).__name__}: {error}"
        ) from error
    calls.pop((), None)
    return calls, _shapes(out)


@contextlib.contextmanager
def _recording(modules: dict[int, tuple[Path, nnx.Module]], calls: dict[Path, _Call]) -> Iterator[None]:
    """Records the output shape of the first call of each module in ``modules`` (id -> (path, module)) inside.

    Python looks ``module(x)`` up on the class, so the ``__call__`` of each class involved is wrapped for the
    duration, and restored even when the trace fails. The wrapper passes every other instance's calls through
    untouched (another thread's models, or a module's own ``super().__call__``).
    """
    counter = itertools.count()
    active: set[int] = set()

    def wrap(original):
        @functools.wraps(original)
        def recorded(self, *args, **kwargs):
            path = modules.get(id(self), (None,))[0]
            if path is None or id(self) in active:
                return original(self, *args, **kwargs)
            active.add(id(self))
            order = next(counter)
            try:
                out = original(self, *args, **kwargs)
            finally:
                active.discard(id(self))
            if path not in calls:
                calls[path] = _Call(order, type(self).__name__, _shapes(out))
            return out

        return recorded

    # One recording at a time, the originals read under the lock: two summaries in two threads would otherwise
    # take each other's wrappers for the originals and leave them installed.
    with _RECORDING:
        owners: dict[type, Any] = {}
        for cls in {type(node) for _, node in modules.values()}:
            owner = next((k for k in cls.__mro__ if "__call__" in vars(k)), None)
            if owner is not None and owner is not object:
                owners[owner] = vars(owner)["__call__"]
        try:
            for owner, original in owners.items():
                owner.__call__ = wrap(original)
            yield
        finally:
            for owner, original in owners.items():
                owner.__call__ = original


_RECORDING = threading.Lock()


@dataclasses.dataclass(frozen=True)
class _Variable:
    path: Path
    trainable: bool
    size: int
    bytes: int


def _variables(model: nnx.Module) -> list[_Variable]:
    """Every parameter (trainable) and batch statistic (not trainable) of ``model`` with its size; works on
    abstract models too (``nnx.eval_shape``), from shapes and dtypes only."""
    found = []
    for kind, trainable in ((nnx.Param, True), (nnx.BatchStat, False)):
        for path, variable in nnx.to_flat_state(nnx.state(model, kind)):
            value = variable.get_value() if isinstance(variable, nnx.Variable) else variable
            size = math.prod(np.shape(value))
            found.append(_Variable(tuple(path), trainable, size, size * np.dtype(value.dtype).itemsize))
    return found


def _rows(model: nnx.Module, calls: dict[Path, _Call], variables: list[_Variable]) -> list[SummaryRow]:
    """The called layers in call order, then every layer or root variable that holds parameters no called layer
    covers (so that every parameter is counted in some top-level row)."""
    module_types = {path: type(node).__name__ for path, node in nnx.iter_graph(model) if isinstance(node, nnx.Module)}

    def row(path: Path, type_name: str, output_shape: Any) -> SummaryRow:
        inside = [v for v in variables if v.path[: len(path)] == path]
        return SummaryRow(
            path="/".join(map(str, path)),
            type=type_name,
            output_shape=output_shape,
            trainable_params=sum(v.size for v in inside if v.trainable),
            non_trainable_params=sum(v.size for v in inside if not v.trainable),
            # Nested under the rows whose paths lead to it ("dense/0" is a top-level row: the list "dense" is not).
            depth=1 + sum(path[:i] in calls for i in range(1, len(path))),
        )

    rows = [row(path, call.type, call.output_shape) for path, call in sorted(calls.items(), key=lambda c: c[1].order)]
    covered = set(calls)
    for variable in variables:
        if any(variable.path[:i] in covered for i in range(1, len(variable.path))):
            continue
        # The outermost layer holding it with no called layer inside (a list whose first layer was called and
        # whose second was not gets a row for the second, not for the whole list: that would count the first
        # twice), or the variable itself when the model holds it directly.
        prefixes = (variable.path[:i] for i in range(1, len(variable.path)))
        holder = next(
            (p for p in prefixes if p in module_types and not any(c[: len(p)] == p for c in calls)),
            None,
        )
        if holder is None:
            holder = variable.path
            rows.append(row(holder, "Param" if variable.trainable else "BatchStat", None))
        else:
            rows.append(row(holder, module_types[holder], None))
        covered.add(holder)
    return rows
