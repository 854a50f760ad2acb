"""Every experiment runs end to end (quick mode) and reports a table and its checks."""

import json

import numpy as np
import pytest

import dlfund
from dlfund import cli, experiments

# The training-dynamics experiments: each tuned over learning rates and seeds with dlfund.sweep; their quick runs
# have their own tests below (test_training_dynamics_*), which check this and more.
DYNAMICS = ("activations", "batch_norm", "learning_rate", "optimizers")
# Their full runs' documented verdicts (README), by the start of each claim: where a claim of the field did not hold
# on the digits, the test asserts that it still does not (a change would need the README changed too).
DYNAMICS_VERDICTS = {
    "activations": {
        "sigmoid's gradient vanishes": True,
        "ReLU trains the deep MLP faster than sigmoid": True,
        "ReLU trains the deep MLP faster than tanh": False,  # tanh is faster, with Flax's LeCun initialization
    },
    "optimizers": {
        "SGD with momentum beats plain SGD": False,  # tuned, the four are within seed noise of each other
        "RMSprop beats plain SGD": False,
        "Adam beats plain SGD": False,
        "Adam reaches": False,
        "Adam is less sensitive": True,
        "one shared learning rate": True,
    },
    "batch_norm": {
        # faster beyond noise at 2 of the 4 rates both networks train at (0.01, 0.1), within noise at 0.03 and 0.3
        "at the same learning rate": False,
        # CPU-dependent (float rounding moves a seed by an epoch): held on the AMD EPYC VM (3, 3, 3 vs 4, 4, 5
        # epochs), within noise on the Intel Xeon VM of 2026-12-04 (4, 2, 3 vs 4, 4, 4). What holds on both, and is
        # asserted instead: batch norm's seeds take fewer epochs on average (assert_tuned_batch_norm_is_faster).
        "at each network's own tuned rate": None,
        "batch norm tolerates larger learning rates": True,
    },
}


# The generalization experiments: their quick runs have their own tests below (test_generalization_*).
GENERALIZATION = ("features_vs_learning", "metrics_vs_loss", "overfitting")
# Their full runs' documented verdicts (README), by the start of each claim, as for DYNAMICS_VERDICTS.
GENERALIZATION_VERDICTS = {
    "overfitting": {
        "without regularization the MLP memorizes": True,
        "dropout (0.5, chosen on validation) narrows": True,  # dropout 0.25 does not stop the memorization
        "weight decay (2.0, chosen on validation) narrows": True,
        "early stopping narrows": True,
        "augmentation narrows": True,
        "all narrows": True,
        "dropout (0.5, chosen on validation) raises test accuracy": True,
        "weight decay (2.0, chosen on validation) raises test accuracy": True,
        "early stopping raises test accuracy": True,
        "augmentation raises test accuracy": True,
        "all of them together": False,  # stacked at their own strengths, they underfit
        "an over-parameterized MLP memorizes shuffled labels": True,
        "...while its test accuracy stays at chance": True,
    },
    "features_vs_learning": {
        "with n=10 examples the hand-crafted features beat both networks": False,  # within noise of the MLP
        "with n=1250 examples a network beats the hand-crafted features": False,  # all four reach ~0.98
        "the hand-crafted features beat raw pixels": True,
    },
    "metrics_vs_loss": {
        "at threshold 0.5 the accuracy looks good": True,
        "...and so does the loss": True,
        "...yet the rare class is often missed": True,
        "the threshold that maximizes F1 on the validation split raises the test recall": False,  # it stays near 0.5
        "the threshold that maximizes F1 on the validation split raises the test f1": False,
    },
}


# transfer_learning's quick run (25 s) has its own test below, which checks this and more.
@pytest.mark.parametrize(
    "name",
    [
        n
        for n in experiments.EXPERIMENTS.names()
        if n != "transfer_learning" and n not in DYNAMICS and n not in GENERALIZATION
    ],
)
def test_experiment_runs_and_reports(name, tmp_path):
    report = experiments.run(name, quick=True, out_dir=tmp_path)
    assert report.rows and report.checks and report.quick
    text = (tmp_path / "report.md").read_text()
    assert report.claim in text and "| claim | verdict | measured |" in text
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["name"] == name and len(saved["checks"]) == len(report.checks)
    assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # README: each saves a figure


# Full runs short enough for every `make test` (2-16 s each on 2 cores, README); the rest are marked slow.
FAST = ("perceptron_xor", "learning_rate", "metrics_vs_loss", "batch_norm")


