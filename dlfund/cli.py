"""The ``dlfund`` command.

    dlfund train [--config FILE] [--epochs N ...]   train a model, write a run folder, evaluate on the test split
    dlfund resume RUN_DIR [--epochs N]             continue an interrupted run (or extend a finished one to N)
    dlfund evaluate RUN_DIR [--split test] [--json]  evaluate a run's model on a split of its dataset
    dlfund predict RUN_DIR INPUT [--out FILE.csv]  classify raw inputs (.npy or an image folder) with a run
    dlfund sweep [--learning-rate A B ...] [--seeds 0 1 ...] [train's options]   train every combination at once
    dlfund experiment NAME [--quick] [--out DIR]   run an experiment that tests a claim of the field

Options come from typed dataclasses (``dlfund.config.TrainConfig``) through tyro: every field is a flag, with its
type checked and its help shown by ``--help``; a misspelt flag gets the closest matches. ``--config FILE`` (JSON or
YAML, same keys) sets defaults that flags on the command line override.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import io
import json
import math
import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import tyro

from dlfund.config import SweepConfig, TrainConfig
from dlfund.train.fit import TrainingInterrupted
from dlfund.train.run import CONFIG_FILE, METRICS_FILE, read_outcome, write_evaluation_figures

COMMANDS = {
    "train": "train a model on a dataset, write a run folder and evaluate on the test split",
    "resume": "continue the run in RUN_DIR from its newest usable checkpoint (--epochs N extends a finished run)",
    "evaluate": "evaluate the model of a run folder on one of its dataset's splits",
    "predict": "predict classes of raw inputs (a .npy file or a folder of images) with a run's model",
    "sweep": "train one model per combination of learning rates, seeds, weight decays, ... as one program",
    "experiment": "run an experiment that tests a claim of the field (see dlfund.experiments.EXPERIMENTS)",
    "env": "print the devices, processes and versions, and set-up problems found (TPU runtime, GPU memory, ...)",
}
#: The exit status of a run stopped by Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130


@dataclasses.dataclass
class ResumeArgs:
    """Continue an interrupted run; its options come from RUN_DIR/config.json."""

    run_dir: Annotated[str, tyro.conf.Positional]
    data_dir: str | None = None
    """where datasets are prepared; None: the run's own setting"""
    progress: bool = True
    """show a progress bar"""
    epochs: int | None = None
    """train until this many epochs in all: extends a finished run (None: the run's own number)"""
    coordinator_address: str | None = None
    """multi-process run: HOST:PORT of process 0 (with --num-processes and --process-id), as for dlfund train"""
    num_processes: int | None = None
    """multi-process run: how many processes take part"""
    process_id: int | None = None
    """multi-process run: this process's index"""


@dataclasses.dataclass
class EvaluateArgs:
    """Evaluate the model of a run folder."""

    run_dir: Annotated[str, tyro.conf.Positional]
    split: str = "test"
    """train, val or test"""
    data_dir: str | None = None
    """where datasets are prepared; None: the run's own setting"""
    json: bool = False
    """print the metrics as JSON (for machines) instead of the summary"""


@dataclasses.dataclass
class PredictArgs:
    """Predict with a run's model on raw inputs; the run's recorded normalization is applied for you."""

    run_dir: Annotated[str, tyro.conf.Positional]
    input: Annotated[str, tyro.conf.Positional]
    """a .npy file of raw inputs [N, *input_shape] (one example without the N axis works too), or, for a run
    trained on 8-bit images (image folders, MNIST, CIFAR), a folder of image files (searched recursively;
    converted to the run's channels and resized to its image size)"""
    out: str | None = None
    """write every prediction to this CSV file (input, class id, class name, probabilities)"""
    show: int = 20
    """how many predictions to print"""


@dataclasses.dataclass
class ExperimentArgs:
    """Run an experiment: it trains real models, prints a report and checks each claim against the numbers."""

    name: Annotated[str, tyro.conf.Positional]
    """the experiment: activations, architectures, batch_norm, features_vs_learning, learning_rate, metrics_vs_loss,
    optimizers, overfitting, perceptron_xor, transfer_learning (old names: relu_vs_sigmoid, dropout)"""
    quick: bool = False
    """a smoke run with tiny settings (the verdicts then do not test the claims)"""
    out: str | None = None
    """folder for results.json and report.md; None: runs/experiment-<name>-<time>"""
    data_dir: str | None = None
    """where datasets are prepared; None: $DLFUND_DATA_DIR or ~/tensorflow_datasets"""


