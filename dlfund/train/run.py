"""A run folder: the whole truth of one training run, written as it happens, and the way to resume it.

Layout (``fit(..., run_dir=DIR)`` writes it; ``dlfund train`` adds ``metrics.json``)::

    DIR/config.json          every resolved option, library versions, devices, git commit
    DIR/history.jsonl        one JSON line per epoch, appended as it ends (a crash keeps what was done)
    DIR/history.csv          the same table, rewritten each epoch
    DIR/tensorboard/         TensorBoard event files (tensorboardX): every history column per epoch
    DIR/checkpoints/<epoch>/ Orbax checkpoints: model, optimizer, step, PRNG key, early stopping, history
    DIR/loss_curve.png       train vs validation loss;  DIR/metrics.png: the metric curves
    DIR/weights.safetensors  the final (or best) weights, for dlfund.load_model / load_weights
    DIR/result.json          written last, when the run ends: epochs run, best epoch, stop reason

``dlfund train`` adds its evaluation on the test split: ``metrics.json``, ``confusion_matrix.png`` and, for a
binary task, ``roc_curve.png`` and ``precision_recall_curve.png`` (:func:`write_evaluation_figures`).

Every file is written atomically or appended line by line; a failure to write (read-only or full disk) raises
:class:`RunDirectoryError`, which ``fit`` turns into a stop with the in-memory result intact.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dlfund import io as io_lib
from dlfund import plotting
from dlfund._version import __version__
from dlfund.checkpoint import CheckpointError, CheckpointStore
from dlfund.history import History

CONFIG_FILE = "config.json"
HISTORY_JSONL = "history.jsonl"
HISTORY_CSV = "history.csv"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
WEIGHTS_FILE = "weights.safetensors"
RESULT_FILE = "result.json"
METRICS_FILE = "metrics.json"
#: The figures of a run's evaluation (``dlfund train``): they describe the model of the run's end.
EVALUATION_FIGURES = (plotting.CONFUSION_FIGURE, plotting.ROC_FIGURE, plotting.PR_FIGURE)
#: The training curves, drawn when a run ends (the history files hold every epoch as it ends).
HISTORY_FIGURES = (plotting.LOSS_FIGURE, plotting.METRICS_FIGURE)


class RunDirectoryError(OSError):
    """The run folder could not be written (read-only, full disk, ...)."""


def _plain(obj: Any) -> Any:
    """JSON round trip: tuples become lists, so saved and current configurations compare equal."""
    return json.loads(json.dumps(obj, default=io_lib._jsonable))


def environment() -> dict[str, Any]:
    """Library versions, devices and the git commit of the working directory (if any)."""
    import flax
    import optax

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "dlfund": __version__,
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "python": platform.python_version(),
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "git_commit": commit or None,
    }


def _model_config(model) -> dict[str, Any]:
    from dlfund.weights import model_config

    return model_config(model)


def describe_model(model) -> dict[str, Any]:
    """Class name and constructor arguments (dlfund models remember them), enough to rebuild the model."""
    return {"class": type(model).__name__, "config": _model_config(model) or None}


def describe_data(data: Any, example_shape: tuple[int, ...], num_classes: int | None) -> dict[str, Any]:
    """What inference on new raw inputs needs: input shape, class names and the input normalization.

    A :class:`dlfund.data.Dataset` (or ``SplitReaders``) knows its normalization and class names; for ``(x, y)``
    arrays the inputs are recorded as used as given (``normalization: None``) and the classes are named by id.
    """
    normalization = getattr(data, "normalization", None)
    if normalization is not None and hasattr(data, "num_classes"):
        target = getattr(data, "target_normalization", None)
        return {
            "name": getattr(data, "name", None),
            "input_shape": list(data.input_shape),
            "num_classes": data.num_classes,
            "class_names": list(data.class_names),
            "normalization": normalization.to_dict(),
            "target_normalization": None if target is None else target.to_dict(),
        }
    return {
        "name": None,
        "input_shape": list(example_shape),
        "num_classes": num_classes,
        "class_names": [] if num_classes is None else [str(i) for i in range(num_classes)],
        "normalization": None,
        "target_normalization": None,
    }


def differing_keys(saved: Any, current: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two JSON-like configurations differ."""
    if isinstance(saved, dict) and isinstance(current, dict):
        keys = sorted(set(saved) | set(current))
        return [d for k in keys for d in differing_keys(saved.get(k), current.get(k), f"{prefix}{k}.")]
    return [] if saved == current else [prefix.rstrip(".")]


