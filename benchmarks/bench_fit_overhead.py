"""What one ``dlfund.fit`` call costs on the host before the device trains: its checks, state and placement.

On a GPU these costs are not hidden behind compute: the benchmark MLP's three epochs take ~0.12 s on an H200
(``benchmarks/RESULTS.md``), so every 10 ms of host work before the first epoch is ~8% of a short call. Workload:
60,000 synthetic MNIST-shaped examples (float32 [60000, 784] in [0, 1), integer labels), the benchmark MLP.

Rows (ms, median of ``--repeat``):
  range, two NumPy reductions:   ``(x.min(), x.max())``, the input check before 2026-12-04
  range, checks.min_max:          the same values from row blocks reduced on threads
  checks.as_split_with_range:     the whole input check (types, lengths, NaN/Inf via the range)
  plan_fit:                       everything before training: checks, state, placement on the device, strategy
  model construction:             the benchmark MLP built (inside plan_fit's row and both whole calls)
  jax.device_put of x, y:         the placement's copy alone (host to device; a copy on XLA:CPU too)
  fit, warm call:                 the peer suite's ``dlfund`` worker, 3 epochs (``--calls`` timed calls)
  jax-scan, warm call:            the suite's hand-written whole-epoch scan, the same 3 epochs
The last two rows' difference is what ``fit`` costs beyond the scan; the rows above it say where it can come from.
Then a timeline of a warm ``fit`` call in the notebook regime (bench_fit.py's W2: the MLP 64-128-10, batch 32, 20
epochs over digits' 1,294 training examples, here standardized synthetic data of that shape, so that no dataset
is needed; the compiled epochs take ~40 ms): the model's construction, ``plan_fit``, the host work before and after
the compiled call, and the call itself (median gaps between marks, ``--calls`` x 7 calls).
On an accelerator the script runs unchanged (the next device call should run it: the H200's 3-epoch MLP call
was ~40 ms slower than the scan's, unattributed).

Run: ``.venv/bin/python -m benchmarks.bench_fit_overhead [--repeat 15] [--calls 3]`` (~1 minute on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import time

import numpy as np


def median_ms(call, repeat: int) -> float:
    call()  # warm: first-touch page faults, compilation of anything plan_fit compiles
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="timed calls per row (default 15)")
    parser.add_argument("--calls", type=int, default=3, help="timed whole fit / scan calls (default 3)")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args(argv)

    import jax

    from benchmarks import peers_jax
    from dlfund.train import checks
    from dlfund.train.options import FitConfig

    fit = importlib.import_module("dlfund.train.fit")  # the module; dlfund.train.fit is the function
    rng = np.random.default_rng(0)
    x = rng.random((60_000, 784), dtype=np.float32)
    y = rng.integers(0, 10, 60_000)

    def plan():
        model = peers_jax.dlfund_model("mlp", (784,), 0)
        options = FitConfig(epochs=3, batch_size=128, progress=False, optimizer="adam", learning_rate=1e-3)
        planned = fit.plan_fit(model, (x, y), options)
        jax.block_until_ready(planned.train)  # the placement's copy is part of the cost

    rows = {
        "range, two NumPy reductions": lambda: (x.min().item(), x.max().item()),
        "range, checks.min_max": lambda: checks.min_max(x),
        "checks.as_split_with_range": lambda: checks.as_split_with_range("train", (x, y)),
        "plan_fit": plan,
        "model construction": lambda: peers_jax.dlfund_model("mlp", (784,), 0),
        "jax.device_put of x, y": lambda: jax.block_until_ready(jax.device_put((x, y))),
    }
    whole_calls = {  # each returns its final loss as a Python float: the device has finished
        "fit, warm call": lambda: peers_jax.train_dlfund("mlp", (x, y), 3, 0),
        "jax-scan, warm call": lambda: peers_jax.train_jax_scan("mlp", (x, y), 3, 0),
    }
    print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}, {os.cpu_count()} CPUs")
    results = {}
    for name, call, repeat in [
        *((n, c, args.repeat) for n, c in rows.items()),
        *((n, c, args.calls) for n, c in whole_calls.items()),
    ]:
        results[name] = median_ms(call, repeat)
        print(f"{name:32s} {results[name]:8.1f} ms")
    results["fit minus jax-scan"] = results["fit, warm call"] - results["jax-scan, warm call"]
    print(f"{'fit minus jax-scan':32s} {results['fit minus jax-scan']:8.1f} ms")
    if args.json:  # written now too: the rows survive a failure below
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    print("warm W2-shaped fit call (MLP 64-128-10, 20 epochs), ms between marks:")
    phases = timeline(args.calls)
    for label, ms in phases.items():
        print(f"  {label:40s} {ms:7.2f}")
    results["W2 timeline"] = phases
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


def timeline(calls: int) -> dict[str, float]:
    """Median ms between marks of a warm W2 ``fit`` call: the phases are wrapped in place, only for this."""
    import functools

    from flax import nnx

    import dlfund

    fit_module = importlib.import_module("dlfund.train.fit")
    loop_module = importlib.import_module("dlfund.train.loop")
    marks: list[tuple[str, float]] = []
    originals: list[tuple[object, str, object]] = []

    def marked(owner, name: str) -> None:
        original = getattr(owner, name)
        originals.append((owner, name, original))

        @functools.wraps(original)
        def wrapper(*args, **kwargs):
            marks.append((f"{name} starts", time.perf_counter()))
            try:
                return original(*args, **kwargs)
            finally:
                marks.append((f"{name} ends", time.perf_counter()))

        setattr(owner, name, wrapper)

    marked(fit_module, "plan_fit")
    marked(loop_module, "run_epochs")  # dispatches the compiled epochs (asynchronously)
    marked(fit_module.jax, "device_get")  # waits for them: the compiled call's time
    rng = np.random.default_rng(1)
    train = (rng.standard_normal((1294, 64), dtype=np.float32), rng.integers(0, 10, 1294).astype(np.int32))

    def call() -> list[tuple[str, float]]:
        marks.clear()
        marks.append(("call", time.perf_counter()))
        model = dlfund.models.MLP(64, (128,), 10, rngs=nnx.Rngs(0))
        marks.append(("model built", time.perf_counter()))
        dlfund.fit(model, train, epochs=20, batch_size=32, progress=False, metrics=())
        marks.append(("fit returns", time.perf_counter()))
        return list(marks)

    try:
        for _ in range(3):  # compile, then warm
            call()
        runs = [call() for _ in range(7 * calls)]
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)
    phases = {}
    for i in range(1, len(runs[0])):
        label = f"{runs[0][i - 1][0]} -> {runs[0][i][0]}"
        phases[label] = 1e3 * statistics.median(run[i][1] - run[i - 1][1] for run in runs)
    phases["whole call"] = 1e3 * statistics.median(run[-1][1] - run[0][1] for run in runs)
    return phases


if __name__ == "__main__":
    main()