def experiment(args: ExperimentArgs):
    """Runs an experiment, prints its report, writes it to a folder; exit status 1 if a claim failed."""
    from dlfund import experiments

    name = experiments.EXPERIMENTS.canonical(args.name)  # an unknown name fails before anything runs
    chosen = experiments.EXPERIMENTS.get(name)
    if name != args.name.strip().lower().replace("-", "_"):
        print(f"{args.name} is now called {name}", flush=True)
    if chosen.expected and not args.quick:  # some take minutes: say so before they start
        print(f"{name}: on this project's 2-core CPU, {chosen.expected}", flush=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else Path("runs") / f"experiment-{name}-{stamp}"
    report = experiments.run(name, quick=args.quick, data_dir=args.data_dir, out_dir=out)
    print(report.markdown(), flush=True)
    print(f"written to {out}", flush=True)
    return report


def default_run_dir(config: TrainConfig) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.model}-{config.dataset}-{stamp}"


def _load_data_and_model(config: TrainConfig, data_dir: str | None = None):
    from flax import nnx

    import dlfund

    ds = _load_dataset(config, data_dir)
    regression = ds.num_classes is None  # one real-valued output, trained with MSE
    options = config.model_options(regression=regression)
    model = dlfund.models.build(
        config.model, ds.input_shape, 1 if regression else ds.num_classes, rngs=nnx.Rngs(config.seed), **options
    )
    return ds, model


def _load_dataset(config: TrainConfig, data_dir: str | None = None):
    import dlfund

    return dlfund.data.load(
        config.dataset,
        data_dir=data_dir or config.data_dir,
        val_fraction=config.val_fraction,
        seed=config.seed,
        download=True if config.download else None,
    )


def _evaluation(model, split, config: TrainConfig, ds) -> tuple[dict[str, Any], Any]:
    """dlfund.evaluate, plus per-class precision/recall/F1/support for a classifier and, for a binary one, the
    area under the ROC curve and the average precision of its scores; returns the metrics and ``(scores,
    threshold)`` of a binary classifier (else None), for the figures. Every process of a multi-process run calls
    it (predicting is collective there)."""
    import numpy as np

    import dlfund
    from dlfund.train.run import binary_scores

    loss = config.loss_for(ds)
    metrics = dlfund.evaluate(model, split, loss=loss)
    binary = None
    if "confusion_matrix" in metrics:
        metrics["per_class"] = dlfund.metrics.per_class_from_confusion(metrics["confusion_matrix"], ds.class_names)
        x, y = split
        binary = binary_scores(model, x, loss) if len(metrics["confusion_matrix"]) == 2 else None
        if binary is not None and np.unique(y).size == 2:  # both classes: the curves are defined
            metrics["roc_auc"] = dlfund.metrics.roc_auc(y, binary[0])
            metrics["average_precision"] = dlfund.metrics.average_precision(y, binary[0])
    return metrics, binary


def _evaluate(model, split, config: TrainConfig, ds) -> dict[str, Any]:
    """The metrics of :func:`_evaluation`."""
    return _evaluation(model, split, config, ds)[0]


def _fit(config: TrainConfig, run_dir: Path, *, resume: bool, progress: bool, data_dir: str | None = None):
    """Trains (or resumes) the run described by ``config`` in ``run_dir``; writes metrics.json."""
    import dlfund

    if config.val_fraction == 0 and config.patience > 0:
        raise ValueError("--val-fraction 0 leaves no validation split for early stopping; add --patience 0")
    import jax

    main = jax.process_index() == 0  # a multi-process run: process 0 prints and writes
    if main:
        print(f"run folder: {run_dir}", flush=True)
    ds, model = _load_data_and_model(config, data_dir)
    if main:
        from dlfund.model_summary import summary

        print(summary(model, ds.input_shape), flush=True)
    options = config.fit_config(
        ds,
        progress=progress,
        run_dir=run_dir,
        resume=resume,
        run_info={"cli": {**config.to_dict(), "run_dir": str(run_dir)}, "dataset": _dataset_info(ds)},
    )
    result = dlfund.fit(model, ds, **options.as_kwargs())
    outcome = {
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "stop_reason": result.stop_reason,
        "train_seconds": round(sum(result.epoch_seconds), 3),
    }
    try:
        return _write_test_evaluation(result.model, config, ds, run_dir, outcome)
    except KeyboardInterrupt:
        # result.json is written (training is over), metrics.json not yet: resume writes it, and says so.
        raise KeyboardInterrupt(
            f"training finished ({len(result.history)} epochs); interrupted while evaluating it on the test split. "
            f"`dlfund resume {run_dir}` writes the evaluation ({METRICS_FILE} and the figures)"
        ) from None


