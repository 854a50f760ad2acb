"""The ``dlfund`` command.

    dlfund train [--config FILE] [--epochs N ...]   train a model, write a run folder, evaluate on the test split
    dlfund resume RUN_DIR                          continue an interrupted run to its configured number of epochs
    dlfund evaluate RUN_DIR [--split test]         evaluate a run's model on a split
    dlfund experiment NAME [--quick] [--out DIR]   run an experiment that tests a claim of the field

Options come from typed dataclasses (``dlfund.config.TrainConfig``) through tyro: every field is a flag, with its
type checked and its help shown by ``--help``; a misspelt flag gets the closest matches. ``--config FILE`` (JSON or
YAML, same keys) sets defaults that flags on the command line override.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import tyro

from dlfund.config import TrainConfig

COMMANDS = {
    "train": "train a model on a dataset, write a run folder and evaluate on the test split",
    "resume": "continue the run in RUN_DIR from its newest usable checkpoint to its configured epochs",
    "evaluate": "evaluate the model of a run folder on one of its dataset's splits",
    "experiment": "run an experiment that tests a claim of the field (see dlfund.experiments.EXPERIMENTS)",
}
METRICS_FILE = "metrics.json"


@dataclasses.dataclass
class ResumeArgs:
    """Continue an interrupted run; its options come from RUN_DIR/config.json."""

    run_dir: Annotated[str, tyro.conf.Positional]
    data_dir: str | None = None
    """where datasets are prepared; None: the run's own setting"""
    progress: bool = True
    """show a progress bar"""


@dataclasses.dataclass
class EvaluateArgs:
    """Evaluate the model of a run folder."""

    run_dir: Annotated[str, tyro.conf.Positional]
    split: str = "test"
    """train, val or test"""
    data_dir: str | None = None
    """where datasets are prepared; None: the run's own setting"""


@dataclasses.dataclass
class ExperimentArgs:
    """Run an experiment: it trains real models, prints a report and checks each claim against the numbers."""

    name: Annotated[str, tyro.conf.Positional]
    """the experiment: architectures, perceptron_xor, relu_vs_sigmoid, dropout"""
    quick: bool = False
    """a smoke run with tiny settings (the verdicts then do not test the claims)"""
    out: str | None = None
    """folder for results.json and report.md; None: runs/experiment-<name>-<time>"""
    data_dir: str | None = None
    """where datasets are prepared; None: $DLFUND_DATA_DIR or ~/tensorflow_datasets"""


def experiment(args: ExperimentArgs):
    """Runs an experiment, prints its report, writes it to a folder; exit status 1 if a claim failed."""
    from dlfund import experiments

    experiments.EXPERIMENTS.get(args.name)  # an unknown name fails before anything runs
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else Path("runs") / f"experiment-{args.name}-{stamp}"
    report = experiments.run(args.name, quick=args.quick, data_dir=args.data_dir, out_dir=out)
    print(report.markdown(), flush=True)
    print(f"written to {out}", flush=True)
    return report


def default_run_dir(config: TrainConfig) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.model}-{config.dataset}-{stamp}"


def _load_data_and_model(config: TrainConfig, data_dir: str | None = None):
    from flax import nnx

    import dlfund

    ds = dlfund.data.load(
        config.dataset, data_dir=data_dir or config.data_dir, val_fraction=config.val_fraction, seed=config.seed
    )
    regression = ds.num_classes is None  # one real-valued output, trained with MSE
    options = config.model_options(regression=regression)
    model = dlfund.models.build(
        config.model, ds.input_shape, 1 if regression else ds.num_classes, rngs=nnx.Rngs(config.seed), **options
    )
    return ds, model


def _loss(config: TrainConfig, ds) -> str | None:
    return config.loss or ("mse" if ds.num_classes is None else None)


