import json
import os
import subprocess
import sys

import pytest

from dlfund import cli
from dlfund.config import TrainConfig


def parse(*argv):
    args = cli.build_parser().parse_args(["train", *argv])
    return {k: getattr(args, k) for k in TrainConfig().to_dict()}


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for name in TrainConfig().to_dict():
        assert "--" + name.replace("_", "-") in text, name


def test_overrides_of_each_option_type():
    values = parse(
        "--epochs", "3", "--learning-rate", "0.01", "--optimizer", "sgd", "--hidden", "64", "32",
        "--batch-norm", "--clip-norm", "1.5", "--no-progress", "--activation", "tanh",
    )  # fmt: skip
    assert values["epochs"] == 3 and values["learning_rate"] == 0.01 and values["optimizer"] == "sgd"
    assert values["hidden"] == [64, 32] and values["batch_norm"] is True and values["clip_norm"] == 1.5
    assert values["progress"] is False and values["activation"] == "tanh"
    assert TrainConfig.from_dict(values).hidden == (64, 32)
    assert parse()["hidden"] == (128,) and parse()["clip_norm"] is None


def test_unknown_config_key_is_named():
    with pytest.raises(ValueError, match=r"unknown config keys \['epoch'\]"):
        TrainConfig.from_dict({"epoch": 3})


def test_train_writes_a_complete_run_folder_and_evaluate_reads_it(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = cli.main(
        ["train", "--epochs", "3", "--hidden", "32", "--run-dir", str(run_dir), "--no-progress", "--patience", "0"]
    )
    assert code == 0
    names = sorted(os.listdir(run_dir))
    assert names == ["config.json", "history.csv", "loss_curve.png", "metrics.json", "metrics.png", "weights.npz"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    test = metrics["test"]
    assert test["num_examples"] == 359 and test["accuracy"] > 0.6
    assert {"precision_macro", "recall_macro", "f1_macro"} <= set(test)
    assert sum(map(sum, test["confusion_matrix"])) == 359
    config = json.loads((run_dir / "config.json").read_text())
    assert config["config"]["epochs"] == 3 and config["environment"]["jax"]
    assert (run_dir / "history.csv").read_text().count("\n") == 4  # header + 3 epochs
    capsys.readouterr()
    assert cli.main(["evaluate", str(run_dir)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["accuracy"] == pytest.approx(test["accuracy"])


def test_bad_option_value_exits_with_a_clear_message(tmp_path, capsys):
    code = cli.main(["train", "--activation", "rleu", "--run-dir", str(tmp_path / "r"), "--no-progress"])
    assert code == 2
    assert "Known activations" in capsys.readouterr().err


def test_python_dash_m_dlfund_runs_the_main_job(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, "-m", "dlfund", "train", "--epochs", "2", "--run-dir", str(tmp_path / "r"), "--no-progress"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "test: loss=" in done.stdout and (tmp_path / "r" / "weights.npz").exists()