def _write_test_evaluation(model, config: TrainConfig, ds, run_dir: Path, outcome: dict[str, Any]) -> dict[str, Any]:
    """Evaluates a trained run's model on the test split; process 0 writes ``metrics.json`` (the test metrics and
    ``outcome``: best_epoch, epochs_run, stop_reason, train_seconds) and the figures, and prints the summary."""
    import jax

    import dlfund
    from dlfund import io as io_lib

    test, binary = _evaluation(model, ds.test, config, ds)
    metrics = {"test": test, **outcome}
    if ds.num_classes is None:
        # A one-series forecasting task (e.g. sines): report the naive baseline next to the model.
        with contextlib.suppress(ValueError):
            metrics["test"]["persistence_mse"] = dlfund.data.persistence_mse(ds)
    if jax.process_index() == 0:
        io_lib.write_json(run_dir / METRICS_FILE, metrics)
        figures = []
        if "confusion_matrix" in test:
            figures = write_evaluation_figures(
                run_dir, test["confusion_matrix"], class_names=ds.class_names, y_true=ds.test[1], binary=binary
            )
        print(_summary(run_dir, metrics, figures), flush=True)
    return metrics


def _dataset_info(ds) -> dict[str, Any]:
    return {
        "name": ds.name,
        "num_classes": ds.num_classes,
        "input_shape": ds.input_shape,
        "sizes": {k: len(v[0]) for k, v in ds.splits().items()},
    }


def train(config: TrainConfig) -> dict[str, Any]:
    """The main job: trains ``config``'s model on its dataset, writes the run folder, returns the test metrics.

    With ``--coordinator-address``, ``--num-processes`` and ``--process-id`` the process first joins a
    multi-process run (:func:`dlfund.distributed.initialize`); every process then trains the same run, split over
    all their devices, and process 0 writes the run folder."""
    if (config.num_processes or 1) > 1 and not config.run_dir:
        raise ValueError(
            "a multi-process run needs --run-dir (the same folder for every process, on a file system they all "
            "see): the default folder name holds the start time, which differs between processes"
        )
    _join(config.coordinator_address, config.num_processes, config.process_id)
    run_dir = Path(config.run_dir) if config.run_dir else default_run_dir(config)
    return _fit(config, run_dir, resume=False, progress=config.progress)


def _join(coordinator_address, num_processes, process_id, *, sweep: bool = False) -> None:
    """Joins a multi-process run when any of the three flags is given (before anything else uses JAX)."""
    if all(value is None for value in (coordinator_address, num_processes, process_id)):
        return
    if sweep:
        raise ValueError(
            "a sweep runs in one process: --coordinator-address, --num-processes and --process-id are "
            "for runs of dlfund train"
        )
    from dlfund import distributed

    distributed.initialize(coordinator_address, num_processes, process_id)


