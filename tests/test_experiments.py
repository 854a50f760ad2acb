"""Every experiment runs end to end (quick mode) and reports a table and its checks."""

import json

import pytest

from dlfund import cli, experiments


# transfer_learning's quick run (25 s) has its own test below, which checks this and more.
@pytest.mark.parametrize("name", [n for n in experiments.EXPERIMENTS.names() if n != "transfer_learning"])
def test_experiment_runs_and_reports(name, tmp_path):
    report = experiments.run(name, quick=True, out_dir=tmp_path)
    assert report.rows and report.checks and report.quick
    text = (tmp_path / "report.md").read_text()
    assert report.claim in text and "| claim | verdict | measured |" in text
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["name"] == name and len(saved["checks"]) == len(report.checks)


FAST = ("dropout", "perceptron_xor", "relu_vs_sigmoid")  # full runs of 2-12 s on 2 cores (README)


@pytest.mark.parametrize("name", FAST)
def test_fast_experiments_hold_in_full(name):
    report = experiments.run(name)
    assert not report.quick and report.passed, report.markdown()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(experiments.EXPERIMENTS.names()) - set(FAST)))
def test_slow_experiments_show_their_documented_verdicts(name):
    """Minutes each: ``pytest -m slow`` (``make test`` leaves them out). The verdicts the README reports."""
    report = experiments.run(name)
    if name == "transfer_learning":
        # Reported, not hidden: on clean and noisy digits transfer does not beat scratch; on shifted digits it does.
        verdicts = {c.claim: c.passed for c in report.checks}
        assert verdicts["shifted digits: transfer (its best variant) beats training from scratch at k=1"]
        assert verdicts["shifted digits: transfer's advantage shrinks as k grows"]
        assert not verdicts["digits: transfer (its best variant) beats training from scratch at k=1"]
    else:
        assert report.passed, report.markdown()


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


def test_transfer_learning_compares_six_ways_in_three_settings_and_draws_accuracy_against_k(tmp_path):
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
            "head, then all",
            "convs kept, dense redrawn",
        )
    ]
    assert all(0.0 <= r["k=1"] <= 1.0 and 0.0 <= r["k=5"] <= 1.0 for r in report.rows)
    assert len(report.checks) == 9
    png = tmp_path / "transfer_learning.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "figure" not in json.loads((tmp_path / "results.json").read_text())
