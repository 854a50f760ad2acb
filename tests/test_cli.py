import json
import os
import subprocess
import sys

import numpy as np
import pytest

import dlfund
from dlfund import cli
from dlfund.config import TrainConfig


def parse(*argv, defaults=None):
    import tyro

    return tyro.cli(TrainConfig, args=list(argv), default=defaults or TrainConfig())


def test_help_lists_commands_and_every_option(capsys):
    assert cli.main(["--help"]) == 0
    usage = capsys.readouterr().out
    assert all(name in usage for name in ("train", "resume", "evaluate"))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for name in TrainConfig().to_dict():
        assert "--" + name.replace("_", "-") in text, name
    flat = " ".join(text.split())  # tyro wraps the help text
    for name in ("transformer", "logistic_regression", "fashion_mnist", "digits_rows", "cifar100"):
        assert name in flat, name
    assert "offline: breast_cancer, digits, digits_rows, iris, sines, wine; downloaded once: cifar10" in flat


def test_overrides_of_each_option_type():
    config = parse(
        "--epochs", "3", "--learning-rate", "0.01", "--optimizer", "sgd", "--hidden", "64", "32",
        "--batch-norm", "--clip-norm", "1.5", "--no-progress", "--activation", "tanh", "--loss", "mse",
    )  # fmt: skip
    assert config.epochs == 3 and config.learning_rate == 0.01 and config.optimizer == "sgd"
    assert config.hidden == (64, 32) and config.batch_norm is True and config.clip_norm == 1.5
    assert config.progress is False and config.activation == "tanh" and config.loss == "mse"
    default = parse()
    assert default.hidden is None and default.clip_norm is None and default == TrainConfig()