def sweep(config: SweepConfig, *, resume: bool = False, data_dir: str | None = None) -> dict[str, Any]:
    """Trains every member of the sweep as one program in a run folder (checkpoints, the table, the curves, each
    member's weights and history), then evaluates each member and their ensemble on the test split."""
    import dlfund
    from dlfund import io as io_lib

    if any(v is not None for v in (config.coordinator_address, config.num_processes, config.process_id)):
        raise ValueError(
            "dlfund sweep runs in one process: --coordinator-address, --num-processes and --process-id "
            "are for dlfund train"
        )
    members = config.members()
    shared = config.shared()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(config.run_dir) if config.run_dir else Path("runs") / f"sweep-{config.model}-{config.dataset}-{stamp}"
    if config.val_fraction == 0 and config.patience > 0:
        raise ValueError("--val-fraction 0 leaves no validation split for early stopping; add --patience 0")
    size = len(next(iter(members.values())))
    print(f"sweep folder: {out} ({size} members: {', '.join(members)})", flush=True)
    ds = _load_dataset(shared, data_dir)
    regression = ds.num_classes is None
    model_options = shared.model_options(regression=regression)
    outputs = 1 if regression else ds.num_classes

    def model_fn(rngs):
        return dlfund.models.build(config.model, ds.input_shape, outputs, rngs=rngs, **model_options)

    run_info = {"cli": {**config.to_dict(), "run_dir": str(out)}, "dataset": _dataset_info(ds)}
    options = shared.fit_config(ds, run_dir=out, resume=resume, run_info=run_info).as_kwargs()
    if "seed" not in members:
        options["seed"] = config.seeds[0]  # one --seeds value is every member's (--seed splits the data)
    for key in members:  # the members' own values, not shared options
        options.pop(key, None)
    options.pop("callbacks")
    result = dlfund.sweep(model_fn, ds, members, **options)
    tests = [_evaluate(result.model(k), ds.test, shared, ds) for k in range(len(result))]
    metrics: dict[str, Any] = {"members": result.members, "test": tests, "best_member": result.best()}
    if not regression and result.state.objective.loss.link is not None:
        metrics["ensemble_test"] = dlfund.evaluate(result, ds.test)
    io_lib.write_json(out / METRICS_FILE, metrics)
    print(repr(result).split("\n  fields:")[0], flush=True)
    best = metrics["best_member"]
    print(f"best member {best} {result.members[best]}: " + _scores_line("test", tests[best]), flush=True)
    if "ensemble_test" in metrics:
        print(_scores_line(f"ensemble of {size}, test", metrics["ensemble_test"]), flush=True)
    print(f"written to {out}: sweep.csv, curves.png, metrics.json, members/<k>/weights.safetensors", flush=True)
    return metrics


