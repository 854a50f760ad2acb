"""Every GPU/TPU measurement of issue 12 in one prepared run, for a session that is lent an accelerator.

A lent machine gives a session ~15 minutes of device time and 10 minutes per command, once. So this driver runs
``python -m benchmarks.run`` configurations in priority order (float32 and bfloat16 peer tables, dlfund's epoch
strategies, then the other tasks and a long run), each bounded by what is left of ``--seconds``; before each step
it estimates the step's cost from the seconds per process that the finished steps took, and cuts the step to one
round or skips it (and says so) when it would not fit. Every finished step's table is in ``OUT/RESULTS.md`` at
once, so a cut-off run still returns what it measured.

On the lent NVIDIA machine (its python3 has JAX with CUDA, Flax, Optax and PyTorch, not Keras; no install of
dlfund needed: the checkout's root is on the path), from this machine's repository root:

    bash benchmarks/device_wheels.sh          # here, once: Keras' wheels for the machine's Python 3.12 into .whl/
    run(carry=[".whl"], timeout_s=600, command=
        "python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site"
        " .whl/*.whl && export PYTHONPATH=/tmp/site || exit;"
        " python3 -m benchmarks.bench_fit_overhead --repeat 7 --json $OUT/overhead.json;"
        " PYTHONUNBUFFERED=1 python3 -m benchmarks.device_suite --out $OUT --seconds 480 --commit COMMIT")

(``bench_fit_overhead`` times what ``fit`` does beyond the hand-written scan, unmeasured on the first H200 call;
``benchmarks/device_runs/2026-12-04-h200/call1/command.sh`` is that call's command, with a smoke ``fit`` first and
fallback flax/optax wheels, and ``--seconds 450``: it ran 445 s, and the lease held the machine 490 s for the
whole call, its start included.)

A later call measures first what an earlier one did not reach with ``--steps`` (names from :data:`STEPS`, comma-
separated, run in the order given); after the first H200 call: ``--steps "cnn bfloat16,cnn strategies,lstm
float32,transformer float32,mlp float32 20 epochs"``.

``OUT`` then holds ``RESULTS.md`` (sections named with the device, ready to merge into benchmarks/RESULTS.md with
``python -m benchmarks.device_suite --merge OUT/RESULTS.md``), ``suite.json`` (every raw number), ``suite.log``
(each step's output) and ``environment.txt`` (devices, versions, commit). ``--quick`` runs the same steps at
smoke size: that is how the driver is checked on a CPU before device time is spent.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks import run

#: the peers of the bfloat16 and secondary tables: the JAX peers, Keras and PyTorch eager (torch.compile, one more
#: process per round with a compilation of its own, is in the float32 MLP and CNN tables only)
CORE_PEERS = ("dlfund", "flax-nnx-jit", "jax-jit", "jax-scan", "keras-jax", "torch-eager")
STRATEGIES = ("dlfund", *run.STRATEGY_PEERS)
FIRST_GUESS_SECONDS = 25.0  # per process (imports, device start, compilation, two calls) until a step is timed
MARGIN = 1.25  # a step starts only if its estimate times this fits in the time left
WORKER_TIMEOUT = 150.0  # seconds: one hung worker (a cold torch.compile, say) cannot eat the run


@dataclasses.dataclass(frozen=True)
class Step:
    """One ``benchmarks.run`` configuration of the suite."""

    name: str
    argv: tuple[str, ...]  # --task and anything else but --peers, --repeat, --results-md and --json
    peers: tuple[str, ...]
    repeat: int = 1

    def processes(self, repeat: int | None = None, peak: bool = True) -> int:
        """Worker processes it starts: one per peer and round, plus the matmul peak unless it is known already."""
        return len(self.peers) * (self.repeat if repeat is None else repeat) + int(peak)

    @property
    def precision(self) -> str:
        return self.argv[self.argv.index("--precision") + 1] if "--precision" in self.argv else "float32"


#: In priority order, one round each: a worker process is mostly start-up and compilation (~10 s each in the smoke
#: run on this CPU, ~17 s on an H200 on 2026-12-04), so one device call's ~540 s hold about 30, and the CNN tables
#: matter more than a second round of the MLP's (the H200's spread between processes was ~10%).
STEPS = (
    Step("mlp float32", ("--task", "mlp"), run.DEFAULT_PEERS),
    Step("mlp bfloat16", ("--task", "mlp", "--precision", "bfloat16"), CORE_PEERS),
    Step("mlp strategies", ("--task", "mlp"), STRATEGIES),
    Step("cnn float32", ("--task", "cnn"), run.DEFAULT_PEERS),
    Step("cnn bfloat16", ("--task", "cnn", "--precision", "bfloat16"), CORE_PEERS),
    Step("cnn strategies", ("--task", "cnn"), STRATEGIES),
    Step("lstm float32", ("--task", "lstm"), CORE_PEERS),
    Step("transformer float32", ("--task", "transformer"), CORE_PEERS),
    Step("mlp float32 20 epochs", ("--task", "mlp", "--epochs", "20"), ("dlfund", "jax-scan", "torch-eager")),
)


def select_steps(names: str) -> tuple[Step, ...]:
    """The steps named in ``names`` (comma-separated, as in :data:`STEPS`), in the order given: a later device call
    measures what an earlier one did not reach first."""
    known = {step.name: step for step in STEPS}
    chosen = [name.strip() for name in names.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in known]
    if unknown or not chosen:
        raise ValueError(
            f"unknown step(s) {', '.join(map(repr, unknown)) or '(none named)'}; known: "
            + ", ".join(repr(name) for name in known)
        )
    return tuple(known[name] for name in dict.fromkeys(chosen))


def plan(step: Step, seconds_left: float, seconds_per_process: float, peak: bool = True) -> int:
    """Rounds to run ``step`` with in the time left: its own, 1 if only that fits, else 0 (skip)."""
    for repeat in dict.fromkeys((step.repeat, 1)):
        if step.processes(repeat, peak) * seconds_per_process * MARGIN <= seconds_left:
            return repeat
    return 0


def step_command(
    step: Step, repeat: int, out: Path, quick: bool, timeout: float, peak: dict | None = None
) -> list[str]:
    """The ``benchmarks.run`` command of ``step``; ``peak`` (an earlier step's measured peak in the same precision)
    is passed on with its device, so the peak is measured once per precision, not once per step."""
    command = [sys.executable, "-m", "benchmarks.run", *step.argv, "--peers", ",".join(step.peers)]
    command += ["--repeat", str(repeat), "--timeout", f"{timeout:.0f}"]
    if peak:
        command += ["--peak-gflops", f"{peak['peak_gflops']:.6g}"]
        if device := run.accelerator(peak):
            command += ["--peak-device", device]
    command += ["--results-md", str(out / "RESULTS.md"), "--json", str(out / "step.json")]
    if quick:  # smoke sizes; not --quick, which would also make a step's own --epochs 1 (and its section another's)
        command += [
            "--train-size",
            "1024",
            "--test-size",
            "512",
            *([] if "--epochs" in step.argv else ["--epochs", "1"]),
        ]
    return command


def environment(commit: str | None) -> str:
    """Devices, versions and the commit, for environment.txt (each probe's failure is written, not raised)."""
    probes = {
        "nvidia-smi -L": ["nvidia-smi", "-L"],
        "jax": [sys.executable, "-c", "import jax; print(jax.__version__, jax.default_backend(), jax.devices())"],
        "torch": [sys.executable, "-c", "import torch; print(torch.__version__, torch.cuda.is_available())"],
    }
    lines = [f"commit: {commit or 'unknown'}", f"python: {sys.version.split()[0]} ({sys.executable})"]
    lines += [f"{name}: {value}" for name, value in run.versions().items()]
    for name, command in probes.items():
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=120)
            lines.append(f"{name}: {(done.stdout or done.stderr).strip()}")
        except (OSError, subprocess.TimeoutExpired) as error:
            lines.append(f"{name}: {type(error).__name__}: {error}")
    return "\n".join(lines) + "\n"


def run_suite(
    out: Path,
    seconds: float,
    quick: bool = False,
    commit: str | None = None,
    steps: Sequence[Step] = STEPS,
    runner: Callable[..., subprocess.CompletedProcess] = subprocess.run,
    clock: Callable[[], float] = time.monotonic,
) -> dict:
    """Runs ``steps`` in order within ``seconds``; returns (and writes to ``out/suite.json``) what each did."""
    out.mkdir(parents=True, exist_ok=True)
    start = clock()
    (out / "environment.txt").write_text(environment(commit))
    log = (out / "suite.log").open("a")
    done: list[dict] = []
    peaks: dict[str, dict] = {}  # precision -> the first measured peak in it
    spent = processes = 0.0
    for step in steps:
        if quick:  # benchmarks.run --quick runs one round whatever --repeat says
            step = dataclasses.replace(step, repeat=1)
        left = seconds - (clock() - start)
        per_process = spent / processes if processes else FIRST_GUESS_SECONDS
        peak = peaks.get(step.precision)
        repeat = plan(step, left, per_process, peak=peak is None)
        record = {"step": step.name, "repeat": repeat, "estimate_per_process_s": round(per_process, 1)}
        if not repeat:
            needs = step.processes(1, peak is None) * per_process
            record["status"] = f"skipped: needs ~{needs:.0f} s, {left:.0f} s left"
            done.append(record)
            print(f"[suite] {step.name}: {record['status']}", file=sys.stderr, flush=True)
            continue
        command = step_command(step, repeat, out, quick, min(WORKER_TIMEOUT, max(60.0, left / 2)), peak)
        log.write(f"\n### {step.name}: {' '.join(command)}\n")
        log.flush()
        began = clock()
        try:  # the output goes to the log as it comes: a step cut off keeps its finished rounds there
            result = runner(command, stdout=log, stderr=subprocess.STDOUT, timeout=max(1.0, left - 5))
            record["status"] = "ok" if result.returncode == 0 else f"exit status {result.returncode}"
        except subprocess.TimeoutExpired:
            record["status"] = "cut off: out of time"
        took = clock() - began
        spent, processes = spent + took, processes + step.processes(repeat, peak is None)
        record["seconds"] = round(took, 1)
        step_json = out / "step.json"
        if step_json.exists():  # also when the step was cut off: benchmarks.run writes it after every round
            record["report"] = json.loads(step_json.read_text())
            step_json.unlink()
            measured = record["report"].get("peak", {})
            if measured.get("status") == "ok" and measured.get("source") != "--peak-gflops":
                peaks.setdefault(step.precision, measured)
        done.append(record)
        print(f"[suite] {step.name}: {record['status']} in {took:.0f} s", file=sys.stderr, flush=True)
        (out / "suite.json").write_text(json.dumps(done, indent=1) + "\n")
    log.close()
    (out / "suite.json").write_text(json.dumps(done, indent=1) + "\n")
    return {"steps": done, "seconds": clock() - start}


def merge(source: Path, target: Path = run.DEFAULT_RESULTS_MD) -> tuple[list[str], list[str]]:
    """Copies every section of ``source`` (a device run's RESULTS.md) that names its accelerator into ``target``,
    replacing a section of the same title; returns (titles merged, titles refused). A section without a device
    (its peak failed, say) would carry this CPU's title and replace this CPU's table, so it is refused."""
    text = target.read_text() if target.exists() else None
    merged, refused = [], []
    for block in source.read_text().split("\n## ")[1:]:
        title, _, body = block.partition("\n")
        if "JAX's device: " not in body:
            refused.append(title.strip())
            continue
        text = run.update_results_md(text, title.strip(), body)
        merged.append(title.strip())
    target.write_text(text or "")
    return merged, refused


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.device_suite", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("device_results"), help="folder for the results")
    parser.add_argument("--seconds", type=float, default=540, help="time for all steps (default 540)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke size: 1 round, 1024 examples, 1 epoch (or the step's)"
    )
    parser.add_argument("--commit", default=None, help="the commit measured, for environment.txt")
    parser.add_argument(
        "--steps",
        default=None,
        help="comma-separated step names to run, in this order (default: all, in priority order); e.g. "
        "'cnn bfloat16,cnn strategies' for what an earlier device call did not reach",
    )
    parser.add_argument("--merge", type=Path, default=None, help="merge this RESULTS.md into benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    if args.merge:
        merged, refused = merge(args.merge)
        for title in merged:
            print(f"merged: {title}")
        for title in refused:
            print(f"not merged (no accelerator named in it; it would replace this CPU's section): {title}")
        return
    try:
        steps = select_steps(args.steps) if args.steps is not None else STEPS
    except ValueError as error:
        parser.error(str(error))
    summary = run_suite(args.out, args.seconds, args.quick, args.commit, steps=steps)
    for record in summary["steps"]:
        print(f"{record['step']}: {record['status']}" + (f" ({record['seconds']} s)" if "seconds" in record else ""))
    print(f"suite: {summary['seconds']:.0f} s; tables in {args.out / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
