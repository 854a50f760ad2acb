"""Throughput of ``dlfund.fit`` on the issue's benchmark CNN next to a hand-written Flax loop, in one process.

CNN: conv 32 3x3 SAME -> ReLU -> maxpool 2 -> conv 64 3x3 SAME -> ReLU -> maxpool 2 -> dense 128 -> dense 10;
Adam 1e-3, batch 128, synthetic MNIST-shaped data (28x28x1). Peer: a Flax NNX model split once into graph and
state, and a ``jax.jit`` train step per batch (merge inside) fed with NumPy batches — the fastest hand-written Flax
style measured here (see STACK.md). dlfund runs with ``execution="auto"`` (on CPU: "chunk", 8 steps unrolled per
call) and, for the record, with every other strategy.

Rounds alternate between the peers; medians are reported. Run:
``.venv/bin/python benchmarks/bench_cnn.py`` (about 3 minutes on 2 CPU cores); ``--quick`` for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import numpy as np
import optax
from flax import nnx

import dlfund

BATCH = 128


def data(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, size=n).astype(np.int32)
    return x, y


class FlaxCNN(nnx.Module):
    def __init__(self, rngs):
        self.conv1 = nnx.Conv(1, 32, (3, 3), padding="SAME", rngs=rngs)
        self.conv2 = nnx.Conv(32, 64, (3, 3), padding="SAME", rngs=rngs)
        self.dense1 = nnx.Linear(7 * 7 * 64, 128, rngs=rngs)
        self.dense2 = nnx.Linear(128, 10, rngs=rngs)

    def __call__(self, x):
        x = nnx.max_pool(jax.nn.relu(self.conv1(x)), (2, 2), (2, 2))
        x = nnx.max_pool(jax.nn.relu(self.conv2(x)), (2, 2), (2, 2))
        return self.dense2(jax.nn.relu(self.dense1(x.reshape(x.shape[0], -1))))


TX = optax.adam(1e-3)


def run_flax(train, epochs, seed):
    graphdef, params = nnx.split(FlaxCNN(nnx.Rngs(seed)))
    opt_state = TX.init(params)

    @jax.jit
    def step(params, opt_state, x, y):
        def loss_fn(p):
            logits = nnx.merge(graphdef, p)(x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = TX.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    x, y = train
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for i in range(len(x) // BATCH):
            idx = order[i * BATCH : (i + 1) * BATCH]
            params, opt_state, loss = step(params, opt_state, x[idx], y[idx])
    jax.block_until_ready(loss)


def run_dlfund(train, epochs, seed, execution="auto"):
    model = dlfund.models.CNN(
        (28, 28, 1), channels=(32, 64), kernel_size=3, pool=2, dense=(128,), num_classes=10, rngs=nnx.Rngs(seed)
    )
    result = dlfund.fit(
        model, train, epochs=epochs, batch_size=BATCH, seed=seed, metrics=(), progress=False, execution=execution
    )
    return result.execution


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=6400, help="training examples per epoch")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, rounds = (1280, 2) if args.quick else (args.examples, args.rounds)
    train = data(n)
    examples = (n // BATCH) * BATCH
    print(json.dumps({"jax": jax.__version__, "backend": jax.default_backend(), "examples_per_epoch": examples}))
    auto = run_dlfund(train, 1, 0)  # compile everything once
    run_flax(train, 1, 0)
    times = {"flax-jit-per-batch": [], f"dlfund.fit ({auto})": []}
    for r in range(rounds):
        times["flax-jit-per-batch"].append(timed(run_flax, train, 1, r))
        times[f"dlfund.fit ({auto})"].append(timed(run_dlfund, train, 1, r))
    rate = {k: examples / statistics.median(v) for k, v in times.items()}
    others = {}
    for strategy in ("loop", "scan"):  # one timed epoch each, after a compiling one
        small = (train[0][: examples // 4], train[1][: examples // 4]) if strategy == "scan" else train
        run_dlfund(small, 1, 0, strategy)
        others[strategy] = round((len(small[0]) // BATCH) * BATCH / timed(run_dlfund, small, 1, 1, strategy))
    print(
        json.dumps(
            {
                "examples_per_second": {k: round(v) for k, v in rate.items()},
                "dlfund_vs_flax": round(rate[f"dlfund.fit ({auto})"] / rate["flax-jit-per-batch"], 2),
                "dlfund_other_strategies_examples_per_second": others,
            }
        )
    )


if __name__ == "__main__":
    main()