def _record(run_dir: str | Path) -> dict[str, Any]:
    """The run folder's config.json."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} is not a dlfund run folder (no {CONFIG_FILE})")
    from dlfund import io as io_lib

    return io_lib.read_json(path)


def _run_config(run_dir: str | Path, *, evaluating: bool = False) -> TrainConfig:
    from dlfund.train.run import refuse_sweep_folder

    record = _record(run_dir)
    refuse_sweep_folder(run_dir, record)
    recorded = record.get("cli")
    if recorded is None:
        advice = (
            ", so the command line does not know the data it was trained on; evaluate it from Python: "
            "dlfund.load_run(DIR).evaluate(x_raw, y) (`dlfund predict DIR INPUT` works on it)"
            if evaluating
            else "; resume it with dlfund.fit(..., run_dir=..., resume=True) and the same arguments"
        )
        raise ValueError(f"{run_dir} was written by dlfund.fit from Python, not by 'dlfund train'{advice}")
    return TrainConfig.from_dict(recorded)


def _extension_note(fit_config: dict[str, Any], new_epochs: int, at: int | None = None) -> str:
    """What changing a run's length to ``new_epochs`` does to its learning-rate schedule, in numbers; ``at``: the
    epoch it continues after (its newest checkpoint; default: the recorded length, a finished run)."""
    from dlfund import optimizers

    old_epochs, steps = fit_config["epochs"], fit_config["steps_per_epoch"]
    at = old_epochs if at is None else at
    recorded = fit_config["optimizer"]
    name = recorded.get("schedule", "constant")
    change = "extending" if new_epochs > old_epochs else "shortening"
    if name == "constant":
        return f"{change} from {old_epochs} to {new_epochs} epochs at the same learning rate"
    options = tuple(sorted((k.removeprefix("schedule."), v) for k, v in recorded.items() if k.startswith("schedule.")))

    def rate(total_epochs: int, step: int) -> float:
        opt = optimizers.Optimizer(
            recorded["name"], recorded["learning_rate"], name, total_epochs * steps, schedule_options=options
        )
        return float(opt.learning_rate_at(step))

    if at < old_epochs:  # an unfinished run: the next step's rate under the recorded length and under the new
        planned, resized = rate(old_epochs, at * steps), rate(new_epochs, at * steps)
        return (
            f"{change} from {old_epochs} to {new_epochs} epochs. The {name} schedule was sized for {old_epochs} "
            f"epochs; it is re-sized for {new_epochs}: the steps already taken keep their rates, and epoch {at + 1} "
            f"starts at {resized:.3g} instead of {planned:.3g}, then follows the "
            f"{'longer' if new_epochs > old_epochs else 'shorter'} schedule"
        )
    before, after = rate(old_epochs, old_epochs * steps - 1), rate(new_epochs, old_epochs * steps)
    return (
        f"extending from {old_epochs} to {new_epochs} epochs. The {name} schedule was sized for {old_epochs} epochs; "
        f"it is re-sized for {new_epochs}: the steps already taken keep their rates, and the learning rate goes "
        f"from {before:.3g} (the last step of epoch {old_epochs}) to {after:.3g} (the first of epoch "
        f"{old_epochs + 1}), like a warm restart, then follows the longer schedule"
    )


def resume(args: ResumeArgs) -> dict[str, Any] | None:
    """Continues the run in ``args.run_dir`` with its recorded options; ``--epochs N`` extends a finished run.

    A finished run without ``--epochs`` (or with no more epochs than it has) is reported as finished, and nothing
    is trained or rewritten.
    """
    run_dir = Path(args.run_dir)
    recorded = _record(run_dir)
    _join(args.coordinator_address, args.num_processes, args.process_id, sweep="sweep" in recorded)
    if "sweep" in recorded and "cli" in recorded:  # a folder of `dlfund sweep`
        if args.epochs is not None:
            raise ValueError("--epochs does not apply to a sweep folder: resume it as it was configured")
        if (run_dir / "result.json").exists():
            print(f"{run_dir} is a finished sweep; nothing to resume", flush=True)
            return None
        return sweep(SweepConfig.from_dict(recorded["cli"]), resume=True, data_dir=args.data_dir)
    config = _run_config(run_dir)
    outcome = read_outcome(run_dir)
    recorded_fit = _record(run_dir).get("fit", {})
    if args.epochs is not None and args.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
    if outcome is not None:
        done = outcome["epochs_run"]
        stopped = f", stopped: {outcome['stop_reason']}" if outcome.get("stop_reason") else ""
        if args.epochs is None or args.epochs <= done:
            if not (run_dir / METRICS_FILE).exists():
                return _complete_evaluation(run_dir, config, outcome, args.data_dir)
            longer = (
                "It stopped before its last epoch, so it is not extended: start a new run (dlfund train ...) "
                "with the settings you want"
                if outcome.get("stop_reason")
                else f"To train it longer: dlfund resume {run_dir} --epochs N (N > {done})"
            )
            print(f"{run_dir} is finished ({done} of {outcome['epochs']} epochs{stopped}); nothing to resume. {longer}")
            return None
        if outcome.get("stop_reason"):
            raise ValueError(
                f"{run_dir} stopped ({outcome['stop_reason']}), so it cannot be extended: it would stop again at "
                "once. Start a new run (dlfund train ...) with the settings you want"
            )
    if args.epochs is not None and args.epochs != config.epochs:
        from dlfund.train.interrupts import newest_checkpoint

        # Where it continues: a finished run after its last epoch, an unfinished one after its newest checkpoint.
        at = None if outcome is not None else newest_checkpoint(run_dir) or 0
        if "optimizer" in recorded_fit and (at is None or at < args.epochs):
            print(_extension_note(recorded_fit, args.epochs, at), flush=True)
        config = dataclasses.replace(config, epochs=args.epochs)
    return _fit(config, run_dir, resume=True, progress=args.progress, data_dir=args.data_dir)


def _complete_evaluation(run_dir: Path, config: TrainConfig, outcome: dict[str, Any], data_dir: str | None):
    """A run that finished training but was stopped (Ctrl-C, kill) before ``dlfund train`` wrote its test
    evaluation: evaluates its final model and writes ``metrics.json`` and the figures."""
    import jax

    import dlfund

    if jax.process_count() > 1:
        raise ValueError(
            f"{run_dir} finished training but has no {METRICS_FILE}: write it with `dlfund resume {run_dir}` in "
            "one process (the evaluation of a finished run needs no other processes)"
        )
    print(
        f"{run_dir} finished training ({outcome['epochs_run']} epochs) but its test evaluation was not written "
        "(stopped while evaluating); writing it now",
        flush=True,
    )
    ds = _load_dataset(config, data_dir)
    keys = ("best_epoch", "epochs_run", "stop_reason", "train_seconds")
    return _write_test_evaluation(dlfund.load_model(run_dir), config, ds, run_dir, {k: outcome.get(k) for k in keys})


def evaluate(args: EvaluateArgs) -> dict[str, Any]:
    """Evaluates the run's model (final weights, or the newest checkpoint) on a split of its dataset."""
    import dlfund

    config = _run_config(args.run_dir, evaluating=True)
    ds = _load_dataset(config, args.data_dir)
    splits = ds.splits()
    if args.split not in splits:
        raise ValueError(f"unknown split {args.split!r}; the dataset has {', '.join(splits)}")
    x, y = splits[args.split]
    _note_unfinished(args.run_dir)
    metrics = _evaluate(dlfund.load_model(args.run_dir), (x, y), config, ds)
    if ds.num_classes is None:  # a forecasting task: the naive baseline beside the model, as dlfund train reports
        with contextlib.suppress(ValueError):
            metrics["persistence_mse"] = dlfund.data.persistence_mse(ds, args.split)
    if args.json:
        print(json.dumps(metrics, indent=2))
        return metrics
    print(f"{args.run_dir}: {args.split} split of {ds.name} ({len(y)} examples)")
    print(_scores_line(args.split, metrics))
    if "confusion_matrix" in metrics:
        print()
        print(_confusion_text(metrics["confusion_matrix"], ds.class_names))
        print()
        print(dlfund.metrics.ClassificationReport(metrics["per_class"]))
    return metrics


