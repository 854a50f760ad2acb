"""Tests of the peer benchmark harness ``benchmarks/run.py`` with fake worker processes: argument checks, the
failed/skipped paths, FLOP counting, summaries and the Markdown output. No benchmark runs here (milliseconds)."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from benchmarks import run, workloads

FAKE_RATES = {"dlfund": 1000.0, "jax-scan": 2000.0, "flax-nnx-jit": 500.0}


def fake_result(peer, rate, accuracy=0.9, loss=0.3):
    return {
        "peer": peer,
        "examples_per_second": rate,
        "first_call_seconds": 5.0,
        "warm_seconds": 3.0,
        "final_loss": loss,
        "test_accuracy": accuracy,
        "notes": [],
        "data_source": "synthetic",
    }


class FakeRunner:
    """Stands in for subprocess.run: answers as benchmarks/peers.py would, and records every command."""

    def __init__(self, crash=(), rates=None, accuracy=None):
        self.crash, self.rates, self.accuracy = set(crash), rates or FAKE_RATES, accuracy or {}
        self.calls = []

    def __call__(self, command, **kwargs):
        self.calls.append(command)
        if "--peak" in command:
            out = {"peak_gflops": 100.0}
        else:
            peer = command[3]
            if peer in self.crash:
                stderr = "Traceback (most recent call last):\n  File x\nRuntimeError: boom | bad\n\n"
                return subprocess.CompletedProcess(command, 1, stdout="progress\n", stderr=stderr)
            rate = self.rates[peer] * (1 + 0.1 * sum(1 for c in self.calls if c[3:4] == [peer]))
            out = fake_result(peer, rate, self.accuracy.get(peer, 0.9))
        stdout = "some log line\n" + run.RESULT_PREFIX + json.dumps(out) + "\n"
        return subprocess.CompletedProcess(command, 0, stdout=stdout, stderr="")


def args_for(*extra):
    return run.parse_args(["--task", "mlp", "--peers", "dlfund,jax-scan,flax-nnx-jit", *extra])


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--task", "resnet"], ["unknown task 'resnet'", *workloads.TASKS]),
        (["--task", "mlp", "--peers", "dlfund,pytorch"], ["unknown peer(s) 'pytorch'", *run.KNOWN_PEERS]),
        (["--task", "mlp", "--data", "mnist"], ["unknown data 'mnist'", *workloads.DATASETS]),
        (["--task", "mlp", "--precision", "fp16"], ["unknown precision 'fp16'", *workloads.PRECISIONS]),
    ],
)
def test_bad_arguments_exit_before_any_work_listing_the_known_names(argv, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run.main(argv, runner=pytest.fail)  # the runner must never be called
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    for text in expected:
        assert text in err


def test_peers_parse_in_order_without_repeats_and_default_to_all():
    assert run.parse_peers("jax-scan, dlfund,jax-scan") == ["jax-scan", "dlfund"]
    assert run.parse_peers(None) == list(run.DEFAULT_PEERS)
    assert run.parse_peers("dlfund-scan,dlfund") == ["dlfund-scan", "dlfund"]  # opt-in strategy peers
    with pytest.raises(ValueError, match="known peers"):
        run.parse_peers(",")


def test_quick_overrides_sizes_and_rounds():
    args = args_for("--quick", "--repeat", "5")
    assert (args.repeat, args.epochs, args.train_size) == (1, 1, run.QUICK["train_size"])
    args = args_for("--data", "cifar")
    assert (args.train_size, args.test_size) == (50_000, 10_000)


def test_mlp_flops_match_a_hand_count():
    # 784*512 + 512*512 + 512*10 multiply-adds forward; 2 FLOPs each; x3 for forward + backward
    assert workloads.train_flops_per_example("mlp", (28, 28, 1)) == 6 * (401_408 + 262_144 + 5_120)
    # CIFAR-shaped input widens only the first layer
    assert workloads.forward_macs("mlp", (32, 32, 3)) == 3072 * 512 + 262_144 + 5_120


def test_cnn_flops_count_each_convolution_at_its_resolution():
    conv1 = 28 * 28 * 9 * 1 * 32
    conv2 = 14 * 14 * 9 * 32 * 64  # after the first 2x2 pool
    dense = 7 * 7 * 64 * 128 + 128 * 10
    assert workloads.forward_macs("cnn", (28, 28, 1)) == conv1 + conv2 + dense


def test_synthetic_data_is_deterministic_learnable_and_shaped():
    (x, y), (xt, yt) = workloads.synthetic_images((28, 28, 1), 2000, 500, seed=0)
    (x2, _), _ = workloads.synthetic_images((28, 28, 1), 2000, 500, seed=0)
    assert x.shape == (2000, 28, 28, 1) and xt.shape == (500, 28, 28, 1) and x.dtype == "float32"
    assert (x == x2).all() and set(y.tolist()) == set(range(10))
    # class means estimated on train classify the test set well above chance: the labels carry signal
    flat, test = x.reshape(len(x), -1), xt.reshape(len(xt), -1)
    means = [flat[y == c].mean(axis=0) for c in range(10)]
    scores = test @ np.stack(means).T
    assert (scores.argmax(axis=1) == yt).mean() > 0.5
    # the prototypes are smooth (4x4 blocks), so a CNN's 3x3 filters see them: neighbouring pixels of the class
    # means correlate (about 0.56 from 200 examples per class; white-noise prototypes give about 0)
    prototypes = np.stack(means).reshape(10, 28, 28)
    assert np.corrcoef(prototypes[:, :, :-1].ravel(), prototypes[:, :, 1:].ravel())[0, 1] > 0.35


def test_a_crashed_peer_is_reported_with_its_last_error_line_and_not_rerun():
    runner = FakeRunner(crash={"jax-scan"})
    args = args_for("--repeat", "3")
    measured = run.run_benchmark(args, runner, installed=lambda peer: True)
    record = measured["peers"]["jax-scan"]
    assert record["status"] == "failed"
    assert record["error"] == "RuntimeError: boom | bad (exit status 1)"
    peer_calls = [c[3] for c in runner.calls if "--peak" not in c]
    assert peer_calls.count("jax-scan") == 1 and peer_calls.count("dlfund") == 3
    table = run.format_table(run.summarize(measured, 1000))
    row = next(line for line in table.splitlines() if line.startswith("| jax-scan"))
    assert "failed: RuntimeError: boom \\| bad" in row  # the pipe escaped: the row keeps its columns
    assert row.count(" | ") == table.splitlines()[0].count(" | ")


def test_a_timed_out_peer_is_reported_failed():
    def runner(command, **kwargs):
        raise subprocess.TimeoutExpired(command, kwargs["timeout"])

    result = run.run_worker(["x"], {}, 12.5, runner)
    assert result == {"status": "failed", "error": "timed out after 12.5 s"}


def test_a_worker_that_exits_cleanly_without_a_result_line_failed():
    def runner(command, **kwargs):
        return subprocess.CompletedProcess(command, 0, stdout="hello\n", stderr="")

    assert run.run_worker(["x"], {}, 10, runner)["error"] == "hello (exit status 0)"


def test_a_peer_that_is_not_installed_is_skipped_with_the_install_hint():
    runner = FakeRunner()
    args = args_for("--repeat", "2")
    measured = run.run_benchmark(args, runner, installed=lambda peer: peer != "flax-nnx-jit")
    assert all(c[3] != "flax-nnx-jit" for c in runner.calls if "--peak" not in c)
    rows = run.summarize(measured, 1000)
    skipped = next(r for r in rows if r["peer"] == "flax-nnx-jit")
    assert skipped["status"] == "skipped"
    assert f"| flax-nnx-jit | {run.NOT_INSTALLED} |" in run.format_table(rows)


def test_is_installed_looks_up_the_peers_packages():
    assert run.is_installed("dlfund")
    run.REQUIRES["fake-peer"] = ("no_such_package_for_dlfund_tests",)
    try:
        assert not run.is_installed("fake-peer")
    finally:
        del run.REQUIRES["fake-peer"]


def test_rounds_rotate_the_peer_order_and_each_round_has_its_seed():
    runner = FakeRunner()
    run.run_benchmark(args_for("--repeat", "3", "--seed", "10"), runner, installed=lambda peer: True)
    order = [(c[3], c[-1]) for c in runner.calls if "--peak" not in c]
    assert order == [
        *(("dlfund", "--seed=10"), ("jax-scan", "--seed=10"), ("flax-nnx-jit", "--seed=10")),
        *(("jax-scan", "--seed=11"), ("flax-nnx-jit", "--seed=11"), ("dlfund", "--seed=11")),
        *(("flax-nnx-jit", "--seed=12"), ("dlfund", "--seed=12"), ("jax-scan", "--seed=12")),
    ]


def test_summary_takes_medians_ratios_to_dlfund_and_the_peak_fraction():
    rounds = [(900, 0.9, 0.2), (1000, 0.7, 0.3), (5000, 0.8, 0.7)]  # examples/s, test accuracy, final loss
    dlfund_runs = [fake_result("dlfund", rate, accuracy=acc, loss=loss) for rate, acc, loss in rounds]
    measured = {
        "peak": {"status": "ok", "peak_gflops": 10.0},
        "peers": {
            "dlfund": {"status": "ok", "runs": dlfund_runs},
            "jax-scan": {"status": "ok", "runs": [fake_result("jax-scan", r, accuracy=0.5) for r in (1500, 2000)]},
        },
    }
    rows = {r["peer"]: r for r in run.summarize(measured, flops_per_example=1_000_000)}
    assert rows["dlfund"]["examples_per_second"] == 1000  # the median, not the mean
    assert (rows["dlfund"]["min"], rows["dlfund"]["max"]) == (900, 5000)
    # loss and accuracy: means over the rounds' seeds, the accuracy with its range
    assert rows["dlfund"]["test_accuracy"] == pytest.approx(0.8) and rows["dlfund"]["final_loss"] == pytest.approx(0.4)
    assert rows["jax-scan"]["vs_dlfund"] == pytest.approx(1.75)
    assert rows["dlfund"]["peak_fraction"] == pytest.approx(1000 * 1e6 / 10e9)
    assert any("test accuracy 0.500 < dlfund's 0.800" in n for n in rows["jax-scan"]["notes"])
    table = run.format_table(list(rows.values()))
    assert "| dlfund | 1,000 (900-5,000) | 1.00x | 10.0% | 5.00 | 3.00 | 0.4000 | 0.800 (0.700-0.900) |  |" in table
    assert "| jax-scan | 1,750 (1,500-2,000) | 1.75x | 17.5% |" in table


@pytest.mark.parametrize(
    ("peer_accuracies", "note"),
    [
        ((0.74, 0.71, 0.77), None),  # within the slack
        ((0.82, 0.77, 0.76), None),  # 3.3 points above on average, but the seeds' ranges overlap
        ((0.85, 0.84, 0.86), "test accuracy 0.850 > dlfund's 0.763"),  # dlfund must not win by not learning
        ((0.60, 0.62, 0.61), "test accuracy 0.610 < dlfund's 0.763"),
    ],
)
def test_an_accuracy_note_needs_a_difference_beyond_the_seeds_spread(peer_accuracies, note):
    dlfund_runs = [fake_result("dlfund", 1000, accuracy=a) for a in (0.783, 0.707, 0.798)]
    peer_runs = [fake_result("torch-eager", 1000, accuracy=a) for a in peer_accuracies]
    measured = {"peak": {}, "peers": {"dlfund": {"status": "ok", "runs": dlfund_runs},
                                      "torch-eager": {"status": "ok", "runs": peer_runs}}}  # fmt: skip
    rows = {r["peer"]: r for r in run.summarize(measured, 1000)}
    assert rows["torch-eager"]["notes"] == ([note] if note else []) and rows["dlfund"]["notes"] == []


def test_without_a_peak_or_dlfund_the_columns_say_so():
    measured = {"peak": {"status": "failed"}, "peers": {"jax-scan": {"status": "ok", "runs": [fake_result("x", 5)]}}}
    (row,) = run.summarize(measured, 1000)
    assert row["peak_fraction"] is None and row["vs_dlfund"] is None
    assert "| jax-scan | 5 (5-5) |  | n/a |" in run.format_table([row])


def test_results_md_replaces_its_own_section_and_keeps_the_others():
    text = run.update_results_md(None, "mlp, data=synth", "table A")
    text = run.update_results_md(text, "cnn, data=synth", "table B")
    text = run.update_results_md(text, "mlp, data=synth", "table A2")
    assert text.startswith("# Peer benchmark results")
    assert text.count("## mlp, data=synth") == 1 and "table A2" in text and "table A\n" not in text
    assert "table B" in text and text.index("## mlp") < text.index("## cnn")


def test_main_prints_the_table_and_writes_json_and_results_md(tmp_path, capsys):
    json_path, md_path = tmp_path / "out.json", tmp_path / "RESULTS.md"
    argv = ["--task", "mlp", "--peers", "dlfund,jax-scan", "--repeat", "2"]
    report = run.main([*argv, "--json", str(json_path), "--results-md", str(md_path)], runner=FakeRunner())
    out = capsys.readouterr().out
    assert "| dlfund |" in out and "| jax-scan |" in out and "float32 matmul peak 100 GFLOP/s" in out
    assert "JAX's device" not in out  # the fake peak reports no accelerator
    saved = json.loads(json_path.read_text())
    assert saved["train_flops_per_example"] == report["train_flops_per_example"] == 4_012_032
    assert len(saved["raw"]["dlfund"]["runs"]) == 2 and "jax" in saved["versions"]
    md = md_path.read_text()
    assert "## mlp, data=synth, 3 epochs, 60000 training examples" in md and "cores" in md


def test_a_run_stopped_after_its_first_round_has_written_that_round(tmp_path):
    """The device suite stops a step that runs out of time: the rounds finished by then are on disk."""
    json_path, md_path = tmp_path / "out.json", tmp_path / "RESULTS.md"

    class StopInRoundTwo(FakeRunner):
        def __call__(self, command, **kwargs):
            if "--seed=1" in command:  # round 2: the suite's timeout kills the step here
                raise KeyboardInterrupt
            return super().__call__(command, **kwargs)

    argv = ["--task", "mlp", "--peers", "dlfund,jax-scan", "--repeat", "2"]
    with pytest.raises(KeyboardInterrupt):
        run.main([*argv, "--json", str(json_path), "--results-md", str(md_path)], runner=StopInRoundTwo())
    saved = json.loads(json_path.read_text())
    assert saved["rounds_done"] == 1 and [len(saved["raw"][p]["runs"]) for p in ("dlfund", "jax-scan")] == [1, 1]
    md = md_path.read_text()
    assert (
        "1 of 2 rounds (written mid-run), seeds 0-0 (one per round)" in md
        and "| jax-scan | 2,200 (2,200-2,200) |" in md
    )
    run.main([*argv, "--json", str(json_path), "--results-md", str(md_path)], runner=FakeRunner())
    assert "2 round(s)" in md_path.read_text() and "mid-run" not in md_path.read_text()


def test_a_given_peak_with_its_device_names_the_section_as_a_measured_one(tmp_path, capsys):
    argv = ["--task", "mlp", "--peers", "dlfund", "--repeat", "1", "--peak-gflops", "650000"]
    runner = FakeRunner()
    report = run.main([*argv, "--peak-device", "NVIDIA H200"], runner=runner)
    assert not [c for c in runner.calls if "--peak" in c]  # not measured again
    out = capsys.readouterr().out
    assert "## mlp, data=synth, 3 epochs, 60000 training examples, NVIDIA H200\n" in out
    assert "JAX's device: NVIDIA H200; float32 matmul peak 650,000 GFLOP/s" in out
    assert run.accelerator(report["peak"]) == "NVIDIA H200"
    assert run.accelerator(run.main(argv, runner=runner)["peak"]) is None  # no device given: this machine's title


def test_xla_compilation_inside_the_timed_call_gets_a_note():
    runs = {peer: [dict(fake_result(peer, 1000.0), warm_compile_seconds=c)] for peer, c in
            [("dlfund", 0.0), ("keras-jax", 0.6), ("jax-scan", 0.1), ("torch-eager", None)]}  # fmt: skip
    measured = {"peak": {}, "peers": {p: {"status": "ok", "runs": r} for p, r in runs.items()}}
    notes = {row["peer"]: row["notes"] for row in run.summarize(measured, 1000)}
    assert notes["keras-jax"] == ["the timed call compiles again: 0.60 s of XLA compilation"]  # 0.6 of 3 s
    assert notes["dlfund"] == notes["jax-scan"] == notes["torch-eager"] == []  # none, 3% of it, not JAX


def test_the_worker_counts_xla_compilations_once_listening():
    import jax
    import jax.numpy as jnp

    from benchmarks import peers

    v, unique = jnp.arange(7.0), float(np.random.default_rng().random())  # a program no cache holds
    seconds = peers._listen_to_compilations()
    jax.jit(lambda v: jnp.sin(v) * unique)(v).block_until_ready()
    assert len(seconds) == 1 and seconds[0] > 0


def test_worker_command_passes_the_configuration():
    command = run.worker_command("keras-jax", args_for("--epochs", "7", "--train-size", "4096"), seed=5)
    assert command[1:4] == ["-m", "benchmarks.peers", "keras-jax"] and "--seed=5" in command
    assert "--epochs=7" in command and "--train-size=4096" in command and "--task=mlp" in command
    assert "--precision=float32" in command
    assert "--precision=bfloat16" in run.worker_command("dlfund", args_for("--precision", "bfloat16"), seed=0)
    assert run.worker_env(["A=1=2"])["A"] == "1=2" and run.worker_env()["KERAS_BACKEND"] == "jax"


def test_strategy_peers_get_a_results_section_of_their_own():
    """Forcing dlfund's epoch strategies must not overwrite the configuration's peer table in RESULTS.md."""
    default = run.section_title(run.parse_args(["--task", "cnn"]))
    strategies = run.section_title(run.parse_args(["--task", "cnn", "--peers", "dlfund-scan,dlfund-chunk"]))
    assert default != strategies and strategies.startswith(default)


def test_a_bfloat16_run_measures_its_own_peak_names_the_device_and_keeps_its_own_section(tmp_path, capsys):
    class AcceleratorRunner(FakeRunner):
        def __call__(self, command, **kwargs):
            done = super().__call__(command, **kwargs)
            if "--peak" in command:
                peak = {"peak_gflops": 650_000.0, "backend": "gpu", "device": "NVIDIA H200"}
                done.stdout = run.RESULT_PREFIX + json.dumps(peak) + "\n"
            return done

    md_path = tmp_path / "RESULTS.md"
    runner = AcceleratorRunner()
    for precision in ("float32", "bfloat16"):
        argv = ["--task", "mlp", "--peers", "dlfund", "--repeat", "1", "--precision", precision]
        run.main([*argv, "--results-md", str(md_path)], runner=runner)
    peaks = [c for c in runner.calls if "--peak" in c]
    assert [c[-1] for c in peaks] == ["--precision=float32", "--precision=bfloat16"]
    out = capsys.readouterr().out
    assert "JAX's device: NVIDIA H200 (gpu); bfloat16 matmul peak 650,000 GFLOP/s" in out
    md = md_path.read_text()
    title = "## mlp, data=synth, 3 epochs, 60000 training examples, NVIDIA H200"  # beside the CPU's sections
    assert f"{title}\n" in md and f"{title}, bfloat16\n" in md  # float32's section kept


@pytest.mark.parametrize("task", workloads.TASKS)
def test_the_jax_peers_bfloat16_models_compute_in_bfloat16_with_float32_weights(task):
    """The hand-written JAX peers' --precision bfloat16: every layer computes in bfloat16 (so the logits differ from
    float32's by bfloat16 rounding, not more and not zero) while the parameters stay float32."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from benchmarks import peers_jax

    shape = workloads.input_shape(task, (8, 8, 1))
    x = jax.random.normal(jax.random.key(0), (4, *shape))
    full, mixed = (peers_jax.flax_model(task, shape, 0, precision) for precision in workloads.PRECISIONS)
    params = nnx.state(mixed, nnx.Param)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    exact, rounded = nnx.jit(lambda a, b, x: (a(x), b(x)))(full, mixed, x)  # one program: faster than op by op
    assert rounded.dtype == jnp.bfloat16
    error = float(jnp.max(jnp.abs(rounded.astype(jnp.float32) - exact)))
    assert 0 < error < 0.05 * float(jnp.max(jnp.abs(exact))) + 0.02
    loss = peers_jax.xent(rounded, jnp.zeros(4, jnp.int32))
    assert loss.dtype == jnp.float32
