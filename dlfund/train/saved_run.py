"""A finished (or interrupted) run folder, loaded for inference on new raw data: ``dlfund.load_run(path)``.

The run folder records how inputs were normalized, the class names and the input shape (``config.json``, key
``data``), so predictions on raw inputs are right by construction: ``run.predict(x_raw)`` applies the same map
the model was trained on. ``dlfund.predict(run.model, x)`` is for inputs that are already normalized.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from dlfund import io as io_lib
from dlfund import losses as losses_lib
from dlfund.data.dataset import Normalization
from dlfund.history import History
from dlfund.train import run as run_lib
from dlfund.train.evaluation import EVAL_BATCH_SIZE, evaluate, predict


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Run:
    """A run folder's model with everything needed to use it on raw inputs.

    Attributes:
      path: the run folder.
      model: the trained model, in eval mode (final weights, or the best epoch's when early stopping restored
        them; the newest checkpoint of a run that never finished).
      config: ``config.json`` as recorded (``config["fit"]``: every resolved ``fit`` option).
      history: the per-epoch table, with ``selected_epoch`` / ``restored_best`` when the run finished.
      normalization: the map from raw inputs to model inputs (fitted on the training split), or None when the
        run was trained on arrays given as they are (then raw inputs are used unchanged).
      target_normalization: regression only: the map of the targets (predictions are mapped back), or None.
      class_names: one name per class id (ids as names for array data); empty for regression.
      input_shape: the shape of one raw example, e.g. (8, 8, 1).
      loss: the training loss; it decides how outputs become classes and probabilities.
      result: ``result.json`` (epochs run, best epoch, stop reason), or None if the run did not finish.
      metrics: ``metrics.json`` (``dlfund train``'s test metrics), or None.
    """

    path: Path
    model: nnx.Module
    config: dict[str, Any]
    history: History
    normalization: Normalization | None
    target_normalization: Normalization | None
    class_names: tuple[str, ...]
    input_shape: tuple[int, ...]
    loss: losses_lib.Loss
    result: dict[str, Any] | None
    metrics: dict[str, Any] | None

    @property
    def num_classes(self) -> int | None:
        """Number of classes; None for a regression run."""
        return len(self.class_names) if self.loss.is_classification else None

    @property
    def finished(self) -> bool:
        """Whether the run ended (all epochs, or stopped early); False for an interrupted run."""
        return self.result is not None

    def inputs(self, x_raw: Any) -> np.ndarray:
        """Raw inputs [N, *input_shape] -> the model's inputs (float32, same shape), by the recorded normalization.

        Raises:
          ValueError: examples of another shape (a single example, without the batch axis, is told to use
            ``x[None]``); NaN or infinite values, whose predictions would be NaN.
          TypeError: inputs that are not real numbers (strings, objects, complex numbers).
        """
        x_raw = np.asarray(x_raw)
        shape = tuple(self.input_shape)
        if tuple(x_raw.shape) == shape:
            raise ValueError(
                f"x has shape {x_raw.shape}, which is one example of this run's inputs, not a batch: add a batch "
                f"axis, x[None] (shape {(1, *shape)})"
            )
        if x_raw.ndim == 0 or tuple(x_raw.shape[1:]) != shape:
            raise ValueError(
                f"this run's model takes examples of shape {shape} (x of shape [N, {', '.join(map(str, shape))}]); "
                f"got x of shape {x_raw.shape}"
            )
        if len(x_raw) == 0:
            raise ValueError("x holds no examples (shape [0, ...]); there is nothing to predict")
        if not real_numbers(x_raw):
            raise TypeError(f"inputs must be real numbers, got dtype {x_raw.dtype}")
        if np.issubdtype(x_raw.dtype, np.floating) and not np.isfinite(x_raw).all():
            bad = ~np.isfinite(x_raw.reshape(len(x_raw), -1)).all(axis=1)
            raise ValueError(
                f"x holds NaN or infinite values in {int(bad.sum())} of {len(x_raw)} examples (the first is example "
                f"{int(np.argmax(bad))}); a model's prediction for them is NaN, so they are refused: fill or drop them"
            )
        if self.normalization is None:
            return x_raw.astype(np.float32, copy=False)
        return self.normalization.apply(x_raw)

    def predict(self, x_raw: Any, *, batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
        """Class probabilities float32 [N, C] for raw inputs (column i is ``class_names[i]``); for a regression
        run the predictions [N, ...] in the targets' own units.

        Raises:
          ValueError: see :meth:`inputs`; a classifier whose loss has no probabilities (hinge, perceptron).
        """
        outputs = predict(self.model, self.inputs(x_raw), batch_size=batch_size)
        if not self.loss.is_classification:
            if self.target_normalization is not None:
                outputs = self.target_normalization.invert(outputs)
            return outputs
        return np.asarray(self.loss.probabilities(jnp.asarray(outputs)), np.float32)

    def predict_classes(self, x_raw: Any, *, batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
        """Predicted class ids int32 [N] for raw inputs; ``run.class_names[i]`` names class i."""
        if not self.loss.is_classification:
            raise ValueError("this is a regression run: there are no classes to predict; use predict")
        outputs = predict(self.model, self.inputs(x_raw), batch_size=batch_size)
        return np.asarray(self.loss.predict(jnp.asarray(outputs)), np.int32)

    def evaluate(self, x_raw: Any, y: Any, **options: Any) -> dict[str, Any]:
        """``dlfund.evaluate`` on raw inputs and labels (regression targets in their own units): the same numbers
        as evaluating the normalized split the run was tested on."""
        y = np.asarray(y)
        if self.target_normalization is not None:
            y = self.target_normalization.apply(y)
        return evaluate(self.model, (self.inputs(x_raw), y), loss=self.loss, **options)

    def __repr__(self) -> str:
        fit = self.config.get("fit", {})
        data = self.config.get("data", {})
        epochs = f"{len(self.history)}/{fit.get('epochs', '?')} epochs"
        if self.result is not None and self.result.get("best_epoch") is not None:
            epochs += f", best {self.result['best_epoch']}"
        status = "finished" if self.finished else "unfinished"
        lines = [f"Run({os.fspath(self.path)!r}: {type(self.model).__name__} on {data.get('name') or 'arrays'}, "
                 f"{epochs}, {status})"]  # fmt: skip
        shape = ", ".join(["N", *map(str, self.input_shape)])
        if self.num_classes is not None:
            names = ", ".join(self.class_names[:10]) + (", ..." if len(self.class_names) > 10 else "")
            lines.append(f"  inputs ({shape}); {self.num_classes} classes: {names}")
        else:
            lines.append(f"  inputs ({shape}); regression")
        lines.append(f"  normalization: {'none (inputs used as given)' if self.normalization is None else 'recorded'}")
        test = (self.metrics or {}).get("test", {})
        scores = [f"{k}={v:.4f}" for k, v in test.items() if isinstance(v, float)][:5]
        if scores:
            lines.append(f"  test: {', '.join(scores)}")
        return "\n".join(lines)


def real_numbers(x: np.ndarray) -> bool:
    """Whether ``x`` holds real numbers a model can take: integers, floats or booleans (not strings, objects or
    complex numbers, whose imaginary part a cast to float32 would drop)."""
    return (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_) and not np.iscomplexobj(x)


def _read_json(path: Path) -> dict[str, Any] | None:
    return io_lib.read_json(path) if path.is_file() else None


def _history(path: Path) -> History:
    if (path / run_lib.HISTORY_CSV).is_file():
        return History.from_csv(path / run_lib.HISTORY_CSV)
    lines = (path / run_lib.HISTORY_JSONL).read_text().splitlines() if (path / run_lib.HISTORY_JSONL).is_file() else []
    return History(json.loads(line) for line in lines if line.strip())


def _loss(description: dict[str, Any] | None) -> losses_lib.Loss:
    description = dict(description or {})
    name = description.pop("name", None)
    if name not in losses_lib.LOSSES:
        raise ValueError(
            f"the run was trained with a custom loss {name!r}, which a run folder cannot rebuild; load the model "
            "with dlfund.load_model(path) and apply your loss's prediction rule"
        )
    return losses_lib.get(name, label_smoothing=description.get("label_smoothing"))


def load_run(path: str | os.PathLike) -> Run:
    """Loads a run folder written by ``fit(..., run_dir=...)`` or ``dlfund train`` for inference on raw data.

    Raises:
      FileNotFoundError: ``path`` is not a run folder (no ``config.json``) or holds no weights or checkpoint.
      ValueError: a folder written before runs recorded their input normalization, a custom loss or model.
    """
    path = Path(path)
    config = _read_json(path / run_lib.CONFIG_FILE)
    if config is None:
        raise FileNotFoundError(f"{path} is not a dlfund run folder (no {run_lib.CONFIG_FILE})")
    run_lib.refuse_sweep_folder(path, config)
    data = config.get("data")
    if data is None:
        raise ValueError(
            f"{path} was written by a dlfund that did not record the input normalization, so raw inputs cannot be "
            "prepared for it; load the model with dlfund.load_model(path) and normalize inputs as the run's "
            "dataset did (dataset.normalization.apply(x))"
        )
    loss = _loss(config.get("fit", {}).get("loss"))
    model = run_lib.load_model(path)
    result = run_lib.read_outcome(path)
    history = _history(path)
    if result is not None:
        history.selected_epoch = result.get("best_epoch")
        history.restored_best = bool(result.get("restored_best"))
    record = data.get("normalization")
    target = data.get("target_normalization")
    return Run(
        path=path,
        model=model,
        config=config,
        history=history,
        normalization=None if record is None else Normalization.from_dict(record),
        target_normalization=None if target is None else Normalization.from_dict(target),
        class_names=tuple(data.get("class_names") or ()),
        input_shape=tuple(data["input_shape"]),
        loss=loss,
        result=result,
        metrics=_read_json(path / run_lib.METRICS_FILE),
    )


def top_probabilities(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The most likely class id [N] (int) and its probability [N] of probabilities [N, C]."""
    classes = np.argmax(probabilities, axis=-1)
    return classes, np.take_along_axis(probabilities, classes[:, None], axis=-1)[:, 0]


__all__ = ["Run", "load_run", "real_numbers", "top_probabilities"]