# How an epoch runs, where the data sits and over how many devices are chosen per machine; they compute the same
# training up to float rounding (loop and stream bit for bit), so a run may resume on a machine that chooses
# differently (a run saved on 8 devices resumes on 1).
_NOT_COMPARED = ("execution", "data_placement", "epochs_per_call", "devices", "parallelism", "precision_note")
# A resumed run may be given more epochs than it was started with (it is extended); a schedule sized for the run
# length is then sized for the new one.
_EXTENDABLE = ("epochs", "optimizer.total_steps")


# Options added after runs were recorded without them: a folder that lacks one ran with its default.
_ADDED_LATER = {
    "accumulate_steps": 1,
    "precision": "float32",
    "frozen": [],
    "held_batch_norms": [],
    "learning_rates": {},
}


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in {**_ADDED_LATER, **config}.items() if k not in _NOT_COMPARED}


def _checkpoint_items(state, best_weights) -> dict[str, Any]:
    """The checkpoint's items: the model (what load_model needs), the rest of the training state, the best weights."""
    items = {
        "model": {"params": state.params, "model_state": state.model_state},
        "training": {"opt_state": state.opt_state, "step": state.step, "key": jax.random.key_data(state.key)},
    }
    if best_weights is not None:
        items["best"] = {"params": best_weights[0], "model_state": best_weights[1]}
    return items


