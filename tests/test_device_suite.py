"""Tests of ``benchmarks/device_suite.py``, the prepared GPU/TPU run: its time planning, what it records when a step
fails or is cut off, and the merge of a device's tables into RESULTS.md. Fake processes and clock (milliseconds)."""

from __future__ import annotations

import json
import subprocess

import pytest

from benchmarks import device_suite, run

STEP_A = device_suite.Step("a", ("--task", "mlp"), ("dlfund", "jax-scan"), repeat=2)  # 2 peers x 2 rounds + peak
STEP_B = device_suite.Step("b", ("--task", "cnn", "--precision", "bfloat16"), ("dlfund",), repeat=3)  # 4
STEP_C = device_suite.Step("c", ("--task", "lstm"), ("dlfund", "jax-scan", "torch-eager"), repeat=2)  # 7


PEAK = {"status": "ok", "peak_gflops": 123456.0, "backend": "gpu", "device": "NVIDIA H200"}


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class FakeRun:
    """Stands in for subprocess.run of benchmarks.run: takes ``seconds_per_process`` per worker, writes the step's
    --json file, and fails or times out where told."""

    def __init__(self, clock, seconds_per_process, fail=(), hang=()):
        self.clock, self.per_process, self.fail, self.hang = clock, seconds_per_process, fail, hang
        self.commands = []

    def __call__(self, command, timeout, stdout, **kwargs):
        self.commands.append(command)
        stdout.write(f"[round 1/1] {command[command.index('--task') + 1]}\n")
        task = command[command.index("--task") + 1]
        if task in self.hang:
            self.clock.now += timeout
            raise subprocess.TimeoutExpired(command, timeout)
        peers = command[command.index("--peers") + 1].split(",")
        repeat = int(command[command.index("--repeat") + 1])
        self.clock.now += self.per_process * (len(peers) * repeat + ("--peak-gflops" not in command))
        json_path = command[command.index("--json") + 1]
        with open(json_path, "w") as f:
            json.dump({"task": task, "rows": [], "peak": PEAK}, f)
        code = 1 if task in self.fail else 0
        stdout.write(f"table of {task}\n")
        return subprocess.CompletedProcess(command, code)


@pytest.fixture(autouse=True)
def no_probes(monkeypatch):
    monkeypatch.setattr(device_suite, "environment", lambda commit: f"commit: {commit}\n")


def test_plan_cuts_to_one_round_then_skips_as_time_runs_out():
    per = 10.0  # step A: 5 processes at 2 rounds, 3 at 1; times the margin 1.25
    assert device_suite.plan(STEP_A, 5 * per * device_suite.MARGIN, per) == 2
    assert device_suite.plan(STEP_A, 5 * per * device_suite.MARGIN - 1, per) == 1
    assert device_suite.plan(STEP_A, 3 * per * device_suite.MARGIN, per) == 1
    assert device_suite.plan(STEP_A, 3 * per * device_suite.MARGIN - 1, per) == 0


def test_the_suite_learns_the_cost_per_process_and_skips_what_no_longer_fits(tmp_path):
    clock = FakeClock()
    fake = FakeRun(clock, seconds_per_process=10.0)
    # first guess 25 s/process: A needs 5 x 25 x 1.25 = 156 s of 200 and takes 50; then 10 s/process: B (4
    # processes, bfloat16: a peak of its own; 50 s with the margin) fits in 150 and takes 40; C (float32: A's peak
    # passed on, 6 processes, 75 s) fits in the 110 left.
    summary = device_suite.run_suite(tmp_path, 200, steps=(STEP_A, STEP_B, STEP_C), runner=fake, clock=clock)
    assert [(r["step"], r["repeat"], r["status"]) for r in summary["steps"]] == [
        ("a", 2, "ok"),
        ("b", 3, "ok"),
        ("c", 2, "ok"),
    ]
    assert summary["steps"][1]["estimate_per_process_s"] == 10.0
    a, b, c = fake.commands
    assert b[b.index("--peers") + 1] == "dlfund" and "--precision" in b
    assert b[b.index("--results-md") + 1] == str(tmp_path / "RESULTS.md")
    assert "--peak-gflops" not in a and "--peak-gflops" not in b  # the first step of each precision measures it
    assert c[c.index("--peak-gflops") + 1] == "123456" and c[c.index("--peak-device") + 1] == "NVIDIA H200"
    assert all(float(x[x.index("--timeout") + 1]) <= device_suite.WORKER_TIMEOUT for x in fake.commands)

    clock.now = 0.0
    summary = device_suite.run_suite(tmp_path, 120, steps=(STEP_A, STEP_B, STEP_C), runner=fake, clock=clock)
    # A: 156 > 120 at 2 rounds, 3 x 25 x 1.25 = 94 fits at 1 (takes 30 s); B: 4 x 10 x 1.25 = 50 <= 90 (takes 40);
    # C: 6 x 12.5 > the 50 left, 3 x 12.5 = 37.5 fits at 1 round
    assert [(r["step"], r["repeat"]) for r in summary["steps"]] == [("a", 1), ("b", 3), ("c", 1)]


