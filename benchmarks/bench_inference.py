"""Inference on many different example counts: ``dlfund.predict`` and ``dlfund.evaluate`` (which pad the count so
that counts share compiled programs) next to the same calls with the padding rule swapped for the one before it
(no padding: one program per count).

Workload: the README's small CNN (``dlfund.models.build("cnn", (8, 8, 1), 10)``), counts 1, 2, ..., 64 (each
once, in order: a notebook that predicts on whatever it has), then the same counts again (all warm). The first
pass is what a user meets; the second shows the padded path's cost when nothing compiles (up to twice the rows
below 1024).

Run: ``.venv/bin/python -m benchmarks.bench_inference`` (about 3 minutes on 2 CPU cores, most of it the unpadded
path compiling); ``--counts N`` for 1..N.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from flax import nnx


def _unpadded_rows(state, batch_size: int, num_examples: int) -> tuple[int, int]:
    """The rule before padding: batches of ``min(batch_size, N)`` rows and no extra rows, so each count is a shape
    of its own (swapped in for :func:`dlfund.train.evaluation.padded_rows`: everything else is the same call)."""
    from dlfund.train import evaluation

    return evaluation.eval_batch_size(state, batch_size, num_examples), num_examples


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, default=64, help="counts 1..N (default 64)")
    args = parser.parse_args(argv)

    import jax

    import dlfund
    from dlfund import models
    from dlfund.train import evaluation

    model = models.build("cnn", (8, 8, 1), 10, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    data = {
        n: (rng.normal(size=(n, 8, 8, 1)).astype(np.float32), rng.integers(0, 10, n)) for n in range(1, args.counts + 1)
    }
    metrics = ("loss", "accuracy")
    peers = {
        "dlfund.predict (padded)": lambda x, y: dlfund.predict(model, x),
        "dlfund.predict, unpadded": lambda x, y: dlfund.predict(model, x),
        "dlfund.evaluate (padded)": lambda x, y: dlfund.evaluate(model, (x, y), metrics=metrics),
        "dlfund.evaluate, unpadded": lambda x, y: dlfund.evaluate(model, (x, y), metrics=metrics),
    }
    padded_rows = evaluation.padded_rows
    caches = {"predict": evaluation.predict_arrays, "evaluate": evaluation.evaluate_arrays}
    print(f"counts 1..{args.counts}, {jax.devices()[0].platform}, jax {jax.__version__}")
    print(f"{'peer':28s} {'first pass s':>12s} {'warm pass s':>12s} {'programs':>9s}")
    for name, call in peers.items():
        cache = caches["predict" if "predict" in name else "evaluate"]
        cache.clear_cache()  # no peer reuses another's programs
        before = cache._cache_size()
        evaluation.padded_rows = _unpadded_rows if "unpadded" in name else padded_rows
        passes = []
        try:
            for _ in range(2):
                start = time.perf_counter()
                for x, y in data.values():
                    call(x, y)
                passes.append(time.perf_counter() - start)
        finally:
            evaluation.padded_rows = padded_rows
        print(f"{name:28s} {passes[0]:12.2f} {passes[1]:12.3f} {cache._cache_size() - before:9d}")


if __name__ == "__main__":
    main()