def test_a_misspelt_flag_suggests_the_right_one(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--epoch", "3"])
    err = capsys.readouterr().err
    assert "--epoch" in err and "--epochs" in err


def test_config_file_sets_defaults_that_flags_override(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("epochs: 5\nhidden: [32, 16]\nlearning-rate: 0.01\n")
    config = parse("--epochs", "7", defaults=TrainConfig.from_file(path))
    assert config.epochs == 7 and config.hidden == (32, 16) and config.learning_rate == 0.01
    (tmp_path / "run.json").write_text(json.dumps({"epochs": 2, "batch_norm": True}))
    assert TrainConfig.from_file(tmp_path / "run.json").batch_norm is True


def test_unknown_config_key_is_named_with_close_matches(tmp_path):
    with pytest.raises(ValueError, match=r"unknown config keys: 'epoch' \(did you mean epochs"):
        TrainConfig.from_dict({"epoch": 3})
    (tmp_path / "bad.yaml").write_text("lerning_rate: 0.1\n")
    assert cli.main(["train", "--config", str(tmp_path / "bad.yaml")]) == 2


def test_train_writes_a_complete_run_folder_and_evaluate_reads_it(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = cli.main(
        ["train", "--epochs", "3", "--hidden", "32", "--run-dir", str(run_dir), "--no-progress", "--patience", "0"]
    )
    assert code == 0
    names = set(os.listdir(run_dir))
    assert {"config.json", "history.csv", "history.jsonl", "loss_curve.png", "metrics.json", "metrics.png"} <= names
    assert {"weights.safetensors", "checkpoints", "tensorboard", "confusion_matrix.png"} <= names
    assert "roc_curve.png" not in names  # 10 classes: no binary curves
    # The model's summary comes right after the run folder, before training: 64*32 + 32 + 32*10 + 10 parameters.
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"run folder: {run_dir}" and printed[1] == "Model: MLP, input (1, 8, 8, 1) -> output (1, 10)"
    epochs_line = next(i for i, line in enumerate(printed) if line.startswith("epochs:"))
    assert printed.index("Total params: 2,410 (9.41 KiB)") < epochs_line
    assert " dense/0 (Linear)" in "\n".join(printed) and "confusion_matrix.png" in printed[-1]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    test = metrics["test"]
    assert test["num_examples"] == 359 and test["accuracy"] > 0.6
    assert {"precision_macro", "recall_macro", "f1_macro"} <= set(test)
    assert sum(map(sum, test["confusion_matrix"])) == 359
    config = json.loads((run_dir / "config.json").read_text())
    assert config["cli"]["epochs"] == 3 and config["environment"]["jax"] and config["model"]["class"] == "MLP"
    assert (run_dir / "history.csv").read_text().count("\n") == 4  # header + 3 epochs
    per_class = test["per_class"]
    assert per_class["classes"] == [str(i) for i in range(10)] and sum(per_class["support"]) == 359
    assert per_class["macro avg"]["f1"] == pytest.approx(test["f1_macro"], abs=1e-6)
    capsys.readouterr()
    assert cli.main(["evaluate", str(run_dir)]) == 0
    summary = capsys.readouterr().out
    assert f"test: loss={test['loss']:.4f}, accuracy={test['accuracy']:.4f}" in summary
    assert "confusion matrix (rows: true class, columns: predicted)" in summary and "weighted avg" in summary
    assert max(len(line) for line in summary.splitlines()) < 120  # rounded, not 16-digit floats
    assert cli.main(["evaluate", str(run_dir), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["accuracy"] == pytest.approx(test["accuracy"])
    assert printed["confusion_matrix"] == test["confusion_matrix"]
    # The same folder again without resuming is refused: nothing written is overwritten.
    assert cli.main(["train", "--epochs", "3", "--run-dir", str(run_dir), "--no-progress"]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_a_binary_run_folder_has_roc_and_precision_recall_curves(tmp_path, capsys):
    from sklearn.metrics import average_precision_score, roc_auc_score

    run_dir = tmp_path / "cancer"
    argv = ["train", "--dataset", "breast_cancer", "--epochs", "2", "--hidden", "8", "--patience", "0"]
    assert cli.main([*argv, "--run-dir", str(run_dir), "--no-progress"]) == 0
    files = "confusion_matrix.png, roc_curve.png, precision_recall_curve.png"
    assert files in capsys.readouterr().out
    assert all((run_dir / name).stat().st_size > 10_000 for name in files.split(", "))
    test = json.loads((run_dir / "metrics.json").read_text())["test"]
    # The scores are P(malignant): the logit difference of the 2-output softmax model, a monotone map of it.
    x, y = dlfund.data.load("breast_cancer").test
    logits = dlfund.predict(dlfund.load_model(run_dir), x).astype("float64")
    margin = logits[:, 1] - logits[:, 0]
    assert test["roc_auc"] == pytest.approx(roc_auc_score(y, margin), abs=1e-12) and test["roc_auc"] > 0.8
    assert test["average_precision"] == pytest.approx(average_precision_score(y, margin), abs=1e-12)
    assert cli.main(["evaluate", str(run_dir)]) == 0
    assert f"roc_auc={test['roc_auc']:.4f}, average_precision=" in capsys.readouterr().out


def test_bad_option_value_exits_with_a_clear_message(tmp_path, capsys):
    code = cli.main(["train", "--activation", "rleu", "--run-dir", str(tmp_path / "r"), "--no-progress"])
    assert code == 2
    assert "Known activations" in capsys.readouterr().err


def test_a_model_flag_the_model_does_not_take_is_refused_not_dropped(tmp_path, capsys):
    # --dropout 0.5 with --model resnet used to train without dropout, without a word
    for flags, message in [
        (["--model", "resnet", "--dropout", "0.5"], "--dropout does not apply to --model resnet; it applies to mlp"),
        (["--model", "lstm", "--activation", "tanh"], "--activation does not apply to --model lstm"),
        (["--model", "gru", "--batch-norm"], "--batch-norm does not apply to --model gru"),
        (["--model", "logistic_regression", "--hidden", "8"], "--hidden does not apply"),
    ]:
        assert cli.main(["train", *flags, "--run-dir", str(tmp_path / "r"), "--no-progress"]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    assert TrainConfig(model="lstm", dropout=0.25, hidden=(16, 16)).model_options() == {
        "dropout": 0.25,
        "hidden": 16,
        "num_layers": 2,
    }


def test_unknown_command(capsys):
    assert cli.main(["trian"]) == 2
    assert "unknown command 'trian'; did you mean 'train'?" in capsys.readouterr().err
    assert cli.main(["xyz"]) == 2
    assert "did you mean" not in capsys.readouterr().err


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
    assert "test: loss=" in done.stdout and (tmp_path / "r" / "weights.safetensors").exists()


def test_a_forecasting_run_reports_the_persistence_baseline_and_warnings_name_the_command(tmp_path, capsys):
    run_dir = tmp_path / "sines"
    argv = ["train", "--dataset", "sines", "--epochs", "1", "--hidden", "8", "--batch-size", "100000"]
    done = subprocess.run(
        [sys.executable, "-m", "dlfund", *argv, "--run-dir", str(run_dir), "--no-progress"],
        capture_output=True,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    # Python's own warning format names <frozen runpy> as the line that warned
    assert "dlfund train: warning: batch_size=100000 is larger than the" in done.stderr
    assert "<frozen runpy>" not in done.stderr and "UserWarning" not in done.stderr
    trained = json.loads((run_dir / "metrics.json").read_text())["test"]
    baseline = dlfund.data.persistence_mse(dlfund.data.load("sines"))
    assert trained["persistence_mse"] == pytest.approx(baseline, rel=1e-6)
    assert cli.main(["evaluate", str(run_dir), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["persistence_mse"] == pytest.approx(baseline, rel=1e-6)
    assert evaluated["loss"] == pytest.approx(trained["loss"], rel=1e-5)  # the mse loss
    assert cli.main(["evaluate", str(run_dir), "--json", "--split", "val"]) == 0
    val = json.loads(capsys.readouterr().out)
    assert val["persistence_mse"] == pytest.approx(dlfund.data.persistence_mse(dlfund.data.load("sines"), "val"))


def test_config_files_read_exponent_floats(tmp_path):
    (tmp_path / "a.yaml").write_text("learning_rate: 1e-3\nweight_decay: 5e-4\nepochs: 2\n")
    config = TrainConfig.from_file(tmp_path / "a.yaml")
    assert config.learning_rate == 1e-3 and config.weight_decay == 5e-4 and config.epochs == 2
    (tmp_path / "a.json").write_text('{"learning_rate": 1e-3, "clip_norm": 1}')
    assert TrainConfig.from_file(tmp_path / "a.json").learning_rate == 1e-3
    (tmp_path / "bad.yaml").write_text("learning_rate: fast\n")
    with pytest.raises(ValueError, match="learning_rate' must be a number"):
        TrainConfig.from_file(tmp_path / "bad.yaml")


def test_no_validation_split_needs_no_early_stopping(tmp_path, capsys):
    assert cli.main(["train", "--val-fraction", "0", "--run-dir", str(tmp_path / "r"), "--no-progress"]) == 2
    assert "--patience 0" in capsys.readouterr().err


def test_a_negative_patience_is_refused_not_read_as_zero(tmp_path, capsys):
    assert cli.main(["train", "--patience", "-1", "--run-dir", str(tmp_path / "r"), "--no-progress"]) == 2
    assert "--patience must be >= 0 (0 turns early stopping off), got -1" in capsys.readouterr().err


def test_the_download_flag_is_download_true(monkeypatch, tmp_path, capsys):
    import dlfund

    seen = []

    def load(name, **kwargs):
        seen.append(kwargs["download"])
        raise ValueError("stopped here")

    monkeypatch.setattr(dlfund.data, "load", load)
    for extra, expected in (([], None), (["--download"], True)):
        argv = ["train", "--dataset", "mnist", "--run-dir", str(tmp_path / f"r{len(seen)}"), "--no-progress", *extra]
        assert cli.main(argv) == 2
        assert seen[-1] is expected
    assert "stopped here" in capsys.readouterr().err


def test_sweep_trains_every_combination_and_writes_each_member(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", "--learning-rate", "1e-3", "1e-2", "--seeds", "0", "1", "--epochs", "3", "--patience", "0"]
    assert cli.main([*argv, "--hidden", "16", "--run-dir", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "4 members: learning_rate, seed" in printed and "ensemble of 4, test" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["members"] == [
        {"learning_rate": 1e-3, "seed": 0},
        {"learning_rate": 1e-3, "seed": 1},
        {"learning_rate": 1e-2, "seed": 0},
        {"learning_rate": 1e-2, "seed": 1},
    ]
    assert (out / "sweep.csv").read_text().count("\n") == 5 and (out / "curves.png").stat().st_size > 0
    ds = dlfund.data.load("digits")
    for k in range(len(metrics["members"])):
        model = dlfund.load_model(out / "members" / str(k) / "weights.safetensors")
        assert dlfund.evaluate(model, ds.test)["accuracy"] == pytest.approx(metrics["test"][k]["accuracy"])
        assert len(dlfund.History.from_csv(out / "members" / str(k) / "history.csv")) == 3
    # The member with the higher rate learns more in 3 epochs: the rates reached the members.
    assert metrics["test"][2]["accuracy"] > metrics["test"][0]["accuracy"]
    ensemble = dlfund.evaluate(
        [dlfund.load_model(out / "members" / str(k) / "weights.safetensors") for k in range(4)], ds.test
    )
    assert ensemble["accuracy"] == pytest.approx(metrics["ensemble_test"]["accuracy"])


def test_a_sweep_config_file_holds_lists_and_one_seed_is_every_members(tmp_path, capsys):
    (tmp_path / "sweep.yaml").write_text("learning_rate: [1e-3, 1e-2]\nseeds: 5\nepochs: 1\npatience: 0\n")
    out = tmp_path / "out"
    assert cli.main(["sweep", "--config", str(tmp_path / "sweep.yaml"), "--run-dir", str(out), "--no-progress"]) == 0
    recorded = json.loads((out / "config.json").read_text())
    assert recorded["cli"]["learning_rate"] == [1e-3, 1e-2] and recorded["cli"]["seeds"] == [5]
    assert recorded["sweep"]["seed"] == 5 and recorded["sweep"]["members"] == [
        {"learning_rate": 1e-3},
        {"learning_rate": 1e-2},
    ]


def test_resume_of_a_finished_sweep_folder_trains_nothing(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", "--seeds", "0", "1", "--epochs", "1", "--patience", "0", "--hidden", "8", "--no-progress"]
    assert cli.main([*argv, "--run-dir", str(out)]) == 0
    assert (out / "checkpoints" / "1").is_dir() and (out / "result.json").is_file()
    capsys.readouterr()
    assert cli.main(["resume", str(out)]) == 0
    assert "is a finished sweep; nothing to resume" in capsys.readouterr().out
    # Read as one run's folder it failed on something else ("unknown config keys: 'seeds'", "custom loss None")
    np.save(tmp_path / "x.npy", np.zeros((1, 8, 8, 1), np.float32))
    for command in (["evaluate", str(out)], ["predict", str(out), str(tmp_path / "x.npy")]):
        assert cli.main(command) == 2
        assert "is the folder of a sweep, not of one run" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"members/<k>/weights\.safetensors"):
        dlfund.load_model(out)


def test_a_config_file_that_does_not_parse_is_named(tmp_path, capsys):
    (tmp_path / "run.yaml").write_text("epochs: [1,\n")
    (tmp_path / "run.json").write_text('{"epochs": 1,')
    for name, kind in (("run.yaml", "YAML"), ("run.json", "JSON")):
        assert cli.main(["train", "--config", str(tmp_path / name)]) == 2
        assert f"{tmp_path / name} is not valid {kind}" in capsys.readouterr().err


def test_a_run_folder_that_cannot_be_written_is_an_error_not_a_traceback(tmp_path, capsys):
    (tmp_path / "taken").write_text("a file, not a folder")
    code = cli.main(["train", "--epochs", "1", "--run-dir", str(tmp_path / "taken"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "cannot write the run folder" in err and "Traceback" not in err
