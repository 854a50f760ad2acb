"""The ``dlfund`` command: ``dlfund train [options]`` and ``dlfund evaluate RUN_DIR``."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import sys
import types
import typing
from pathlib import Path
from typing import Any

from dlfund.config import TrainConfig

WEIGHTS_FILE = "weights.npz"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        kind = hints[field.name]
        optional = isinstance(kind, types.UnionType) and type(None) in kind.__args__
        if optional:
            kind = next(a for a in kind.__args__ if a is not type(None))
        help_text = f"{field.metadata['help']} (default: {field.default})"
        if kind is bool:
            parser.add_argument(
                _flag(field.name),
                action=argparse.BooleanOptionalAction,
                default=field.default,
                help=help_text,
            )
        elif typing.get_origin(kind) is tuple:
            parser.add_argument(_flag(field.name), type=int, nargs="+", default=field.default, help=help_text)
        else:
            parser.add_argument(_flag(field.name), type=kind, default=field.default, help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dlfund", description="Train and evaluate deep-learning fundamentals with JAX (dlfund)."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = commands.add_parser(
        "train",
        help="train a model on a dataset and write a run folder",
        description="Train a model and write config.json, history.csv, metrics.json, loss_curve.png and the "
        "weights into a run folder.",
    )
    _add_config_arguments(train)
    evaluate = commands.add_parser("evaluate", help="evaluate a run folder's weights on a split")
    evaluate.add_argument("run_dir", help="a folder written by 'dlfund train'")
    evaluate.add_argument("--split", default="test", choices=("train", "val", "test"))
    evaluate.add_argument("--data-dir", default=None, help="where datasets are prepared")
    return parser


def default_run_dir(config: TrainConfig) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.model}-{config.dataset}-{stamp}"


def _environment() -> dict[str, Any]:
    import flax
    import jax
    import optax

    import dlfund

    return {
        "dlfund": dlfund.__version__,
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "python": platform.python_version(),
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
    }


def train(config: TrainConfig) -> dict[str, Any]:
    """Runs the main job for ``config``; returns the test metrics. Writes the run folder."""
    from flax import nnx

    import dlfund
    from dlfund import io as io_lib

    ds = dlfund.data.load(config.dataset, data_dir=config.data_dir, val_fraction=config.val_fraction, seed=config.seed)
    model = dlfund.models.build(
        config.model, ds.input_shape, ds.num_classes, rngs=nnx.Rngs(config.seed), **config.model_options()
    )
    run_dir = Path(config.run_dir) if config.run_dir else default_run_dir(config)
    run_dir.mkdir(parents=True, exist_ok=True)
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
        loss=config.loss,
        label_smoothing=config.label_smoothing or None,
        regularizers=(f"l2:{config.l2}",) if config.l2 else (),
        schedule=config.schedule,
        clip_norm=config.clip_norm,
        execution=config.execution,
        progress=config.progress,
    )
    test = dlfund.evaluate(result.model, ds.test)
    io_lib.write_json(
        run_dir / "config.json",
        {
            "config": {**config.to_dict(), "run_dir": str(run_dir)},
            "dataset": {
                "name": ds.name,
                "num_classes": ds.num_classes,
                "input_shape": ds.input_shape,
                "sizes": {k: len(v[0]) for k, v in ds.splits().items()},
            },
            "model": {"class": type(model).__name__, **dict(getattr(model, "config_items", ()))},
            "fit": result.config,
            "environment": _environment(),
        },
    )
    result.history.to_csv(run_dir / "history.csv")
    result.history.save_plots(run_dir)
    dlfund.save_weights(run_dir / WEIGHTS_FILE, result.model)
    metrics = {
        "test": test,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "stop_reason": result.stop_reason,
        "train_seconds": round(sum(result.epoch_seconds), 3),
    }
    io_lib.write_json(run_dir / "metrics.json", metrics)
    print(_summary(run_dir, test, result), flush=True)
    return metrics


def _summary(run_dir: Path, test: dict[str, Any], result) -> str:
    lines = [
        f"run folder: {run_dir}",
        f"epochs: {len(result.history)} (best {result.best_epoch})"
        + (f"; {result.stop_reason}" if result.stop_reason else ""),
        "test: " + ", ".join(f"{k}={v:.4f}" for k, v in test.items() if isinstance(v, float)),
    ]
    return "\n".join(lines)


def load_run(run_dir: str | os.PathLike, *, data_dir: str | None = None):
    """Rebuilds a trained run: ``(model, dataset, config)`` from its config.json and weights."""
    from flax import nnx

    import dlfund

    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"{run_dir} is not a dlfund run folder (no config.json)")
    config = TrainConfig.from_dict(json.loads(config_path.read_text())["config"])
    ds = dlfund.data.load(
        config.dataset,
        data_dir=data_dir or config.data_dir,
        val_fraction=config.val_fraction,
        seed=config.seed,
    )
    model = dlfund.models.build(
        config.model, ds.input_shape, ds.num_classes, rngs=nnx.Rngs(config.seed), **config.model_options()
    )
    dlfund.load_weights(run_dir / WEIGHTS_FILE, model)
    model.eval()
    return model, ds, config


def evaluate(run_dir: str, split: str = "test", data_dir: str | None = None) -> dict[str, Any]:
    import dlfund

    model, ds, _ = load_run(run_dir, data_dir=data_dir)
    metrics = dlfund.evaluate(model, ds.splits()[split])
    print(json.dumps({k: v for k, v in metrics.items() if k != "confusion_matrix"}, indent=2))
    return metrics


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
            train(TrainConfig.from_dict(values))
        elif args.command == "evaluate":
            evaluate(args.run_dir, args.split, args.data_dir)
    except (ValueError, FileNotFoundError) as error:
        print(f"dlfund {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0