class RunRecorder:
    """Writes a run folder while ``fit`` trains, and restores a run from it.

    Args:
      run_dir: the folder.
      config: the fit configuration (JSON-friendly); a resumed run must have the same.
      extra: more to record in config.json (e.g. the command line's options, dataset and model descriptions).
      resume: continue the run in ``run_dir``; without it, a folder that already holds a run is refused.
      checkpoint_every: save a checkpoint every this many epochs (and at the last epoch).
      keep: how many of the latest checkpoints to keep (the best by ``monitor`` is kept too).
      monitor, mode: the metric that decides the best checkpoint.
      tensorboard: write TensorBoard event files.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        *,
        config: dict[str, Any],
        extra: dict[str, Any] | None = None,
        resume: bool = False,
        checkpoint_every: int = 1,
        keep: int = 3,
        monitor: str = "loss",
        mode: str = "min",
        tensorboard: bool = True,
    ):
        self.run_dir = Path(run_dir)
        self.config = _plain(config)
        self.extra = _plain(extra or {})
        self.resume = resume
        self.checkpoint_every = checkpoint_every
        self.keep = keep
        self.monitor, self.mode = monitor, mode
        self.use_tensorboard = tensorboard
        self.store: CheckpointStore | None = None
        # A resumed run's epochs and dlfund version, as recorded in its folder.
        self._recorded_epochs: int | None = None
        self._recorded_version: str | None = None
        self._writer = None
        self._history = History()
        # In a multi-process run every process takes part in the checkpoints (Orbax saves collectively, each
        # process its own shards) and only process 0 writes the rest of the folder.
        self.main = jax.process_index() == 0

    # --- starting ---------------------------------------------------------------------------------------------

    def _check_folder(self) -> None:
        config_path = self.run_dir / CONFIG_FILE
        holds_run = config_path.exists() or (self.run_dir / CHECKPOINTS).exists()
        if holds_run and not self.resume:
            raise ValueError(
                f"{self.run_dir} already holds a run; pass resume=True (dlfund resume {self.run_dir}) to continue "
                "it, or choose a new run_dir"
            )
        if self.resume and config_path.exists():
            recorded = json.loads(config_path.read_text())
            self._recorded_epochs = recorded.get("fit", {}).get("epochs")
            self._recorded_version = recorded.get("environment", {}).get("dlfund")
            saved = {"fit": _comparable(recorded.get("fit", {})), "model": recorded.get("model")}
            current = {"fit": _comparable(self.config), "model": self.extra.get("model")}
            differ = [k for k in differing_keys(saved, current) if k.removeprefix("fit.") not in _EXTENDABLE]
            if differ:
                raise ValueError(
                    f"{self.run_dir} belongs to a run with a different configuration, so it cannot be resumed; "
                    f"differing keys: {', '.join(differ)}. Use a new run_dir for the new configuration."
                )

    def start(self, state, early_stopping) -> tuple[Any, int, History, Any, Any]:
        """Opens the folder; returns ``(state, epochs_done, history, early_stopping_state, best_weights)``.

        For a new run that is the given state and nothing done; for a resumed run, what the newest usable
        checkpoint holds.
        """
        self._check_folder()
        _sync_processes("dlfund: run folder checked")  # before process 0 writes into it
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.store = CheckpointStore(
                self.run_dir / CHECKPOINTS, keep=self.keep, monitor=self.monitor, mode=self.mode
            )
        except OSError as error:
            raise RunDirectoryError(f"cannot write the run folder {self.run_dir}: {error}") from error
        target = _checkpoint_items(state, (state.params, state.model_state))
        try:
            restored = self.store.restore_latest(target) if self.resume else None
        except CheckpointError as error:
            self.close(quietly=True)
            if "does not fit" not in str(error):
                raise
            raise ValueError(
                f"{error}. A run folder of an earlier dlfund (this run: {self._recorded_version or 'unknown'}; this "
                f"dlfund: {__version__}) may hold an optimizer state of another layout and cannot be resumed; "
                f"dlfund.load_model({os.fspath(self.run_dir)!r}) still reads its weights"
            ) from error
        epochs_done, stopper_state, best_weights = 0, early_stopping.init() if early_stopping else None, None
        if restored is not None:
            epochs_done, items, meta = restored
            if epochs_done > self.config["epochs"]:
                self.close(quietly=True)
                raise ValueError(
                    f"{self.run_dir} already holds {epochs_done} epochs, more than epochs={self.config['epochs']}; "
                    f"resume it with epochs >= {epochs_done} (or as it was configured)"
                )
            model, training = items["model"], items["training"]
            state = state.replace(
                params=model["params"],
                model_state=model["model_state"],
                opt_state=training["opt_state"],
                step=training["step"],
                key=jax.random.wrap_key_data(training["key"], impl=jax.random.key_impl(state.key)),
            )
            self._history = History(meta["history"])
            if early_stopping is not None and meta.get("early_stopping") is not None:
                # In the dtypes of a fresh state (from JSON, Python numbers would be weak-typed: another program).
                stopper_state = type(stopper_state)(
                    *(
                        jnp.asarray(v, jnp.asarray(fresh).dtype)
                        for v, fresh in zip(meta["early_stopping"], stopper_state)
                    )
                )
                if "best" in items and int(stopper_state.best_epoch) > 0:
                    best_weights = (items["best"]["params"], items["best"]["model_state"])
                extended = self.config["epochs"] > (self._recorded_epochs or self.config["epochs"])
                if bool(stopper_state.stop) and extended:
                    self.close(quietly=True)
                    raise ValueError(
                        f"{self.run_dir} stopped early at epoch {epochs_done}, so it cannot be extended to "
                        f"{self.config['epochs']} epochs: early stopping would stop it again at once. Start a new "
                        "run with the settings you want"
                    )
        self._write_main(self._open_outputs, epochs_done)
        return state, epochs_done, self._history, stopper_state, best_weights

    def _open_outputs(self, epochs_done: int) -> None:
        # A resumed run is unfinished until it ends again: the files of an earlier end (its outcome, final
        # weights, test metrics, curves) would describe another model than the checkpoint it continues from, so
        # they go; load_model then reads the newest checkpoint, and this run's end writes them anew.
        for name in (RESULT_FILE, WEIGHTS_FILE, METRICS_FILE, *EVALUATION_FIGURES, *HISTORY_FIGURES):
            (self.run_dir / name).unlink(missing_ok=True)
        io_lib.write_json(self.run_dir / CONFIG_FILE, {"fit": self.config, **self.extra, "environment": environment()})
        # The history is the checkpoint's: epochs logged after the last checkpoint are redone, so drop them.
        io_lib.write_text(self.run_dir / HISTORY_JSONL, "".join(json.dumps(r) + "\n" for r in self._history.rows))
        self._history.to_csv(self.run_dir / HISTORY_CSV)
        if self.use_tensorboard:
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(str(self.run_dir / TENSORBOARD), purge_step=epochs_done + 1)

    # --- during training --------------------------------------------------------------------------------------

    def epoch_end(self, epoch: int, row: dict[str, Any], state, stopper_state, best_weights, last: bool) -> bool:
        """Records one finished epoch (``row`` is already in the history ``start`` returned); checkpoints it every
        ``checkpoint_every`` epochs and at the end. Returns whether it saved a checkpoint."""
        self._write_main(self._log_row, row)
        if last or epoch % self.checkpoint_every == 0:
            self.checkpoint(epoch, state, stopper_state, best_weights)
            return True
        return False

    def _log_row(self, row: dict[str, Any]) -> None:
        with open(self.run_dir / HISTORY_JSONL, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._history.to_csv(self.run_dir / HISTORY_CSV)
        if self._writer is not None:
            epoch = row["epoch"]
            for name, value in row.items():
                if name == "epoch" or (name == "learning_rate" and math.isnan(value)):
                    continue  # NaN learning rate: an Optax transformation's own, which the run does not know
                tag = "learning_rate" if name == "learning_rate" else _tag(name)
                self._writer.add_scalar(tag, value, epoch)
            self._writer.flush()

    def checkpoint(self, epoch: int, state, stopper_state, best_weights) -> None:
        """Saves the state after ``epoch`` (asynchronously; ``finish`` waits for it)."""
        meta = {
            "epoch": epoch,
            # A copy: Orbax serializes asynchronously, after later epochs have appended rows.
            "history": [dict(row) for row in self._history.rows],
            "early_stopping": None if stopper_state is None else [v.item() for v in jax.device_get(stopper_state)],
        }
        metrics = {k: float(v) for k, v in self._history.last().items() if isinstance(v, (int, float))}
        self._write(self.store.save, epoch, _checkpoint_items(state, best_weights), meta, metrics)

    # --- the end ------------------------------------------------------------------------------------------------

    def finish(self, model, history: History, outcome: dict[str, Any]) -> None:
        """Final files: history table, plots, weights, ``result.json`` (``outcome``); waits for pending
        checkpoints. ``result.json`` is written last: a folder that has it holds a finished run."""
        from dlfund.weights import save_weights

        host_model = _readable(model)  # collective in a multi-process run: every process calls finish

        def final():
            if self.main:
                history.to_csv(self.run_dir / HISTORY_CSV)
                history.save_plots(self.run_dir)
                save_weights(self.run_dir / WEIGHTS_FILE, host_model)
            self.store.wait()
            if self.main:
                io_lib.write_json(self.run_dir / RESULT_FILE, outcome)

        try:
            self._write(final)
        finally:
            self.close()

    def close(self, *, quietly: bool = False) -> None:
        """Releases the checkpoint manager and the TensorBoard writer (pending saves are finished first).

        ``quietly``: when training already failed, a second error while closing is not raised.
        """
        try:
            if self._writer is not None:
                writer, self._writer = self._writer, None
                writer.close()
            if self.store is not None:
                store, self.store = self.store, None
                store.close()
        except Exception as error:
            if not quietly:
                raise RunDirectoryError(f"could not finish writing the run folder {self.run_dir}: {error}") from error

    def _write(self, fn, *args) -> Any:
        try:
            return fn(*args)
        except OSError as error:
            raise RunDirectoryError(f"could not write to the run folder {self.run_dir}: {error}") from error

    def _write_main(self, fn, *args) -> Any:
        """:meth:`_write` in process 0 only (the other processes of a multi-process run write no files)."""
        return self._write(fn, *args) if self.main else None


def binary_scores(model, x: Any, loss: Any = None) -> tuple[np.ndarray, float] | None:
    """The positive class's score of each example, and the model's decision threshold on it; None unless the
    model is a binary classifier.

    The score is the model's margin for class 1: for a cross-entropy model its log-odds (class 1's logit minus
    class 0's, or the one sigmoid logit), for a margin model (perceptron, hinge) its raw output; the threshold
    is 0 for both (probability 0.5 for the first). ROC and precision-recall curves depend only on the order of
    the scores, and log-odds keep that order where probabilities do not: every example with a logit above ~37
    has probability 1.0 even in float64, and a confident model's curves would be drawn through one big tie.

    Args:
      model: a classifier (NNX module).
      x: [N, ...] inputs in the model's input form (normalized as in training).
      loss: the training loss; default: the model's ``default_loss``.
    Returns:
      ``(scores float64 [N], threshold)``, or None for a regression model or one with more than 2 outputs.
    """
    from dlfund import losses as losses_lib
    from dlfund.train.evaluation import predict

    objective = losses_lib.for_model(model, loss)
    if not objective.is_classification:
        return None
    outputs = np.asarray(predict(model, x), np.float64)  # collective on a multi-process mesh: every process calls
    width = outputs.shape[-1] if outputs.ndim == 2 else 1
    if width > 2:
        return None
    # The evidence for class 1: its logit minus class 0's (2 outputs), or the one output's score.
    margin = outputs[:, 1] - outputs[:, 0] if width == 2 else outputs.reshape(len(outputs))
    return margin, 0.0


def write_evaluation_figures(
    run_dir: str | os.PathLike,
    confusion: Any,
    *,
    class_names: Any = None,
    y_true: Any = None,
    binary: tuple[np.ndarray, float] | None = None,
    split: str = "test",
) -> list[str]:
    """Writes a classifier's evaluation figures into the run folder; returns their file names.

    ``confusion_matrix.png`` always; with binary labels ``y_true`` [N] and ``binary`` (from
    :func:`binary_scores`), ``roc_curve.png`` and ``precision_recall_curve.png``, the model's decision threshold
    marked. Curves need both classes among ``y_true``; without them only the confusion matrix is drawn. Call it
    in process 0 only (a multi-process run's other processes write nothing).
    """
    y_true = None if y_true is None else np.asarray(y_true)
    curves = binary is not None and y_true is not None and np.unique(y_true).size == 2
    try:
        written = plotting.save_classification_plots(
            run_dir,
            confusion,
            class_names=class_names,
            y_true=y_true if curves else None,
            scores=binary[0] if curves else None,
            threshold=binary[1] if curves else None,
            split=split,
        )
    except OSError as error:
        raise RunDirectoryError(f"could not write to the run folder {run_dir}: {error}") from error
    return [Path(path).name for path in written]


def _sync_processes(name: str) -> None:
    """A barrier across the processes of a multi-process run (nothing with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _readable(model):
    """``model``, or in a multi-process run a copy whose arrays this process can read (gathered from the other
    processes' devices: collective, so every process calls it)."""
    from flax import nnx

    graphdef, state = nnx.split(model)
    if all(getattr(a, "is_fully_addressable", True) for a in jax.tree.leaves(state)):
        return model
    from jax.experimental import multihost_utils

    return nnx.merge(graphdef, multihost_utils.process_allgather(state, tiled=True))


def read_outcome(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """``result.json`` of a finished run (epochs run, best epoch, restored or not, stop reason); None if the run
    in ``run_dir`` has not finished."""
    path = Path(run_dir) / RESULT_FILE
    return io_lib.read_json(path) if path.is_file() else None


def _tag(column: str) -> str:
    """History column -> TensorBoard tag: ``val_accuracy`` -> ``accuracy/val``, ``loss`` -> ``loss/train``."""
    if column.startswith("val_"):
        return f"{column.removeprefix('val_')}/val"
    return f"{column}/train"


def _rebuild(description: dict[str, Any], source: str):
    """The model a run folder or weights file describes: a registered dlfund class and its own arguments only."""
    import inspect

    from flax import nnx

    from dlfund.models import MODEL_CLASSES

    name, config = description.get("class"), description.get("config")
    cls = MODEL_CLASSES.get(str(name))
    if cls is None or config is None:
        raise ValueError(
            f"{source} holds a {name!r}, which load_model cannot rebuild (it rebuilds dlfund's own models from "
            f"their recorded arguments: {', '.join(MODEL_CLASSES)}); build the model yourself and call "
            "dlfund.load_weights(path, model)"
        )
    if not isinstance(config, dict):
        raise ValueError(f"{source}: the recorded arguments of {name} must be a mapping, got {type(config).__name__}")
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "rngs"}
    unknown = sorted(set(config) - accepted)
    if unknown:
        raise ValueError(
            f"{source}: {name} has no argument(s) {', '.join(map(repr, unknown))}, so this record was not written by "
            f"dlfund for this model (or was edited); {name} takes {', '.join(sorted(accepted))}"
        )
    if "activation" in config and config["activation"] is None:
        raise ValueError(
            f"{source}: the model was built with a custom activation function, which is not recorded; build it "
            "yourself and call dlfund.load_weights(path, model)"
        )
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
    try:
        return cls(**config, rngs=nnx.Rngs(0))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{source}: cannot rebuild {name} from its recorded arguments: {error}") from error


def refuse_sweep_folder(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Raises a ValueError that says what a sweep's folder holds when ``record`` (a config.json) is a sweep's:
    read as one run's, it fails later with a message about something else (a missing model, a config key)."""
    if "sweep" in record:
        raise ValueError(
            f"{path} is the folder of a sweep, not of one run: its sweep.csv holds the members' table, and member "
            f"k's model is {Path(path) / 'members'}/<k>/weights.safetensors (dlfund.load_model reads it)"
        )


def load_model(path: str | os.PathLike):
    """Rebuilds a trained model, in eval mode, from a run folder, a weights file or one checkpoint.

    Args:
      path: a run folder written by ``fit(..., run_dir=...)``/``dlfund train`` (its final weights, or its newest
        usable checkpoint if the run never finished), a ``.safetensors``/``.npz`` weights file, or a checkpoint
        directory ``RUN/checkpoints/<epoch>``.
    Raises:
      FileNotFoundError: nothing loadable at ``path``.
      ValueError: a model dlfund cannot rebuild by itself, or weights that do not fit it (the message names the
        first mismatching parameter path and both shapes).
    """
    from dlfund.weights import SUFFIXES, load_weights, read_header

    path = Path(path)
    if path.is_file() and path.suffix in SUFFIXES:
        header = read_header(path)
        model = _rebuild({"class": header.get("model"), "config": header.get("config")}, str(path))
        load_weights(path, model)
    elif (path / CONFIG_FILE).is_file():
        record = io_lib.read_json(path / CONFIG_FILE)
        refuse_sweep_folder(path, record)
        description = record.get("model", {})
        if (path / WEIGHTS_FILE).is_file():
            return load_model(path / WEIGHTS_FILE)
        model = _rebuild(description, str(path))
        _load_checkpoint(model, path / CHECKPOINTS, None)
    elif path.parent.name == CHECKPOINTS and (path.parent.parent / CONFIG_FILE).is_file():
        description = io_lib.read_json(path.parent.parent / CONFIG_FILE).get("model", {})
        model = _rebuild(description, str(path))
        _load_checkpoint(model, path.parent, int(path.name))
    else:
        raise FileNotFoundError(
            f"nothing to load at {path}: expected a run folder (with {CONFIG_FILE}), a weights file "
            f"({' or '.join(SUFFIXES)}) or a checkpoint directory RUN/{CHECKPOINTS}/<epoch>"
        )
    model.eval()
    return model


def _load_checkpoint(model, directory: Path, step: int | None) -> None:
    from flax import nnx

    _, params, model_state = nnx.split(model, nnx.Param, ...)
    targets = {"model": {"params": params, "model_state": model_state}}
    with CheckpointStore(directory) as store:
        if step is None:
            found = store.restore_latest(targets, set_aside=False)  # reading a model changes nothing on disk
            if found is None:
                raise FileNotFoundError(f"{directory} holds no usable checkpoint")
            items = found[1]
        else:
            if step not in store.steps():
                raise CheckpointError(f"{directory} has no checkpoint {step}; it has {store.steps()}")
            items = store.restore(step, targets)[0]
    nnx.update(model, items["model"]["params"], items["model"]["model_state"])
