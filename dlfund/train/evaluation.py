"""Evaluation and prediction over whole arrays, in compiled batches, without dropping any example."""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dlfund import losses as losses_lib
from dlfund import metrics as metrics_lib
from dlfund.train import checks
from dlfund.train.devices import layout_of, shard_batch
from dlfund.train.state import Objective, TrainState, _takes_rngs, split_model
from dlfund.train.step import update_metrics

#: Evaluation batch: large enough to amortize per-batch overhead, small enough to bound activation memory.
EVAL_BATCH_SIZE = 1024


def _batch_indices(i: jax.Array, batch_size: int, num_examples: int | jax.Array) -> tuple[jax.Array, jax.Array]:
    """Indices of batch ``i`` (clamped to the last example) and the mask of real (not padding) rows."""
    idx = i * batch_size + jnp.arange(batch_size)
    return jnp.minimum(idx, num_examples - 1), (idx < num_examples).astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=("batch_size", "metrics"))
def evaluate_arrays(
    state: TrainState,
    x: jax.Array,
    y: jax.Array,
    *,
    batch_size: int,
    metrics: tuple[Any, ...],
    num_examples: int | jax.Array | None = None,
):
    """Metric values over all of ``(x, y)``, in eval mode; the last batch is padded and masked, not dropped.

    Args:
      state: the training state (only the model and objective are used).
      x: [N, ...] inputs; y: [N] labels or [N, ...] targets.
      batch_size: rows per compiled batch.
      metrics: metric accumulators (``dlfund.metrics``).
      num_examples: how many leading rows of ``x``/``y`` count (the rest is padding, masked out; see
        :func:`padded_rows`); default: all N. A traced value: one program serves every count.
    Returns:
      a tuple with one computed value per metric.
    """
    n = x.shape[0] if num_examples is None else num_examples

    def body(metric_states, i):
        idx, mask = _batch_indices(i, batch_size, n)
        return _eval_batch(state, metrics, metric_states, x[idx], y[idx], mask), None

    steps = math.ceil(x.shape[0] / batch_size)
    metric_states, _ = jax.lax.scan(body, tuple(m.init() for m in metrics), jnp.arange(steps))
    return tuple(m.compute(s) for m, s in zip(metrics, metric_states))


def _eval_batch(state: TrainState, metrics: tuple[Any, ...], metric_states, x, y, mask):
    """Eval-mode outputs of one batch, fed to the metric accumulators."""
    if state.layout is not None:
        x, y, mask = (state.layout.shard_batch(a) for a in (x, y, mask))
    outputs, _ = state.apply(x, train=False)
    return update_metrics(metrics, metric_states, state.objective.loss, y, outputs, state.data_losses(outputs, y), mask)


@functools.partial(jax.jit, static_argnames=("metrics",), donate_argnums=1)
def _eval_update(state: TrainState, metric_states, x, y, mask, *, metrics: tuple[Any, ...]):
    return _eval_batch(state, metrics, metric_states, x, y, mask)


def evaluate_source(state: TrainState, data, *, batch_size: int, metrics: tuple[Any, ...]):
    """Metric values over a split that stays on the host (a ``StreamData``), read in order by a background thread.

    The last batch is padded to ``batch_size`` and masked, so every example counts once and one program serves
    every batch. Returns a tuple with one computed value per metric, like :func:`evaluate_arrays`.
    """
    from dlfund.train.sources import Prefetcher

    n = len(data.source)
    steps = math.ceil(n / batch_size)
    order = np.minimum(np.arange(steps * batch_size).reshape(steps, batch_size), n - 1)
    mask = (np.arange(steps * batch_size) < n).reshape(steps, batch_size).astype(np.float32)
    metric_states = tuple(m.init() for m in metrics)
    with Prefetcher(data.source, order, data.prepare, sharding=data.sharding) as batches:
        for i, (x, y) in enumerate(batches):
            metric_states = _eval_update(state, metric_states, x, y, mask[i], metrics=metrics)
    return tuple(m.compute(s) for m, s in zip(metrics, metric_states))


@functools.partial(jax.jit, static_argnames=("batch_size", "features"))
def predict_arrays(state: TrainState, x: jax.Array, *, batch_size: int, features: bool = False) -> jax.Array:
    """Eval-mode outputs [N, ...] of every example of x, in batches (the last one padded); ``features``: the
    model's ``penultimate(x)`` (what its head reads) instead of its outputs."""
    n = x.shape[0]

    def body(_, i):
        idx, _mask = _batch_indices(i, batch_size, n)
        batch = shard_batch(state.layout, x[idx])
        outputs = state.model().penultimate(batch) if features else state.apply(batch, train=False)[0]
        return None, outputs

    _, outputs = jax.lax.scan(body, None, jnp.arange(math.ceil(n / batch_size)))
    outputs = outputs.reshape(-1, *outputs.shape[2:])[:n]
    if state.layout is not None and jax.process_count() > 1:  # every process reads all of them
        outputs = jax.lax.with_sharding_constraint(outputs, state.layout.replicated)
    return outputs


