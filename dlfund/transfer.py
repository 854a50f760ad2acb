"""Transfer learning: a pretrained model with a new head, its features, and its input normalization.

The two-stage recipe (Keras's "train the head, then fine-tune")::

    pretrained = dlfund.transfer.from_pretrained("runs/digits-0-4", num_classes=5, rngs=nnx.Rngs(1))
    target = pretrained.prepare(target_dataset)          # the source's input normalization, see below
    dlfund.fit(pretrained.model, target, freeze="backbone", learning_rate=1e-3)   # 1: the new head only
    dlfund.fit(pretrained.model, target, learning_rate=1e-4)                      # 2: everything, gently

Every dlfund model names its output layer (``head_name``: ``"head"``, ``"linear"`` for the linear models) and
computes the head's input with ``model.penultimate(x)``, so the same calls work for MLP, CNN, ResNet, RNN/LSTM/GRU
and Transformer. :func:`embed` returns those penultimate features for a linear probe.

**Input normalization travels with the model.** A network pretrained on inputs normalized with the source
dataset's mean and std expects the same map on new data. A run folder records it; :func:`from_pretrained` keeps it
(``Pretrained.normalization``) and :meth:`Pretrained.prepare` re-normalizes a target dataset with it (each split
is mapped back to its stored values by the target's own normalization, then through the source's). Arrays the user
normalized some other way are the user's to map: ``pretrained.normalization.apply(x_raw)`` is the source's map of
raw (stored) values.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

from dlfund import weights as weights_lib
from dlfund.data.dataset import Normalization
from dlfund.train.evaluation import EVAL_BATCH_SIZE, inference_outputs
from dlfund.train.freezing import head_name, matches

logger = logging.getLogger("dlfund")


@dataclasses.dataclass(frozen=True, eq=False)
class Pretrained:
    """What :func:`from_pretrained` built, and what it did.

    Attributes:
      model: the source architecture with every loaded weight and a freshly initialized head (eval mode).
      loaded: paths of the weights copied from the source (parameters and batch-norm statistics).
      initialized: paths of the weights drawn fresh from ``rngs``: the new head's (and ``reinitialize``'s).
      skipped: paths of the source's weights that were not used (its old head, and what was reinitialized).
      source: where the weights came from (a path, or the source model's class name).
      normalization: the source's input normalization (from its run folder, or as given), or None when unknown.
    """

    model: nnx.Module
    loaded: tuple[str, ...]
    initialized: tuple[str, ...]
    skipped: tuple[str, ...]
    source: str
    normalization: Normalization | None

    def prepare(self, data: Any) -> Any:
        """``data`` in the source's input normalization (see :func:`normalize_like`); unchanged when the source's
        normalization is unknown."""
        if self.normalization is None:
            return data
        return normalize_like(data, self.normalization)

    def __repr__(self) -> str:
        return (
            f"Pretrained({type(self.model).__name__} from {self.source}: {len(self.loaded)} weights loaded, "
            f"{len(self.initialized)} new ({', '.join(self.initialized)}), {len(self.skipped)} skipped "
            f"({', '.join(self.skipped)}); input normalization {'known' if self.normalization else 'unknown'})"
        )


def normalize_like(data: Any, normalization: Normalization) -> Any:
    """``data`` re-normalized with ``normalization`` (e.g. a pretrained model's source statistics).

    Args:
      data: a :class:`dlfund.data.Dataset` (each split mapped back to stored values by its own normalization,
        then through ``normalization``; the result records ``normalization``), the lazy ``SplitReaders`` of
        ``dlfund.data.open_splits`` (read through ``normalization``), or raw stored values x [N, ...]
        (``normalization.apply(x)``).
    """
    if hasattr(data, "splits") and hasattr(data, "normalization"):  # a Dataset
        own = data.normalization

        def mapped(split: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
            x, y = split
            return normalization.apply(own.invert(x)), y

        return dataclasses.replace(
            data,
            train=mapped(data.train),
            val=mapped(data.val),
            test=mapped(data.test),
            normalization=normalization,
        )
    if hasattr(data, "train") and hasattr(data.train, "with_normalization"):  # SplitReaders
        target = data.target_normalization
        return dataclasses.replace(
            data,
            train=data.train.with_normalization(normalization, target),
            val=data.val.with_normalization(normalization, target),
            test=data.test.with_normalization(normalization, target),
            normalization=normalization,
        )
    return normalization.apply(np.asarray(data))


def _source_model(source: Any) -> tuple[nnx.Module, str, Normalization | None]:
    """The source model, a name for it and its recorded normalization."""
    from dlfund.train.run import CONFIG_FILE, load_model

    if isinstance(source, nnx.Module):
        return source, type(source).__name__, None
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            f"source must be a run folder, a checkpoint directory, a weights file or a model; got {source!r}"
        )
    path = Path(source)
    model = load_model(path)
    normalization = None
    for folder in (path, path.parent, path.parent.parent):  # RUN, RUN/model.safetensors, RUN/checkpoints/<epoch>
        config = folder / CONFIG_FILE
        if config.is_file():
            import json

            record = (json.loads(config.read_text()).get("data") or {}).get("normalization")
            normalization = None if record is None else Normalization.from_dict(record)
            break
    return model, os.fspath(path), normalization


def _rebuilt(source_model: nnx.Module, num_classes: int, rngs: nnx.Rngs) -> nnx.Module:
    """The source's architecture with ``num_classes`` outputs, freshly initialized."""
    from dlfund.models import MODEL_CLASSES

    cls = type(source_model)
    if MODEL_CLASSES.get(cls.__name__) is not cls:
        raise ValueError(
            f"from_pretrained rebuilds dlfund's models ({', '.join(MODEL_CLASSES)}); a {cls.__name__} it cannot "
            "rebuild: build the target model yourself, copy the weights with dlfund.weights.assign, and train it "
            "with fit(freeze=...)"
        )
    config = weights_lib.model_config(source_model)
    if "num_classes" not in config:
        raise ValueError(
            f"a {cls.__name__} has no classification head to replace (it is a binary unit); pretrain a "
            "LogisticRegression or a network instead"
        )
    return cls(**{**config, "num_classes": num_classes}, rngs=rngs)


def from_pretrained(
    source: Any,
    *,
    num_classes: int,
    rngs: nnx.Rngs,
    head: nnx.Module | None = None,
    input_shape: tuple[int, ...] | None = None,
    normalization: Normalization | None = None,
    reinitialize: str | Sequence[str] = (),
) -> Pretrained:
    """The source's architecture and weights with a new classification head for ``num_classes`` classes.

    Args:
      source: a dlfund run folder (its final weights, or its newest checkpoint), a checkpoint directory
        ``RUN/checkpoints/<epoch>``, a weights file (``.safetensors``/``.npz`` written by ``dlfund.save_weights``,
        whose header names the architecture) or a dlfund model.
      num_classes: classes of the target task, >= 2.
      rngs: initializes the new head (``nnx.Rngs(seed)``).
      head: a module to use as the head instead (it reads the penultimate features [B, F] and returns the
        outputs); note that a run folder then cannot rebuild the model by itself (``load_model`` builds the
        standard head): save it with ``dlfund.save_weights`` and load into a model built the same way.
      input_shape: the target's example shape, checked against the architecture now (not at the first ``fit``).
      normalization: the source's input normalization, for a source that does not record it (a model or a bare
        weights file); a run folder's own record wins.
      reinitialize: glob patterns of more layers to draw fresh instead of loading (as for ``freeze``, a pattern
        names everything under it): the source's last hidden layers are often too specific to its own classes
        to help a new task (``reinitialize="dense"`` keeps a CNN's convolutions and redraws its dense layers).
    Returns:
      a :class:`Pretrained`: the model, what was loaded, newly initialized and skipped, and the normalization.
    Raises:
      ValueError: ``num_classes`` < 2, a source dlfund cannot rebuild (or without a head), examples of
        ``input_shape`` that the architecture does not take, or weights that do not fit (the first mismatching path
        and both shapes).
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2 (a classifier tells classes apart), got {num_classes!r}")
    if not isinstance(rngs, nnx.Rngs):
        raise TypeError(f"rngs must be an nnx.Rngs (e.g. nnx.Rngs(0)), which initializes the new head; got {rngs!r}")
    source_model, where, recorded = _source_model(source)
    model = _rebuilt(source_model, num_classes, rngs)
    if input_shape is not None:
        model.check_input(tuple(input_shape))
    head_attr = head_name(model)
    if head is not None:
        if not isinstance(head, nnx.Module):
            raise TypeError(f"head must be an nnx.Module reading the penultimate features, got {head!r}")
        setattr(model, head_attr, head)
    stored = weights_lib.flat_arrays(source_model)
    fresh = [head_attr, *_reinitialized(model, reinitialize)]
    arrays: dict[str, Any] = {}
    loaded, initialized = [], []
    for name, variable in weights_lib.weight_variables(nnx.state(model)):
        if any(matches(pattern, name) for pattern in fresh):
            arrays[name] = np.asarray(variable[...])
            initialized.append(name)
            continue
        if name not in stored:
            raise ValueError(f"{where} has no weight {name!r} that the {type(model).__name__} needs")
        arrays[name] = stored[name]
        loaded.append(name)
    skipped = sorted(set(stored) - set(loaded))
    weights_lib.assign(model, arrays, source=where)  # checks every shape, naming the first mismatch
    model.eval()
    result = Pretrained(
        model=model,
        loaded=tuple(loaded),
        initialized=tuple(initialized),
        skipped=tuple(skipped),
        source=where,
        normalization=recorded if recorded is not None else normalization,
    )
    logger.info("%r", result)
    return result


def _reinitialized(model: nnx.Module, reinitialize: str | Sequence[str]) -> list[str]:
    """The ``reinitialize`` patterns, each checked to name at least one weight of ``model``."""
    patterns = [reinitialize] if isinstance(reinitialize, str) else list(reinitialize)
    names = [name for name, _ in weights_lib.weight_variables(nnx.state(model))]
    for pattern in patterns:
        if not isinstance(pattern, str) or not any(matches(pattern, name) for name in names):
            raise ValueError(
                f"reinitialize pattern {pattern!r} matches no weight of the {type(model).__name__}; its weights "
                f"start with: {', '.join(dict.fromkeys(n.split('/')[0] for n in names))}"
            )
    return patterns


def embed(model: nnx.Module, x: Any, *, batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
    """Penultimate-layer features of every example of x [N, ...]: float32 [N, F], in eval mode (no dropout,
    batch norm on its running statistics), in compiled batches.

    ``x`` is in the model's input form (normalized as the model was trained: see :func:`normalize_like`). Fit a
    linear probe on the features with scikit-learn or ``dlfund.models.LogisticRegression(F, C)``.

    Raises:
      ValueError: a model without ``penultimate`` (dlfund's models have it), or examples that do not fit it.
    """
    if not hasattr(model, "penultimate"):
        raise ValueError(
            f"{type(model).__name__} has no penultimate(x) method, so its features are unknown; dlfund's models "
            "define it (the input of their head)"
        )
    return inference_outputs(model, x, batch_size, "embed", features=True)


__all__ = ["Pretrained", "embed", "from_pretrained", "normalize_like"]