def _fit(config: TrainConfig, run_dir: Path, *, resume: bool, progress: bool, data_dir: str | None = None):
    """Trains (or resumes) the run described by ``config`` in ``run_dir``; writes metrics.json."""
    import dlfund
    from dlfund import io as io_lib

    if config.val_fraction == 0 and config.patience > 0:
        raise ValueError("--val-fraction 0 leaves no validation split for early stopping; add --patience 0")
    ds, model = _load_data_and_model(config, data_dir)
    result = dlfund.fit(
        model,
        ds,
        optimizer=config.optimizer,
        learning_rate=config.learning_rate,
        epochs=config.epochs,
        batch_size=config.batch_size,
        seed=config.seed,
        weight_decay=config.weight_decay,
        early_stopping=dlfund.EarlyStopping(patience=config.patience) if config.patience > 0 else None,
        loss=_loss(config, ds),
        label_smoothing=config.label_smoothing or None,
        regularizers=(f"l2:{config.l2}",) if config.l2 else (),
        augment=config.augment,
        schedule=config.schedule,
        clip_norm=config.clip_norm,
        execution=config.execution,
        progress=progress,
        run_dir=run_dir,
        resume=resume,
        checkpoint_every=config.checkpoint_every,
        keep_checkpoints=config.keep_checkpoints,
        run_info={
            "cli": {**config.to_dict(), "run_dir": str(run_dir)},
            "dataset": {
                "name": ds.name,
                "num_classes": ds.num_classes,
                "input_shape": ds.input_shape,
                "sizes": {k: len(v[0]) for k, v in ds.splits().items()},
            },
        },
    )
    test = dlfund.evaluate(result.model, ds.test, loss=_loss(config, ds))
    metrics = {
        "test": test,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "stop_reason": result.stop_reason,
        "train_seconds": round(sum(result.epoch_seconds), 3),
    }
    if resume and not result.epoch_seconds and (run_dir / METRICS_FILE).exists():
        print(_summary(run_dir, test, result), flush=True)  # the run had already finished: keep its record
        return json.loads((run_dir / METRICS_FILE).read_text())
    if ds.num_classes is None:
        # A one-series forecasting task (e.g. sines): report the naive baseline next to the model.
        with contextlib.suppress(ValueError):
            metrics["test"]["persistence_mse"] = dlfund.data.persistence_mse(ds)
    io_lib.write_json(run_dir / METRICS_FILE, metrics)
    print(_summary(run_dir, test, result), flush=True)
    return metrics


def train(config: TrainConfig) -> dict[str, Any]:
    """The main job: trains ``config``'s model on its dataset, writes the run folder, returns the test metrics."""
    run_dir = Path(config.run_dir) if config.run_dir else default_run_dir(config)
    return _fit(config, run_dir, resume=False, progress=config.progress)


def _run_config(run_dir: str | Path) -> TrainConfig:
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} is not a dlfund run folder (no config.json)")
    recorded = json.loads(path.read_text()).get("cli")
    if recorded is None:
        raise ValueError(
            f"{run_dir} was written by dlfund.fit from Python, not by 'dlfund train'; resume it with "
            "dlfund.fit(..., run_dir=..., resume=True) and the same arguments"
        )
    return TrainConfig.from_dict(recorded)


def resume(args: ResumeArgs) -> dict[str, Any]:
    """Continues the run in ``args.run_dir`` with its recorded options."""
    config = _run_config(args.run_dir)
    return _fit(config, Path(args.run_dir), resume=True, progress=args.progress, data_dir=args.data_dir)


def evaluate(args: EvaluateArgs) -> dict[str, Any]:
    """Evaluates the run's model (final weights, or the newest checkpoint) on a split of its dataset."""
    import dlfund

    config = _run_config(args.run_dir)
    ds = dlfund.data.load(
        config.dataset,
        data_dir=args.data_dir or config.data_dir,
        val_fraction=config.val_fraction,
        seed=config.seed,
    )
    splits = ds.splits()
    if args.split not in splits:
        raise ValueError(f"unknown split {args.split!r}; the dataset has {', '.join(splits)}")
    metrics = dlfund.evaluate(dlfund.load_model(args.run_dir), splits[args.split], loss=_loss(config, ds))
    print(json.dumps({k: v for k, v in metrics.items() if k != "confusion_matrix"}, indent=2))
    return metrics


def _summary(run_dir: Path, test: dict[str, Any], result) -> str:
    lines = [
        f"run folder: {run_dir}",
        f"epochs: {len(result.history)} (best {result.best_epoch})"
        + (f"; {result.stop_reason}" if result.stop_reason else ""),
        "test: " + ", ".join(f"{k}={v:.4f}" for k, v in test.items() if isinstance(v, float)),
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
        print(f"dlfund: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    prog = f"dlfund {command}"
    try:
        if command == "train":
            config_file, rest = _split_config_flag(rest)
            defaults = TrainConfig.from_file(config_file) if config_file else TrainConfig()
            description = f"{COMMANDS[command]}. --config FILE (JSON or YAML) sets defaults that flags override."
            train(tyro.cli(TrainConfig, args=rest, prog=prog, default=defaults, description=description))
        elif command == "resume":
            resume(tyro.cli(ResumeArgs, args=rest, prog=prog))
        elif command == "evaluate":
            evaluate(tyro.cli(EvaluateArgs, args=rest, prog=prog))
        elif command == "experiment":
            report = experiment(tyro.cli(ExperimentArgs, args=rest, prog=prog))
            return 0 if report.passed or report.quick else 1
    except (ValueError, FileNotFoundError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    return 0
