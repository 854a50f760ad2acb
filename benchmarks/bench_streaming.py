"""Streamed vs device-resident training data: examples/s of ``dlfund.fit`` on a synthetic CIFAR-shaped set.

The same model and seed train once with the data placed on the device (``data_placement="device"``) and once
streamed from host memory by the background reader thread (``data_placement="stream"``), alternating over rounds;
medians are reported. Two models: an MLP 3072-512-10 (cheap steps: the hardest case for streaming, each batch
must be read and transferred in ~1 ms) and a small CNN (conv 32, conv 64, dense 128: the usual image workload).

Run: ``.venv/bin/python benchmarks/bench_streaming.py`` (about 2 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import numpy as np
from flax import nnx

import dlfund


def cifar_like(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, 10, size=n).astype(np.int32)
    return x, y


MODELS = {
    "MLP 3072-512-10": lambda: dlfund.models.MLP(3072, (512,), 10, rngs=nnx.Rngs(0)),
    "CNN 32-64-128": lambda: dlfund.models.CNN((32, 32, 3), channels=(32, 64), dense=(128,), rngs=nnx.Rngs(0)),
}


def run(make_model, data, placement, epochs=1):
    start = time.perf_counter()
    result = dlfund.fit(
        make_model(), data, epochs=epochs, batch_size=128, metrics=(), progress=False, data_placement=placement
    )
    return time.perf_counter() - start, result.execution


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps({"jax": jax.__version__, "backend": jax.default_backend()}))
    for name, make_model in MODELS.items():
        n = 12_800 if name.startswith("MLP") else 2_560
        data = cifar_like(n)
        strategies = {p: run(make_model, data, p)[1] for p in ("device", "stream")}  # compile once
        times = {"device": [], "stream": []}
        for _ in range(args.rounds):
            for placement in times:
                times[placement].append(run(make_model, data, placement)[0])
        rate = {p: n // 128 * 128 / statistics.median(t) for p, t in times.items()}
        print(
            json.dumps(
                {
                    "model": name,
                    "examples": n,
                    "execution": strategies,
                    "examples_per_second": {p: round(r) for p, r in rate.items()},
                    "stream_vs_device": round(rate["stream"] / rate["device"], 3),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