def _note_unfinished(run_dir: str | Path) -> None:
    """Says on stderr (stdout may be JSON or a table) that an unfinished run's model is its newest checkpoint."""
    from dlfund.train.interrupts import newest_checkpoint
    from dlfund.train.run import WEIGHTS_FILE

    if read_outcome(run_dir) is None and not (Path(run_dir) / WEIGHTS_FILE).exists():
        epoch = newest_checkpoint(run_dir)
        if epoch is not None:
            print(
                f"{run_dir} is unfinished: using its newest checkpoint, of epoch {epoch} (`dlfund resume {run_dir}` "
                "finishes the run)",
                file=sys.stderr,
                flush=True,
            )


def _scores_line(label: str, metrics: dict[str, Any]) -> str:
    return f"{label}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float))


def _confusion_text(matrix: list[list[int]], class_names) -> str:
    """The confusion matrix as a table: rows are true classes, columns predicted ones."""
    names = [str(n) for n in class_names] or [str(i) for i in range(len(matrix))]
    width = max(5, *(len(n) for n in names), *(len(str(v)) for row in matrix for v in row))
    lines = ["confusion matrix (rows: true class, columns: predicted)"]
    lines.append(" " * width + "  " + " ".join(f"{n[:width]:>{width}}" for n in names))
    for name, row in zip(names, matrix):
        lines.append(f"{name[:width]:>{width}}  " + " ".join(f"{v:>{width}}" for v in row))
    return "\n".join(lines)