def assert_tuned_batch_norm_is_faster(report):
    """At each network's tuned rate, batch norm's seeds reach 95% validation accuracy in fewer epochs on average
    (a seed that never does counts as one epoch past the budget), read from the report's table."""

    def mean_epochs(network):
        (row,) = [r for r in report.rows if r["network"] == network and r["tuned"] == "yes"]
        text = row["epochs to 95% val accuracy (per seed)"]
        return np.mean([int(e[1:]) + 1 if e.startswith(">") else int(e) for e in text.split(", ")])

    assert mean_epochs("with batch norm") < mean_epochs("without batch norm"), report.markdown()


def assert_documented_verdicts(name, report):
    """The verdicts the README reports, failing claims included: a verdict that flips is a failing test."""
    assert not report.quick
    if name == "transfer_learning":
        # Reported, not hidden: on clean and noisy digits transfer does not beat scratch; on shifted digits it does.
        verdicts = {c.claim: c.passed for c in report.checks}
        assert verdicts["shifted digits: transfer (head, then all) beats training from scratch at k=1"]
        assert verdicts["shifted digits: transfer's advantage shrinks as k grows"]
        assert not verdicts["digits: transfer (head, then all) beats training from scratch at k=1"]
        assert not verdicts["noisy digits: transfer (head, then all) beats training from scratch at k=1"]
        assert verdicts["digits: at the same rate (1e-3), redrawn dense layers beat pretrained ones at k=1"]
    elif name in DYNAMICS_VERDICTS or name in GENERALIZATION_VERDICTS:
        documented = {**DYNAMICS_VERDICTS, **GENERALIZATION_VERDICTS}[name]
        verdicts = {prefix: [c.passed for c in report.checks if c.claim.startswith(prefix)] for prefix in documented}
        assert all(len(found) == 1 for found in verdicts.values()), verdicts  # each claim is still there, once
        fixed = {prefix: held for prefix, held in documented.items() if held is not None}
        assert {prefix: verdicts[prefix] for prefix in fixed} == {p: [h] for p, h in fixed.items()}, report.markdown()
        if name == "batch_norm":
            assert_tuned_batch_norm_is_faster(report)
    else:
        assert report.passed, report.markdown()


@pytest.mark.parametrize("name", FAST)
def test_fast_experiments_show_their_documented_verdicts_in_full(name):
    assert_documented_verdicts(name, experiments.run(name))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(experiments.EXPERIMENTS.names()) - set(FAST)))
def test_slow_experiments_show_their_documented_verdicts(name):
    """Minutes each: ``pytest -m slow`` (``make test`` leaves them out)."""
    assert_documented_verdicts(name, experiments.run(name))