def eval_state(model: nnx.Module, loss: Any = None) -> TrainState:
    """A state for evaluation only (no optimizer); shares the model's arrays (nothing is donated).

    A model whose arrays sit on a mesh (trained by ``fit`` on several devices) is evaluated there, each batch split
    over the same devices."""
    graphdef, params, model_state = split_model(model)  # the training states' graph: shared compiled programs
    objective = Objective(loss=losses_lib.for_model(model, loss))
    return TrainState(
        params=params,
        model_state=model_state,
        opt_state=None,
        step=jnp.zeros([], jnp.int32),
        key=jax.random.key(0),
        graphdef=graphdef,
        optimizer=None,
        objective=objective,
        call_takes_rngs=_takes_rngs(model),
        hyper=objective.hyperparameters(),
        layout=layout_of(params),
    )


def eval_batch_size(state: TrainState, batch_size: int, num_examples: int) -> int:
    """Rows per evaluation batch: at most ``num_examples``, rounded up to split evenly over the state's devices
    (the extra rows are padding, masked out)."""
    batch_size = min(batch_size, num_examples)
    return batch_size if state.layout is None else state.layout.round_up(batch_size)


def padded_rows(state: TrainState, batch_size: int, num_examples: int) -> tuple[int, int]:
    """``(rows per batch, rows in all)`` for a call on ``num_examples`` host examples, padded so that few programs
    serve every count: below ``batch_size`` the count rounds up to a power of two (1024 rows: 11 programs), above
    it to whole batches. A program compiles once per padded shape (~0.2-0.5 s for a small CNN on 2 CPU cores,
    against ~5 ms to run), so predicting on 3, 7 and 20 examples would otherwise compile three times
    (``python -m benchmarks.bench_inference``)."""
    batch = eval_batch_size(state, batch_size, min(batch_size, 1 << (num_examples - 1).bit_length()))
    return batch, math.ceil(num_examples / batch) * batch


def _pad(a: np.ndarray, rows: int) -> np.ndarray:
    """``a`` [N, ...] with its last row repeated up to ``rows`` rows (real inputs: no zeros a model may not take)."""
    if len(a) == rows:
        return a
    return np.concatenate([a, np.broadcast_to(a[-1:], (rows - len(a), *a.shape[1:]))])