def _read_inputs(path: Path, run) -> tuple[Any, list[str]]:
    """Raw inputs [N, *input_shape] from a .npy file or an image folder, and a label for each (index or file)."""
    import numpy as np

    from dlfund.data.folders import image_files, read_images
    from dlfund.train.saved_run import real_numbers

    if path.is_dir():
        # Image files hold 8-bit pixels. They are the run's raw inputs only when its dataset stored 8-bit pixels
        # (scaled by 1/255: image folders, MNIST, CIFAR); any other unit (digits' ink counts 0..16, arrays given
        # as they were) would be a guess.
        scale = None if run.normalization is None else run.normalization.scale
        if scale is None or not math.isclose(scale, 1 / 255):
            units = "arrays used as given" if scale is None else f"values scaled by {scale:g}, not 1/255"
            raise ValueError(
                f"{run.path} was not trained on 8-bit images ({units}), so image files cannot be mapped to its "
                "inputs; pass a .npy file of raw inputs in the units it was trained on"
            )
        files = image_files(path)
        return read_images(files, tuple(run.input_shape)), [os.fspath(f.relative_to(path)) for f in files]
    if path.suffix != ".npy":
        raise ValueError(f"INPUT must be a .npy file or a folder of images, got {path}")
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        x = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        # numpy's message for any file that is not an array (a text file, say) speaks of pickled data
        detail = "" if "pickle" in str(error) else f": {error}"
        raise ValueError(f"{path} is not a NumPy array file (write one with numpy.save){detail}") from None
    if not real_numbers(x):  # Run.inputs refuses these too (TypeError); here the message names the file
        raise ValueError(f"{path} holds {x.dtype} values; the model's inputs are real numbers")
    if tuple(x.shape) == tuple(run.input_shape):
        x = x[None]  # one example
    return x, [str(i) for i in range(len(x))]


def predict(args: PredictArgs) -> list[dict[str, Any]]:
    """Predicts the inputs with the run's model; prints the first ``show`` rows and writes all to ``out``."""
    import csv

    import numpy as np

    import dlfund
    from dlfund import io as io_lib
    from dlfund.train.saved_run import top_probabilities

    if args.show < 0:
        raise ValueError(f"--show must be >= 0 (rows to print), got {args.show}")
    if args.out and Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a folder; give a file name, e.g. {Path(args.out) / 'predictions.csv'}")
    run = dlfund.load_run(args.run_dir)
    _note_unfinished(args.run_dir)
    x, labels = _read_inputs(Path(args.input), run)
    rows: list[dict[str, Any]] = []
    if run.num_classes is None:
        rows = [{"input": label, "prediction": float(np.ravel(v)[0])} for label, v in zip(labels, run.predict(x))]
    elif run.loss.link is None:  # a margin loss (perceptron, hinge): classes, no probabilities
        rows = [
            {"input": label, "class": int(c), "class_name": run.class_names[c]}
            for label, c in zip(labels, run.predict_classes(x))
        ]
    else:
        probabilities = run.predict(x)
        classes, confidence = top_probabilities(probabilities)
        for label, c, p, probs in zip(labels, classes, confidence, probabilities):
            row = {"input": label, "class": int(c), "class_name": run.class_names[c], "probability": float(p)}
            row.update({f"p_{name}": float(q) for name, q in zip(run.class_names, probs)})
            rows.append(row)
    shown = rows[: max(args.show, 0)]
    for row in shown:
        if "probability" in row:
            print(f"{row['input']}: {row['class_name']} (class {row['class']}, p={row['probability']:.3f})")
        elif "class" in row:
            print(f"{row['input']}: {row['class_name']} (class {row['class']})")
        else:
            print(f"{row['input']}: {row['prediction']:.6g}")
    if len(rows) > len(shown):
        print(f"... {len(rows) - len(shown)} more" + ("" if args.out else " (--out FILE.csv writes them all)"))
    if args.out:

        def write(f):
            text = io.StringIO()
            writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
            f.write(text.getvalue().encode())

        io_lib.write_with(args.out, write)
        print(f"{len(rows)} predictions written to {args.out}")
    return rows


def _summary(run_dir: Path, metrics: dict[str, Any], figures: list[str]) -> str:
    files = ", ".join(["metrics.json", "loss_curve.png", *figures, "weights.safetensors", "checkpoints/"])
    lines = [
        f"epochs: {metrics['epochs_run']} (best {metrics['best_epoch']})"
        + (f"; {metrics['stop_reason']}" if metrics["stop_reason"] else ""),
        _scores_line("test", metrics["test"]),
        f"written to {run_dir}: {files}",
    ]
    return "\n".join(lines)