def test_cli_experiment_command(tmp_path, capsys):
    assert cli.main(["experiment", "perceptron_xor", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "never classifies XOR" in out
    expected = experiments.EXPERIMENTS.get("perceptron_xor").expected
    assert expected and out.index(expected) < out.index("# perceptron_xor")  # said before the run starts
    assert expected in (tmp_path / "report.md").read_text()
    assert json.loads((tmp_path / "results.json").read_text())["expected"] == expected
    assert cli.main(["experiment", "xor"]) == 2
    assert "Known experiments" in capsys.readouterr().err


def test_transfer_learning_compares_seven_ways_in_three_settings_and_draws_accuracy_against_k(tmp_path):
    report = experiments.run("transfer_learning", quick=True, out_dir=tmp_path)
    assert report.rows and report.checks and report.quick
    text = (tmp_path / "report.md").read_text()
    assert report.claim in text and "| claim | verdict | measured |" in text
    assert [(r["setting"], r["variant"]) for r in report.rows] == [
        (setting, variant)
        for setting in ("digits", "noisy digits", "shifted digits")
        for variant in (
            "scratch",
            "linear probe",
            "frozen backbone",
            "fine-tune",
            "fine-tune at 1e-3",
            "head, then all",
            "convs kept, dense redrawn",
        )
    ]
    assert all(0.0 <= r["k=1"] <= 1.0 and 0.0 <= r["k=5"] <= 1.0 for r in report.rows)
    assert len(report.checks) == 12
    # The claims test the recipe fixed in advance, not the variant that scored best on the test digits.
    assert all("head, then all" in c.claim for c in report.checks if "beats training from scratch" in c.claim)
    png = tmp_path / "transfer_learning.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "figure" not in json.loads((tmp_path / "results.json").read_text())


def _quick_report_on_disk(tmp_path, name: str) -> dict:
    """The files a quick run wrote: report.md with the claim table, results.json, and the figure as a PNG."""
    text = (tmp_path / "report.md").read_text()
    assert experiments.EXPERIMENTS.get(name).claim in text and "| claim | verdict | measured |" in text
    assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["name"] == name and saved["quick"]
    return saved


def test_training_dynamics_relu_vs_sigmoid_is_the_activations_experiment(tmp_path, capsys):
    """The old name still runs, from the command line, the experiment it grew into (and is not listed twice)."""
    assert "relu_vs_sigmoid" not in experiments.EXPERIMENTS.names()
    assert cli.main(["experiment", "relu_vs_sigmoid", "--quick", "--out", str(tmp_path)]) in (0, 1)  # 1: a FAILS
    out = capsys.readouterr().out
    assert "relu_vs_sigmoid is now called activations" in out and "# activations" in out
    saved = _quick_report_on_disk(tmp_path, "activations")
    assert [row["activation"] for row in saved["rows"]] == ["sigmoid", "tanh", "relu"]  # one rate in a quick run
    assert all(row["tuned"] for row in saved["rows"])  # each activation's only rate is its tuned one
    assert len(saved["checks"]) == 3


@pytest.mark.parametrize("name", ["batch_norm", "learning_rate", "optimizers"])
def test_training_dynamics_experiments_run_quick_and_draw(name, tmp_path):
    report = experiments.run(name, quick=True, out_dir=tmp_path)
    assert report.rows and report.checks and report.quick and report.figure is not None
    saved = _quick_report_on_disk(tmp_path, name)
    assert len(saved["checks"]) == len(report.checks)
    if name == "learning_rate":
        assert [row["learning rate"] for row in report.rows] == [1e-4, 1e-1, 10.0]
        assert report.rows[0]["outcome"] == "barely moves"  # 1e-4 for one epoch moves nothing, even quick
    elif name == "optimizers":
        assert [row["optimizer"] for row in report.rows] == ["sgd", "adam"]  # the full run: all four
    else:
        assert [row["network"] for row in report.rows] == ["without batch norm", "with batch norm"]


def test_training_dynamics_measures_epochs_to_a_threshold_and_compare_beyond_the_seeds():
    from dlfund.experiments import measures

    history = dlfund.History([{"epoch": e, "val_accuracy": a} for e, a in enumerate((0.5, 0.96, 0.9, 0.97), 1)])
    assert measures.epochs_to(history, 0.95) == 2 and measures.epochs_to(history, 0.99) is None
    assert measures.epochs_to(dlfund.History(), 0.95) is None  # a member that went non-finite in epoch 1
    assert list(measures.censored([3, None], budget=10)) == [3.0, 11.0]

    def setting(epochs):
        nan = np.full(len(epochs), np.nan)
        return measures.Setting(0.1, list(range(len(epochs))), list(epochs), nan, nan, nan, [False] * 3, budget=10)

    assert measures.faster(setting([2, 3, 3]), setting([4, 5, None]), ("a", "b"), 0.95)[0]
    held, detail = measures.faster(setting([2, 3, 5]), setting([4, 5, 6]), ("a", "b"), 0.95)
    assert not held and "within noise" in detail  # faster on average, but the seeds overlap
    # One seed never got there: not "faster", however slow the other arm.
    assert not measures.faster(setting([2, 3, None]), setting([None] * 3), ("a", "b"), 0.95)[0]


def test_training_dynamics_toy_trajectories_match_the_formula():
    """Gradient descent on x^2 multiplies x by 1 - 2 * step each step (d2l gd.md); the heavy ball on it follows its
    two-term recurrence. The toy panels run through dlfund's Optax optimizers: checked against the formulas."""
    from dlfund.experiments import measures

    for step in (0.05, 0.2, 1.1):
        points = measures.trajectory(dlfund.optimizers.get("sgd", learning_rate=step), lambda x: 2 * x, [10.0], 10)
        np.testing.assert_allclose(points[:, 0], 10.0 * (1 - 2 * step) ** np.arange(11), rtol=1e-5)
    points = measures.trajectory(dlfund.optimizers.get("momentum", learning_rate=0.1, momentum=0.5), lambda x: 2 * x,
                                 [10.0], 5)  # fmt: skip
    x, velocity, expected = 10.0, 0.0, [10.0]
    for _ in range(5):  # Optax's (undamped) momentum: v <- 0.5 v + g; x <- x - lr v
        velocity = 0.5 * velocity + 2 * x
        x -= 0.1 * velocity
        expected.append(x)
    np.testing.assert_allclose(points[:, 0], expected, rtol=1e-5)


def test_generalization_dropout_is_the_overfitting_experiment(tmp_path, capsys):
    """The old name runs, from the command line, the experiment it grew into: six arms scored in eval mode, and
    memorization of shuffled labels."""
    assert "dropout" not in experiments.EXPERIMENTS.names()
    assert experiments.EXPERIMENTS.aliases()["dropout"] == "overfitting"
    assert cli.main(["experiment", "dropout", "--quick", "--out", str(tmp_path)]) in (0, 1)  # 1: a FAILS
    out = capsys.readouterr().out
    assert "dropout is now called overfitting" in out and "# overfitting" in out
    saved = _quick_report_on_disk(tmp_path, "overfitting")
    arms = [row["arm"] for row in saved["rows"]]
    assert arms[:3] == ["none", "dropout", "weight decay"]  # one strength each in a quick run: the chosen one
    assert arms[3:6] == ["early stopping", "augmentation", "all"]
    assert arms[6:] == [f"memorization: shuffled labels, {how}" for how in ("no regularization", "dropout 0.5",
                                                                            "weight decay 2.0")]  # fmt: skip
    assert all(0.0 <= row["train accuracy, eval mode"] <= 1.0 and row["train loss, eval mode"] > 0
               for row in saved["rows"])  # fmt: skip
    # The gap is to the test split: validation chose the strengths and the kept epoch, so a gap to it is biased.
    for row in saved["rows"]:
        gap = row["train accuracy, eval mode"] - row["test accuracy"]
        assert row["gap (train - test accuracy)"] == pytest.approx(gap, abs=1e-9)
    assert any(row["val accuracy"] != row["test accuracy"] for row in saved["rows"])  # else the check is empty
    assert len(saved["checks"]) == 13


def test_generalization_features_vs_learning_runs_quick_and_draws(tmp_path):
    report = experiments.run("features_vs_learning", quick=True, out_dir=tmp_path)
    saved = _quick_report_on_disk(tmp_path, "features_vs_learning")
    assert [row["learner"] for row in saved["rows"]] == [
        "features + logistic regression",
        "pixels + logistic regression",
        "MLP",
        "CNN",
    ]
    assert all(0.0 <= row["n=10"] <= 1.0 and 0.0 <= row["n=50"] <= 1.0 for row in report.rows)
    assert len(saved["checks"]) == 3


def test_generalization_hog_features_bin_gradient_orientations():
    """An image brightening downwards has every gradient at 90 degrees: one bin (80-100) per cell, normalized."""
    from dlfund.experiments.features import hog_features

    ramp = np.tile(np.arange(8.0)[:, None], (1, 8))[None]  # rows 0..7: the gradient points down the image
    features = hog_features(ramp[..., None])
    assert features.shape == (1, 9 * 9 + 8 + 8)  # 3x3 cells of 9 bins, then row and column means
    cells = features[0, :81].reshape(9, 9)
    np.testing.assert_allclose(cells[:, 4], 1.0, atol=1e-6)
    np.testing.assert_allclose(np.delete(cells, 4, axis=1), 0.0, atol=1e-9)
    np.testing.assert_allclose(features[0, 81:89], np.arange(8.0))  # row means
    np.testing.assert_allclose(features[0, 89:], 3.5)  # column means
    # 45 degrees lies between the centres of bins 1 (30) and 2 (50): split 1/4 and 3/4, then L2-normalized.
    diagonal = hog_features(np.add.outer(np.arange(8.0), np.arange(8.0))[None])
    np.testing.assert_allclose(diagonal[0, :9], np.array([0, 1, 3, 0, 0, 0, 0, 0, 0]) / np.sqrt(10), atol=1e-6)
    with pytest.raises(ValueError, match="images"):
        hog_features(np.zeros((2, 8)))


def test_generalization_metrics_vs_loss_runs_quick_and_draws(tmp_path):
    report = experiments.run("metrics_vs_loss", quick=True, out_dir=tmp_path)
    saved = _quick_report_on_disk(tmp_path, "metrics_vs_loss")
    assert [row["threshold"] for row in saved["rows"]] == [
        "0.5 (default)",
        "max F1 on validation",
        "recall >= 0.9 on validation",
        "none (threshold-free)",
    ]
    assert report.rows[0]["majority rate"] == pytest.approx(0.95, abs=0.005)  # the 8s are 5% of every split
    assert len(saved["checks"]) == 5


@pytest.mark.parametrize("name", experiments.EXPERIMENTS.names())
def test_every_experiment_refuses_bad_options_before_it_trains(name, tmp_path):
    with pytest.raises(TypeError, match="quick must be True or False, got 'yes'"):
        experiments.run(name, quick="yes")
    with pytest.raises(TypeError, match="data_dir must be a folder path"):
        experiments.run(name, quick=True, data_dir=3)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        experiments.run(name, quick=True, data_dir=tmp_path / "file")
