"""One entry point for dlfund's peer benchmarks: the same model, optimizer, batch and data in every framework.

Run (from the repository root):

    .venv/bin/python -m benchmarks.run --task mlp|cnn|lstm|transformer [--data synth|cifar] [--repeat 3]
        [--epochs 3] [--peers dlfund,jax-scan,...] [--quick] [--json PATH] [--results-md [PATH]]

What it measures: for each peer, the examples per second of a warm training call (the second call in a fresh
process: model construction, data transfer and ``epochs`` epochs of Adam 1e-3 at batch 128, until the final loss is
on the host), as median, min and max over ``--repeat`` interleaved rounds; the first call's time (compilation
included); the final training loss and test accuracy (so nobody wins by not learning: round r = 0, 1, ... trains
with seed ``--seed`` + r, so rounds differ in initial weights and batch order, and the table gives the mean
accuracy over them with its range; one short run's accuracy swings by several points with the seed); the ratio to
``dlfund``; and the achieved fraction of the device's matmul FLOP/s in the run's precision (measured once with a
jitted matmul; model FLOPs counted analytically in ``benchmarks/workloads.py``). ``--precision bfloat16`` trains
every peer with its usual mixed-precision recipe (bfloat16 compute, float32 weights; see ``workloads.PRECISIONS``);
it is for GPUs and TPUs (XLA:CPU has no bfloat16 units) and gets a results section of its own.

Peers: ``dlfund`` (``dlfund.fit``), ``flax-nnx-jit`` (Flax MNIST example style), ``jax-jit`` (split state, a
``jax.jit`` step per batch), ``jax-scan`` (the best hand-written JAX loop: an epoch per ``lax.scan``),
``keras-jax`` (Keras 3 ``fit`` on JAX), ``torch-eager`` and ``torch-compile`` (PyTorch on CPU). Each measurement
runs in a fresh process (``python -m benchmarks.peers``), so no peer inherits another's caches, threads or memory;
rounds rotate the peers' order so that slow drifts of the machine hit all of them alike. A peer whose package is
missing is skipped with a note; a peer that crashes (or passes ``--timeout``) is reported as failed with its last
error line, not dropped.

``--data cifar`` reads the real CIFAR-10 only if dlfund finds it prepared on disk (it never downloads here);
otherwise it trains on CIFAR-shaped (32x32x3) synthetic data, and the table says which.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks import workloads
from benchmarks.peers import RESULT_PREFIX  # what a peer process puts before its JSON line

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PEERS = ("dlfund", "flax-nnx-jit", "jax-jit", "jax-scan", "keras-jax", "torch-eager", "torch-compile")
#: opt-in: dlfund.fit with its epoch strategy forced (execution=...), to measure the strategies against each other
STRATEGY_PEERS = ("dlfund-scan", "dlfund-chunk", "dlfund-loop")
KNOWN_PEERS = DEFAULT_PEERS + STRATEGY_PEERS
#: top-level packages each peer imports beyond the project's own dependencies (the ``bench`` extra)
REQUIRES = {"keras-jax": ("keras",), "torch-eager": ("torch",), "torch-compile": ("torch",)}
NOT_INSTALLED = "not installed: pip install -e '.[bench]'"
QUICK = {"train_size": 1024, "test_size": 512, "epochs": 1, "repeat": 1}
DEFAULT_RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"
VERSIONED = ("jax", "jaxlib", "flax", "optax", "keras", "torch", "numpy", "dlfund")
ACCURACY_SLACK = 0.02  # a peer this far below dlfund's test accuracy gets a note
COMPILE_NOTE_FRACTION = 0.05  # XLA compilation above this share of the timed call gets a note


# --- arguments ---------------------------------------------------------------------------------------------------


def parse_peers(text: str | None) -> list[str]:
    """The peers named in a comma-separated list (the default peers for None), in the order given.

    Raises:
      ValueError: an unknown name; the message lists the known peers.
    """
    if text is None:
        return list(DEFAULT_PEERS)
    peers = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in peers if p not in KNOWN_PEERS]
    if unknown or not peers:
        raise ValueError(
            f"unknown peer(s) {', '.join(map(repr, unknown)) or '(none given)'}; known peers: {', '.join(KNOWN_PEERS)}"
        )
    return list(dict.fromkeys(peers))  # drop repeats, keep the order


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parses and checks the command line; an unknown task, peer or data set exits (status 2) before any work,
    with a message that lists the known ones."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument("--task", required=True, help=f"one of: {', '.join(workloads.TASKS)}")
    parser.add_argument("--data", default="synth", help=f"one of: {', '.join(workloads.DATASETS)} (default synth)")
    parser.add_argument(
        "--precision", default="float32", help=f"one of: {', '.join(workloads.PRECISIONS)} (default float32)"
    )
    parser.add_argument(
        "--peers",
        default=None,
        help=f"comma-separated; default: {','.join(DEFAULT_PEERS)}; also: {','.join(STRATEGY_PEERS)}",
    )
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="round r trains with seed SEED + r (default 0)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per timed call (default 3)")
    parser.add_argument("--train-size", type=int, default=None, help="training examples (default 60k synth, 50k cifar)")
    parser.add_argument("--test-size", type=int, default=None, help="test examples (default 10k)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round, 1 epoch, 1024 examples")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per measurement before it fails")
    parser.add_argument("--peak-gflops", type=float, default=None, help="skip measuring the matmul peak; use this")
    parser.add_argument(
        "--peak-device",
        default=None,
        help="the accelerator --peak-gflops was measured on (names the section, as a measured peak would)",
    )
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra environment for peers")
    parser.add_argument("--json", dest="json_path", default=None, help="write every raw number to this file")
    parser.add_argument(
        "--results-md",
        nargs="?",
        const=str(DEFAULT_RESULTS_MD),
        default=None,
        help="add (or replace) this configuration's section in a Markdown file (default benchmarks/RESULTS.md)",
    )
    args = parser.parse_args(argv)
    if args.task not in workloads.TASKS:
        parser.error(f"unknown task {args.task!r}; known tasks: {', '.join(workloads.TASKS)}")
    if args.data not in workloads.DATASETS:
        parser.error(f"unknown data {args.data!r}; known: {', '.join(workloads.DATASETS)}")
    if args.precision not in workloads.PRECISIONS:
        parser.error(f"unknown precision {args.precision!r}; known: {', '.join(workloads.PRECISIONS)}")
    try:
        args.peers = parse_peers(args.peers)
    except ValueError as error:
        parser.error(str(error))
    for item in args.env:
        if "=" not in item:
            parser.error(f"--env takes KEY=VALUE, got {item!r}")
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    spec = workloads.DATASETS[args.data]
    args.train_size = args.train_size or spec["train"]
    args.test_size = args.test_size or spec["test"]
    if args.repeat < 1 or args.epochs < 1 or args.train_size < workloads.BATCH or args.test_size < 1:
        parser.error("--repeat and --epochs must be >= 1, --train-size >= 128 and --test-size >= 1")
    return args


# --- measurements ------------------------------------------------------------------------------------------------

Runner = Callable[..., subprocess.CompletedProcess]


def is_installed(peer: str) -> bool:
    """Whether the packages ``peer`` needs can be imported (looked up without importing them)."""
    return all(importlib.util.find_spec(name) is not None for name in REQUIRES.get(peer, ()))


def worker_command(peer: str, args: argparse.Namespace, seed: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "benchmarks.peers",
        peer,
        f"--task={args.task}",
        f"--data={args.data}",
        f"--epochs={args.epochs}",
        f"--train-size={args.train_size}",
        f"--test-size={args.test_size}",
        f"--precision={args.precision}",
        f"--seed={seed}",
    ]


def worker_env(extra: Sequence[str] = ()) -> dict[str, str]:
    env = dict(os.environ)
    env["KERAS_BACKEND"] = "jax"  # Keras 3 would otherwise look for TensorFlow
    env.update(item.split("=", 1) for item in extra)
    return env


def last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def run_worker(command: list[str], env: dict[str, str], timeout: float, runner: Runner = subprocess.run) -> dict:
    """Runs one worker process and returns its JSON result, or ``{"status": "failed", "error": ...}`` with the last
    error line (a Python traceback ends with the exception's message) if it crashed, timed out or printed none."""
    try:
        done = runner(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "error": f"timed out after {timeout:g} s"}
    results = [line for line in (done.stdout or "").splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not results:
        error = last_line(done.stderr) or last_line(done.stdout) or "no output"
        return {"status": "failed", "error": f"{error} (exit status {done.returncode})"}
    return {"status": "ok", **json.loads(results[-1][len(RESULT_PREFIX) :])}


def measure_peak(args: argparse.Namespace, runner: Runner = subprocess.run) -> dict:
    if args.peak_gflops is not None:
        given = {"status": "ok", "peak_gflops": args.peak_gflops, "source": "--peak-gflops"}
        return given | ({"device": args.peak_device, "backend": "given"} if args.peak_device else {})
    command = [sys.executable, "-m", "benchmarks.peers", "--peak", f"--precision={args.precision}"]
    if args.quick:
        command.append("--peak-size=1024")
    return run_worker(command, worker_env(args.env), timeout=min(600.0, args.timeout), runner=runner)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_benchmark(
    args: argparse.Namespace,
    runner: Runner = subprocess.run,
    installed: Callable[[str], bool] = is_installed,
    after_round: Callable[[dict[str, Any], int], None] = lambda measured, rounds: None,
) -> dict[str, Any]:
    """All measurements: ``{"peers": {peer: {"status", "runs": [...], "error"?}}, "peak": {...}}``.

    Rounds rotate the peers' order; round r trains every peer with seed ``args.seed + r``. A peer that fails once
    is not run again (it is reported with its error). ``after_round(measured, rounds_done)`` is called after each
    round but the last, so that a run stopped from outside keeps the rounds it finished."""
    peers: dict[str, dict[str, Any]] = {}
    for peer in args.peers:
        peers[peer] = {"status": "ok", "runs": []} if installed(peer) else {"status": "skipped", "error": NOT_INSTALLED}
    active = [p for p in args.peers if peers[p]["status"] == "ok"]
    peak = measure_peak(args, runner) if active else {"status": "skipped"}
    env = worker_env(args.env)
    for r in range(args.repeat):
        order = active[r % len(active) :] + active[: r % len(active)] if active else []
        for peer in order:
            if peers[peer]["status"] != "ok":
                continue
            result = run_worker(worker_command(peer, args, args.seed + r), env, args.timeout, runner)
            if result["status"] == "ok":
                peers[peer]["runs"].append(result)
                log(f"[round {r + 1}/{args.repeat}] {peer}: {result['examples_per_second']:,.0f} examples/s")
            else:
                peers[peer].update(status="failed", error=result["error"])
                log(f"[round {r + 1}/{args.repeat}] {peer}: failed: {result['error']}")
        if r + 1 < args.repeat:
            after_round({"peers": peers, "peak": peak}, r + 1)
    return {"peers": peers, "peak": peak}


# --- summary and table -------------------------------------------------------------------------------------------


def summarize(measured: dict[str, Any], flops_per_example: int) -> list[dict[str, Any]]:
    """One row per peer: speeds as medians over the rounds, loss and accuracy as means over them (each round has
    its own seed), the ratio to dlfund and the fraction of the matmul peak."""
    peak = measured["peak"].get("peak_gflops") if measured["peak"].get("status") == "ok" else None
    rows = []
    for peer, record in measured["peers"].items():
        row: dict[str, Any] = {"peer": peer, "status": record["status"], "error": record.get("error")}
        runs = record.get("runs") or []
        if record["status"] == "ok" and not runs:
            row.update(status="failed", error="no measurement")
        if row["status"] == "ok":
            rates = [run["examples_per_second"] for run in runs]
            median = statistics.median(rates)
            row.update(
                examples_per_second=median,
                min=min(rates),
                max=max(rates),
                rounds=len(rates),
                first_call_seconds=statistics.median(run["first_call_seconds"] for run in runs),
                warm_seconds=statistics.median(run["warm_seconds"] for run in runs),
                warm_compile_seconds=_median_known(run.get("warm_compile_seconds") for run in runs),
                final_loss=statistics.mean(run["final_loss"] for run in runs),
                test_accuracy=statistics.mean(run["test_accuracy"] for run in runs),
                accuracy_min=min(run["test_accuracy"] for run in runs),
                accuracy_max=max(run["test_accuracy"] for run in runs),
                peak_fraction=median * flops_per_example / (peak * 1e9) if peak else None,
                notes=sorted({note for run in runs for note in run.get("notes", [])}),
                data_source=runs[-1].get("data_source"),
            )
        rows.append(row)
    base = next((r for r in rows if r["peer"] == "dlfund" and r["status"] == "ok"), None)
    for row in rows:
        if row["status"] != "ok":
            continue
        compiling = row["warm_compile_seconds"]
        if compiling is not None and compiling > COMPILE_NOTE_FRACTION * row["warm_seconds"]:
            row["notes"].append(f"the timed call compiles again: {compiling:.2f} s of XLA compilation")
        row["vs_dlfund"] = row["examples_per_second"] / base["examples_per_second"] if base else None
        if base and row is not base and _accuracy_differs(row, base):
            relation = "<" if row["test_accuracy"] < base["test_accuracy"] else ">"
            row["notes"].append(
                f"test accuracy {row['test_accuracy']:.3f} {relation} dlfund's {base['test_accuracy']:.3f}"
            )
    return rows


def _median_known(values) -> float | None:
    """The median of the values that are not None (a PyTorch worker reports no XLA compilation), or None."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _accuracy_differs(row: dict[str, Any], base: dict[str, Any]) -> bool:
    """Whether a peer's mean test accuracy is more than ACCURACY_SLACK from dlfund's (either way: dlfund must not
    win by not learning either) and their ranges over the seeds do not overlap (seed-to-seed spread is not a
    difference between the toolkits)."""
    apart = abs(row["test_accuracy"] - base["test_accuracy"]) > ACCURACY_SLACK
    return apart and (row["accuracy_min"] > base["accuracy_max"] or row["accuracy_max"] < base["accuracy_min"])


def _accuracy_cell(row: dict[str, Any]) -> str:
    mean, low, high = row["test_accuracy"], row["accuracy_min"], row["accuracy_max"]
    return f"{mean:.3f}" if row["rounds"] == 1 else f"{mean:.3f} ({low:.3f}-{high:.3f})"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def format_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of :func:`summarize`'s rows; failed and skipped peers keep their row, with the reason."""
    header = (
        "| peer | examples/s median (min-max) | vs dlfund | % of peak FLOP/s | first call s | warm call s "
        "| final loss | test acc (range) | notes |"
    )
    lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
    for row in rows:
        if row["status"] == "ok":
            ratio = "" if row.get("vs_dlfund") is None else f"{row['vs_dlfund']:.2f}x"
            fraction = "n/a" if row["peak_fraction"] is None else f"{100 * row['peak_fraction']:.1f}%"
            cells = [
                row["peer"],
                f"{row['examples_per_second']:,.0f} ({row['min']:,.0f}-{row['max']:,.0f})",
                ratio,
                fraction,
                f"{row['first_call_seconds']:.2f}",
                f"{row['warm_seconds']:.2f}",
                f"{row['final_loss']:.4f}",
                _accuracy_cell(row),
                "; ".join(row["notes"]),
            ]
        else:
            reason = row["error"] if row["status"] == "skipped" else f"failed: {row['error']}"
            if len(reason) > 200:
                reason = reason[:197] + "..."
            cells = [row["peer"], reason, "", "", "", "", "", "", ""]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


# --- machine, versions, files ------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    if found["dlfund"] == "not installed":  # run from a checkout without pip install (the lent GPU machine)
        match = re.search(r'__version__ = "([^"]+)"', (ROOT / "dlfund" / "_version.py").read_text())
        found["dlfund"] = f"{match.group(1)} (checkout)" if match else found["dlfund"]
    return found


def machine() -> dict[str, Any]:
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform()}


def accelerator(peak: dict[str, Any]) -> str | None:
    """The accelerator JAX trained on (from the peak measurement, or ``--peak-device`` with a given peak), or None
    on CPU or when unknown."""
    return peak.get("device") if peak.get("backend") not in (None, "cpu") else None


def section_title(args: argparse.Namespace, device: str | None = None) -> str:
    """The RESULTS.md heading of this configuration; ``device`` names an accelerator, so that a GPU's tables sit
    beside the CPU's instead of replacing them."""
    title = f"{args.task}, data={args.data}, {args.epochs} epochs, {args.train_size} training examples"
    if device:
        title += f", {device}"
    if args.precision != "float32":
        title += f", {args.precision}"
    if any(p in STRATEGY_PEERS for p in args.peers):
        title += ", dlfund epoch strategies"  # not the peer table of this configuration: a section of its own
    return title + "".join(f", {item}" for item in args.env)  # a variant (an XLA flag, say) gets its own section


def describe(args: argparse.Namespace, report: dict[str, Any]) -> str:
    """The lines above the table: configuration, data, machine, device, versions, peak."""
    peak = report["peak"].get("peak_gflops")
    device = accelerator(report["peak"])
    backend = report["peak"].get("backend")
    on = f"; JAX's device: {device}" + (f" ({backend})" if backend != "given" else "") if device else ""
    sources = {row.get("data_source") for row in report["rows"] if row.get("data_source")}
    v = report["versions"]
    return "\n".join(
        [
            f"- date: {report['date']}; command: `{report['command']}`",
            f"- task {args.task}: Adam {workloads.LEARNING_RATE:g}, batch {workloads.BATCH}, {args.epochs} epochs of "
            f"{args.train_size} examples, test {args.test_size}, {args.precision}; "
            f"data: {', '.join(sorted(sources)) or args.data}",
            f"- machine: {report['machine']['cpu']}, {report['machine']['cores']} cores{on}; {args.precision} "
            "matmul peak "
            + (f"{peak:,.0f} GFLOP/s" if peak else "not measured")
            + f"; model: {report['train_flops_per_example'] / 1e6:.2f} MFLOP per training example",
            "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
            f"- {_rounds(args, report)} (one per round); each "
            "measurement a fresh process, warm "
            "(second) call timed; examples/s: median (min-max); final loss and test accuracy: mean (range) over "
            "the rounds' seeds",
        ]
    )


def _rounds(args: argparse.Namespace, report: dict[str, Any]) -> str:
    """The rounds and their seeds, e.g. '3 round(s), seeds 0-2' or, mid-run, '1 of 3 rounds (written mid-run),
    seeds 0-0'."""
    done = report.get("rounds_done", args.repeat)
    rounds = f"{args.repeat} round(s)" if done == args.repeat else f"{done} of {args.repeat} rounds (written mid-run)"
    return f"{rounds}, seeds {args.seed}-{args.seed + done - 1}"


def update_results_md(existing: str | None, title: str, body: str) -> str:
    """The Markdown file with the section ``## {title}`` replaced by ``body`` (or appended if new); other
    sections are kept as they were."""
    intro = (
        "# Peer benchmark results\n\nWritten by `python -m benchmarks.run ... --results-md`; one section per "
        "configuration, replaced when that configuration is measured again.\n"
    )
    text = existing if existing and existing.strip() else intro
    heading = f"## {title}"
    sections, current = [], []
    for line in text.splitlines():
        if line.startswith("## ") and current:
            sections.append(current)
            current = []
        current.append(line)
    sections.append(current)
    new = [heading, "", body.strip(), ""]
    replaced = False
    for i, lines in enumerate(sections):
        if lines and lines[0].strip() == heading:
            sections[i], replaced = new, True
    if not replaced:
        if sections[-1] and sections[-1][-1].strip():
            sections[-1].append("")
        sections.append(new)
    return "\n".join(line for lines in sections for line in lines).rstrip() + "\n"


def main(argv: Sequence[str] | None = None, runner: Runner = subprocess.run) -> dict[str, Any]:
    args = parse_args(argv)
    image_shape = workloads.DATASETS[args.data]["image_shape"]
    flops = workloads.train_flops_per_example(args.task, image_shape)
    command = "python -m benchmarks.run " + " ".join(sys.argv[1:] if argv is None else argv)

    def write(measured: dict[str, Any], rounds_done: int) -> tuple[dict[str, Any], str, str]:
        """The report of the rounds done so far, written to --json and --results-md; (report, title, text)."""
        rows = summarize(measured, flops)
        report = {
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": command,
            "args": {k: v for k, v in vars(args).items()},
            "machine": machine(),
            "versions": versions(),
            "train_flops_per_example": flops,
            "peak": measured["peak"],
            "rounds_done": rounds_done,
            "rows": rows,
            "raw": measured["peers"],
        }
        text = describe(args, report) + "\n\n" + format_table(rows)
        title = section_title(args, accelerator(measured["peak"]))
        if args.json_path:
            Path(args.json_path).write_text(json.dumps(report, indent=2) + "\n")
        if args.results_md:
            path = Path(args.results_md)
            path.write_text(update_results_md(path.read_text() if path.exists() else None, title, text))
        return report, title, text

    measured = run_benchmark(args, runner, after_round=write)
    report, title, text = write(measured, args.repeat)
    print(f"## {title}\n\n{text}")
    return report


if __name__ == "__main__":
    main()