def test_failed_cut_off_and_skipped_steps_are_recorded_and_the_rest_still_runs(tmp_path):
    clock = FakeClock()
    fake = FakeRun(clock, seconds_per_process=1.0, fail=("mlp",), hang=("cnn",))
    summary = device_suite.run_suite(tmp_path, 400, commit="abc123", steps=(STEP_A, STEP_B, STEP_C), runner=fake,
                                     clock=clock)  # fmt: skip
    statuses = {r["step"]: r["status"] for r in summary["steps"]}
    assert statuses["a"] == "exit status 1" and statuses["b"] == "cut off: out of time"
    assert statuses["c"].startswith("skipped: needs ~")  # b used up the time
    saved = json.loads((tmp_path / "suite.json").read_text())
    assert saved[0]["report"] == {"task": "mlp", "rows": [], "peak": PEAK} and "report" not in saved[1]
    assert not (tmp_path / "step.json").exists()
    log = (tmp_path / "suite.log").read_text()
    assert "table of mlp" in log and "[round 1/1] cnn" in log  # the cut-off step's output so far is kept
    assert (tmp_path / "environment.txt").read_text() == "commit: abc123\n"


def test_steps_run_the_harness_with_known_arguments():
    """Every configured step parses as benchmarks.run would parse it (a typo would waste the device run)."""
    for step in device_suite.STEPS:
        command = device_suite.step_command(step, step.repeat, device_suite.Path("o"), quick=False, timeout=60)
        args = run.parse_args(command[3:])
        assert args.peers == list(step.peers) and args.repeat == step.repeat
    titles = set()
    for step in device_suite.STEPS:  # at smoke size too, each step keeps a RESULTS.md section of its own
        command = device_suite.step_command(step, 1, device_suite.Path("o"), quick=True, timeout=60)
        args = run.parse_args(command[3:])
        assert args.train_size == 1024 and args.repeat == 1
        titles.add(run.section_title(args))
    assert len(titles) == len(device_suite.STEPS)
    names = {s.name for s in device_suite.STEPS}
    assert {"mlp float32", "mlp bfloat16", "cnn float32", "cnn bfloat16", "mlp strategies"} <= names


def test_merge_adds_a_devices_sections_and_replaces_its_own_older_ones(tmp_path):
    target = tmp_path / "RESULTS.md"
    cpu = "mlp, data=synth, 3 epochs, 60000 training examples"
    target.write_text(run.update_results_md(None, cpu, "cpu"))
    source = tmp_path / "device.md"
    gpu = f"{cpu}, NVIDIA H200"
    on = "- machine: x; JAX's device: NVIDIA H200 (gpu)\n"
    source.write_text(
        run.update_results_md(run.update_results_md(None, gpu, on + "old"), gpu + ", bfloat16", on + "bf16")
    )
    assert device_suite.merge(source, target) == ([gpu, gpu + ", bfloat16"], [])
    # A section naming no device (its peak failed) has this CPU's title: refused, the CPU's table kept.
    source.write_text(run.update_results_md(run.update_results_md(None, gpu, on + "new"), cpu, "gpu, unnamed"))
    assert device_suite.merge(source, target) == ([gpu], [cpu])
    text = target.read_text()
    assert "\ncpu\n" in text and "\nnew\n" in text and "\nbf16\n" in text and "old" not in text
    assert "unnamed" not in text and text.count("## ") == 3


def test_steps_option_runs_the_named_steps_in_the_order_given(monkeypatch, tmp_path):
    """What an earlier device call did not reach runs first; an unknown name is refused with the known ones."""
    seen = {}

    def fake_suite(out, seconds, quick, commit, steps):
        seen["steps"] = steps
        return {"steps": [], "seconds": 0.0}

    monkeypatch.setattr(device_suite, "run_suite", fake_suite)
    device_suite.main(["--out", str(tmp_path), "--steps", "cnn strategies, lstm float32,cnn strategies"])
    assert [step.name for step in seen["steps"]] == ["cnn strategies", "lstm float32"]
    with pytest.raises(SystemExit):
        device_suite.main(["--out", str(tmp_path), "--steps", "cnn float64"])
    with pytest.raises(ValueError, match="unknown step\\(s\\) 'cnn float64'; known: 'mlp float32', 'mlp bfloat16'"):
        device_suite.select_steps("cnn float64")
    with pytest.raises(ValueError, match="none named"):
        device_suite.select_steps(" , ")
