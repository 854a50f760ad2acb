"""Throughput of ``dlfund.fit`` next to two hand-written peers, interleaved in one process.

Peers:
  (a) "flax-nnx-jit": a Flax NNX loop in the style of Flax's MNIST example: ``nnx.Optimizer``, one ``nnx.jit``
      train step per batch, NumPy batches from a shuffled host array.
  (b) "jax-scan": the best hand-written JAX loop we could write: pure functions over a params dict, the whole
      epoch in one ``lax.scan`` over on-device data, state donated.

Workloads:
  W1: MLP 784-512-512-10, Adam, batch 128, synthetic MNIST-shaped data (compute-bound).
  W2: MLP 64-128-10, Adam, batch 32, scikit-learn digits (overhead-bound).
  W3: the notebook regime: W2 for 30 epochs, where ``dlfund.fit`` also validates every epoch and runs early
      stopping (patience 5, on val_loss), while the peers do neither; ``dlfund.fit[epochs_per_call=1]`` is the
      same fit reading its results back after every epoch (the loop before whole runs on the device).

Each measurement trains a fresh model for a few epochs after a warm-up run that compiles every program; rounds
cycle through the peers so that machine noise hits all of them alike; the median over rounds is reported.
``dlfund.fit`` is also timed cold (first call in the process, compilation included) and on a second call with
the same shapes (a notebook user re-running a cell), which must not compile again.

Run: ``.venv/bin/python benchmarks/bench_fit.py`` (about 2 minutes on 2 CPU cores); ``--quick`` for a smoke run.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import dlfund

# --- workloads -----------------------------------------------------------------------------------------------


def w1_data(n_train=60_000, n_test=10_000, seed=0):
    """Synthetic MNIST-shaped data with learnable structure (labels from a random linear teacher)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_train + n_test, 784)).astype(np.float32)
    teacher = rng.normal(size=(784, 10)).astype(np.float32)
    y = np.argmax(x @ teacher, axis=1).astype(np.int32)
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


def w2_data():
    ds = dlfund.data.load("digits")
    (x, y), test = ds.train, ds.test
    return (x.reshape(len(x), -1), y), (test[0].reshape(len(test[0]), -1), test[1])


def w3_validation():
    ds = dlfund.data.load("digits")
    return ds.val[0].reshape(len(ds.val[0]), -1), ds.val[1]


# patience 5 with min_delta 0: on digits val_loss still improves through epoch 30, so all 30 epochs run
NOTEBOOK = dict(early_stopping=dlfund.EarlyStopping(patience=5), metrics=("accuracy",))
WORKLOADS = {
    "W1": dict(data=w1_data, sizes=(784, 512, 512, 10), batch=128, epochs=2),
    "W2": dict(data=w2_data, sizes=(64, 128, 10), batch=32, epochs=20),
    "W3": dict(data=w2_data, sizes=(64, 128, 10), batch=32, epochs=30, fit=NOTEBOOK, validation=w3_validation),
}
LR = 1e-3


# --- peer (a): Flax NNX, nnx.jit per batch -------------------------------------------------------------------


class NNXMLP(nnx.Module):
    def __init__(self, sizes, rngs):
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in itertools.pairwise(sizes)])

    def __call__(self, x):
        for layer in self.layers[:-1]:
            x = jax.nn.relu(layer(x))
        return self.layers[-1](x)


@nnx.jit
def nnx_train_step(model, optimizer, x, y):
    def loss_fn(model):
        return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


def run_nnx(train, sizes, batch, epochs, seed, **_):
    model = NNXMLP(sizes, nnx.Rngs(seed))
    optimizer = nnx.Optimizer(model, optax.adam(LR), wrt=nnx.Param)
    x, y = train
    rng = np.random.default_rng(seed)
    steps = len(x) // batch
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for i in range(steps):
            idx = order[i * batch : (i + 1) * batch]
            loss = nnx_train_step(model, optimizer, x[idx], y[idx])
    jax.block_until_ready(loss)
    return lambda xt: np.asarray(nnx.jit(lambda m, v: m(v))(model, xt))


# --- peer (b): hand-written pure JAX, epoch in lax.scan --------------------------------------------------------


def init_params(sizes, key):
    params = []
    for a, b in itertools.pairwise(sizes):
        key, sub = jax.random.split(key)
        params.append({"w": jax.random.normal(sub, (a, b)) * jnp.sqrt(1.0 / a), "b": jnp.zeros(b)})
    return params


def mlp_apply(params, x):
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


TX = optax.adam(LR)