def output_shape(state: TrainState, example_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The model's output shape for a batch of 2 examples (traced abstractly: nothing runs or compiles).

    Raises:
      ValueError: the model cannot run on such inputs; the message names the input shape.
    """
    # Tracing the model costs ~10 ms, a tenth of a small model's whole fit; equal structures and shapes give
    # equal outputs, so a re-run notebook cell asks once.
    leaves, structure = jax.tree.flatten(state)
    key = (structure, tuple((leaf.shape, leaf.dtype) for leaf in leaves), tuple(example_shape))
    if key not in _OUTPUT_SHAPES:
        probe = jax.ShapeDtypeStruct((2, *example_shape), jnp.float32)
        try:
            out = jax.eval_shape(lambda s, x: s.apply(x, train=False)[0], state, probe)
        except Exception as error:  # a shape error deep inside a layer; say which input caused it
            raise ValueError(
                f"the model cannot run on examples of shape {tuple(example_shape)}: {type(error).__name__}: {error}"
            ) from error
        if len(_OUTPUT_SHAPES) >= 256:
            _OUTPUT_SHAPES.clear()
        _OUTPUT_SHAPES[key] = tuple(out.shape)
    return _OUTPUT_SHAPES[key]


_OUTPUT_SHAPES: dict[Any, tuple[int, ...]] = {}


def classes_from_outputs(loss: losses_lib.Loss, out_shape: tuple[int, ...]) -> int | None:
    """How many classes the model's outputs distinguish (None for regression)."""
    if not loss.is_classification:
        return None
    if loss.task == losses_lib.BINARY or (len(out_shape) == 1 or out_shape[-1] == 1):
        return 2
    return int(out_shape[-1])


DEFAULT_METRICS = ("loss", "accuracy", "precision_macro", "recall_macro", "f1_macro", "confusion_matrix")


def evaluate(
    model: nnx.Module,
    split: Any,
    *,
    loss: Any = None,
    metrics: tuple[Any, ...] | None = None,
    batch_size: int = EVAL_BATCH_SIZE,
) -> dict[str, Any]:
    """Evaluates ``model`` on a split; every example counts.

    Args:
      model: an NNX module (evaluated in eval mode: no dropout, batch norm on running statistics); or several
        classifiers (a :class:`dlfund.SweepResult`, a list of models, a :class:`dlfund.Ensemble`), evaluated as
        their ensemble: the average of their probabilities.
      split: an ``(x, y)`` pair, a :class:`dlfund.data.Dataset` (its test split), or a lazy reader such as
        ``dlfund.data.open_splits(...).test`` (read batch by batch, never all in memory).
      loss: default: the model's ``default_loss``.
      metrics: names or accumulators; default: loss, accuracy, macro precision/recall/F1 and the confusion
        matrix (for a binary task also precision/recall/F1 of the positive class 1); regression: loss only.
      batch_size: rows per compiled batch.
    Returns:
      a dict of Python floats (the confusion matrix as a list of lists), plus ``num_examples``.
    """
    from dlfund.train.execution import StreamData
    from dlfund.train.sources import example_shape as host_example_shape
    from dlfund.train.sources import is_host_source

    if not isinstance(model, nnx.Module) or hasattr(model, "histories"):
        from dlfund.train.ensemble import as_ensemble

        model = as_ensemble(model, loss)
        loss = None
    if hasattr(split, "test") and hasattr(split, "num_classes"):
        split = split.test
    state = eval_state(model, loss)
    objective = state.objective.loss
    if is_host_source(split):
        example_shape, num_examples = host_example_shape(split, "evaluation"), len(split)
        if num_examples == 0:
            raise ValueError("the evaluation split is empty: there is nothing to evaluate on")
    else:
        x, y = checks.as_split("evaluation", split)
        example_shape, num_examples = x.shape[1:], len(x)
        checks.check_batched_input(model, x.shape)
    checks.check_model_input(model, example_shape)
    out_shape = output_shape(state, example_shape)
    checks.check_loss_fits_outputs(objective, out_shape)
    num_classes = classes_from_outputs(objective, out_shape)
    if metrics is None:
        metrics = ("loss",)
        if num_classes is not None:
            metrics = DEFAULT_METRICS + (("precision", "recall", "f1") if num_classes == 2 else ())
    resolved = tuple(metrics_lib.get_metric(m, num_classes) for m in metrics)
    batch_size = checks.check_positive_int("batch_size", batch_size)
    if is_host_source(split):
        check = functools.partial(checks.check_batch, "evaluation", objective, num_classes)
        data = StreamData(split, check, None if state.layout is None else state.layout.batch)
        batch_size = eval_batch_size(state, batch_size, num_examples)
        values = evaluate_source(state, data, batch_size=batch_size, metrics=resolved)
    else:
        y = checks.check_targets("evaluation", y, objective, num_classes)
        checks.check_target_shape("evaluation", y.shape, objective, out_shape)
        batch_size, rows = padded_rows(state, batch_size, num_examples)
        x, y = _pad(x, rows), _pad(y, rows)
        values = evaluate_arrays(state, x, y, batch_size=batch_size, metrics=resolved, num_examples=num_examples)
    result: dict[str, Any] = {}
    for metric, value in zip(resolved, jax.device_get(values)):
        if isinstance(metric, metrics_lib.ConfusionMatrix):
            value = np.rint(value).astype(np.int64)  # counts (kept as float32 sums inside the program)
        result[metric.name] = _to_python(value)
    result["num_examples"] = num_examples
    return result


def predict(model: nnx.Module, x: Any, *, batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
    """Model outputs (logits for classifiers) for every example of x [N, ...], in eval mode: [N, ...].

    ``x`` must already be in the model's input form (normalized as in training); for raw inputs use the run's
    :meth:`dlfund.Run.predict`, which applies the recorded normalization.

    Raises:
      ValueError: examples that do not fit the model; a single example (no batch axis) is told to use ``x[None]``.
    """
    return inference_outputs(model, x, batch_size, "predict")


def inference_outputs(model: nnx.Module, x: Any, batch_size: int, what: str, *, features: bool = False) -> np.ndarray:
    """Eval-mode outputs (``features``: penultimate features) [N, ...] of x [N, ...], after checking that the
    examples fit ``model`` and that there is at least one (``what``: the verb for the message). The rows are
    padded (:func:`padded_rows`) so that calls on different counts share programs; the padding is dropped."""
    x = np.asarray(x, np.float32)
    checks.check_batched_input(model, x.shape)
    if len(x) == 0:
        raise ValueError(f"x holds no examples (shape [0, ...]); there is nothing to {what}")
    state = eval_state(model)
    batch_size, rows = padded_rows(state, checks.check_positive_int("batch_size", batch_size), len(x))
    outputs = predict_arrays(state, _pad(x, rows), batch_size=batch_size, features=features)
    return np.asarray(outputs)[: len(x)]


def predict_classes(model: nnx.Module, x: Any, *, loss: Any = None, batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
    """Predicted class ids int32 [N] for already-normalized inputs x [N, ...], in eval mode.

    The rule is the loss's (argmax of the logits for softmax cross-entropy, score > 0 for binary losses).

    Args:
      model: a classifier.
      x: [N, ...] inputs in the model's input form (for raw inputs use :meth:`dlfund.Run.predict_classes`).
      loss: the loss the model was trained with; default: the model's ``default_loss``.
      batch_size: rows per compiled batch.
    Raises:
      ValueError: a regression model, or examples that do not fit the model (see :func:`predict`).
    """
    objective = losses_lib.for_model(model, loss)
    if not objective.is_classification:
        raise ValueError(f"the {objective.name!r} loss is a regression loss: there are no classes to predict")
    outputs = predict(model, x, batch_size=batch_size)
    checks.check_loss_fits_outputs(objective, outputs.shape)
    return np.asarray(objective.predict(jnp.asarray(outputs)), np.int32)


def _to_python(value: Any) -> Any:
    value = np.asarray(value)
    return value.item() if value.ndim == 0 else value.tolist()
