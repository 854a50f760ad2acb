"""Every experiment runs end to end (quick mode) and reports a table and its checks."""

import json

import pytest

from dlfund import cli, experiments


@pytest.mark.parametrize("name", experiments.EXPERIMENTS.names())
def test_experiment_runs_and_reports(name, tmp_path):
    report = experiments.run(name, quick=True, out_dir=tmp_path)
    assert report.rows and report.checks and report.quick
    text = (tmp_path / "report.md").read_text()
    assert report.claim in text and "| claim | verdict | measured |" in text
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["name"] == name and len(saved["checks"]) == len(report.checks)


def test_perceptron_xor_claims_hold():
    report = experiments.run("perceptron_xor")  # cheap enough to run in full
    assert report.passed, report.markdown()


def test_cli_experiment_command(tmp_path, capsys):
    assert cli.main(["experiment", "perceptron_xor", "--out", str(tmp_path)]) == 0
    assert "never classifies XOR" in capsys.readouterr().out
    assert cli.main(["experiment", "xor"]) == 2
    assert "Known experiments" in capsys.readouterr().err