@functools.partial(jax.jit, static_argnames=("batch",), donate_argnums=(0, 1))
def scan_epoch(params, opt_state, x, y, key, batch):
    steps = x.shape[0] // batch
    order = jax.random.permutation(key, x.shape[0])[: steps * batch].reshape(steps, batch)

    def step(carry, idx):
        params, opt_state = carry

        def loss_fn(p):
            return optax.softmax_cross_entropy_with_integer_labels(mlp_apply(p, x[idx]), y[idx]).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = TX.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), order)
    return params, opt_state, losses


def run_scan(train, sizes, batch, epochs, seed, **_):
    params = init_params(sizes, jax.random.key(seed))
    opt_state = TX.init(params)
    x, y = jax.device_put(train[0]), jax.device_put(train[1])
    for epoch in range(epochs):
        params, opt_state, losses = scan_epoch(params, opt_state, x, y, jax.random.key(epoch), batch)
    jax.block_until_ready(losses)
    return lambda xt: np.asarray(jax.jit(mlp_apply)(params, xt))


# --- dlfund ------------------------------------------------------------------------------------------------------


def run_dlfund(train, sizes, batch, epochs, seed, **options):
    model = dlfund.models.MLP(sizes[0], sizes[1:-1], sizes[-1], rngs=nnx.Rngs(seed))
    options = {"metrics": (), **options}
    result = dlfund.fit(model, train, epochs=epochs, batch_size=batch, seed=seed, progress=False, **options)
    return lambda xt: dlfund.predict(result.model, xt)


def run_dlfund_per_epoch(train, sizes, batch, epochs, seed, **options):
    return run_dlfund(train, sizes, batch, epochs, seed, epochs_per_call=1, **options)


PEERS = {"flax-nnx-jit": run_nnx, "jax-scan": run_scan, "dlfund.fit": run_dlfund}
DLFUND = {"dlfund.fit", "dlfund.fit[epochs_per_call=1]"}


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def accuracy(predict, test):
    return float(np.mean(np.argmax(predict(test[0]), axis=-1) == test[1]))


def bench(name, spec, rounds):
    train, test = spec["data"]()
    sizes, batch, epochs = spec["sizes"], spec["batch"], spec["epochs"]
    examples = (len(train[0]) // batch) * batch * epochs
    options = dict(spec.get("fit", {}))
    if "validation" in spec:
        options["validation_data"] = spec["validation"]()
    peers = dict(PEERS)
    if "fit" in spec:
        peers["dlfund.fit[epochs_per_call=1]"] = run_dlfund_per_epoch

    def call(peer_name, seed):
        extra = options if peer_name in DLFUND else {}
        return timed(peers[peer_name], train, sizes, batch, epochs, seed, **extra)

    cold, _ = call("dlfund.fit", 0)
    second, _ = call("dlfund.fit", 0)
    for peer_name in peers:  # warm-up: compile everything once
        call(peer_name, 0)
    times = {p: [] for p in peers}
    accs = {}
    for r in range(rounds):
        for peer_name in peers:
            seconds, predict = call(peer_name, r)
            times[peer_name].append(seconds)
            accs[peer_name] = accuracy(predict, test)
    rate = {p: examples / statistics.median(t) for p, t in times.items()}
    extra = {}
    if "fit" in spec:
        extra["per_epoch_fit_vs_jax_scan"] = round(rate["dlfund.fit[epochs_per_call=1]"] / rate["jax-scan"], 3)
    return {
        **extra,
        "workload": name,
        "examples_per_epoch": examples // epochs,
        "epochs": epochs,
        "examples_per_second": {p: round(v) for p, v in rate.items()},
        "dlfund_vs_flax_nnx_jit": round(rate["dlfund.fit"] / rate["flax-nnx-jit"], 2),
        "dlfund_vs_jax_scan": round(rate["dlfund.fit"] / rate["jax-scan"], 3),
        "test_accuracy_last_round": {p: round(a, 4) for p, a in accs.items()},
        "dlfund_first_fit_seconds_incl_compile": round(cold, 3),
        "dlfund_second_fit_seconds": round(second, 3),
        "dlfund_steady_fit_seconds": round(statistics.median(times["dlfund.fit"]), 3),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--quick", action="store_true", help="2 rounds, for a smoke run")
    args = parser.parse_args()
    rounds = 2 if args.quick else args.rounds
    print(json.dumps({"jax": jax.__version__, "backend": jax.default_backend(), "devices": str(jax.devices())}))
    for name in args.workloads:
        print(json.dumps(bench(name, WORKLOADS[name], rounds)), flush=True)


if __name__ == "__main__":
    main()