def _split_config_flag(argv: list[str]) -> tuple[str | None, list[str]]:
    """Takes ``--config FILE`` (or ``--config=FILE``) out of argv."""
    rest, path, i = [], None, 0
    while i < len(argv):
        if argv[i] == "--config" and i + 1 < len(argv):
            path, i = argv[i + 1], i + 2
            continue
        if argv[i].startswith("--config="):
            path = argv[i].split("=", 1)[1]
        else:
            rest.append(argv[i])
        i += 1
    return path, rest


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: dlfund COMMAND [OPTIONS]   (dlfund COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        print(f"dlfund: unknown command {command!r}{hint}\n\n{_usage()}", file=sys.stderr)
        return 2
    prog = f"dlfund {command}"
    with _warnings_as(prog):
        return _run(command, rest, prog)


@contextlib.contextmanager
def _warnings_as(prog: str):
    """Warnings printed as ``dlfund train: warning: ...``: Python's own form names the line that warned, which
    for a command is ``<frozen runpy>`` or a library file, not something the user wrote."""
    import warnings

    previous = warnings.formatwarning
    warnings.formatwarning = lambda message, category, *args, **kwargs: f"{prog}: warning: {message}\n"
    try:
        yield
    finally:
        warnings.formatwarning = previous


def _run(command: str, rest: list[str], prog: str) -> int:
    try:
        if command == "train":
            config_file, rest = _split_config_flag(rest)
            defaults = TrainConfig.from_file(config_file) if config_file else TrainConfig()
            description = f"{COMMANDS[command]}. --config FILE (JSON or YAML) sets defaults that flags override."
            train(tyro.cli(TrainConfig, args=rest, prog=prog, default=defaults, description=description))
        elif command == "sweep":
            config_file, rest = _split_config_flag(rest)
            defaults = SweepConfig.from_file(config_file) if config_file else SweepConfig()
            description = f"{COMMANDS[command]}. --config FILE (JSON or YAML) sets defaults that flags override."
            sweep(tyro.cli(SweepConfig, args=rest, prog=prog, default=defaults, description=description))
        elif command == "resume":
            resume(tyro.cli(ResumeArgs, args=rest, prog=prog))
        elif command == "evaluate":
            evaluate(tyro.cli(EvaluateArgs, args=rest, prog=prog))
        elif command == "predict":
            predict(tyro.cli(PredictArgs, args=rest, prog=prog))
        elif command == "experiment":
            report = experiment(tyro.cli(ExperimentArgs, args=rest, prog=prog))
            return 0 if report.passed or report.quick else 1
        elif command == "env":
            if rest:
                print(f"{prog}: takes no options, got {' '.join(rest)}", file=sys.stderr)
                return 2
            from dlfund.env import env_report

            env_report()
    except TrainingInterrupted as interrupt:
        print(f"\n{prog}: {interrupt.message(f'`dlfund resume {interrupt.run_dir}`')}", file=sys.stderr)
        return _failed(EXIT_INTERRUPTED)
    except KeyboardInterrupt as interrupt:
        print(f"\n{prog}: {str(interrupt) or 'interrupted'}", file=sys.stderr)
        return _failed(EXIT_INTERRUPTED)
    except (ValueError, FileNotFoundError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return _failed(2)
    except OSError as error:  # a folder where a file goes, a read-only or full disk: the message says which
        print(f"{prog}: error: {error}", file=sys.stderr)
        return _failed(1)
    except BaseException:
        _failed(1, traceback=True)
        raise
    return 0


def exit_with(code: int) -> NoReturn:
    """Ends the ``dlfund`` process with ``code`` (the entry points' ``sys.exit``).

    After a Ctrl-C, XLA may still be compiling or running the interrupted call on its own threads; a normal
    interpreter shutdown tears JAX down under them and the process crashes (a segfault, exit status 139, after the
    right message: 3 times in 3 for a Ctrl-C in the first epoch here). The run folder is closed before the
    interrupt is reported, so an interrupted process leaves without that shutdown; others exit normally.
    """
    if code == EXIT_INTERRUPTED and "jax" in sys.modules:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _failed(code: int, *, traceback: bool = False) -> int:
    """``code``; in a multi-process run the process leaves at once instead: JAX's normal exit waits at a barrier
    for the other processes, which wait for this one in a collective, so a failed process would hang them all.
    Leaving lets the others' coordination client see it gone and stop."""
    jax = sys.modules.get("jax")
    if jax is not None and jax.distributed.is_initialized():
        if traceback:
            import traceback as tb

            tb.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
