"""One measurement of one peer, in a fresh process: ``benchmarks/run.py`` starts this module once per measurement.

Run: ``.venv/bin/python -m benchmarks.peers PEER --task mlp --data synth --epochs 3`` (from the repository root).
It builds the task's data, then calls the peer's training function twice, each call timed as a whole (model
construction, data transfer and training, until the final loss is on the host): the first call compiles, the
second is the warm call a user re-running a notebook cell sees. It evaluates test accuracy (not timed) and prints
one line ``BENCH_RESULT {json}`` on stdout. ``--peak`` instead measures the default device's matmul FLOP/s in
``--precision`` (float32 or bfloat16).

A peer is a function ``train(task, (x, y), epochs, seed, precision) -> (final_loss, predict[, notes])``:
``precision`` is one of ``workloads.PRECISIONS``; ``final_loss`` is the mean training loss of the last epoch,
``predict(x)`` returns logits (NumPy), ``notes`` are strings for the table (e.g. which optimizer kernel ran).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time

import numpy as np

from benchmarks import workloads

#: peer name -> (module, function). Modules are imported only by the process that runs the peer, so that a
#: PyTorch measurement never loads JAX's runtime and vice versa.
PEERS = {
    "dlfund": ("benchmarks.peers_jax", "train_dlfund"),
    "dlfund-scan": ("benchmarks.peers_jax", "train_dlfund_scan"),
    "dlfund-chunk": ("benchmarks.peers_jax", "train_dlfund_chunk"),
    "dlfund-loop": ("benchmarks.peers_jax", "train_dlfund_loop"),
    "flax-nnx-jit": ("benchmarks.peers_jax", "train_flax_nnx_jit"),
    "jax-jit": ("benchmarks.peers_jax", "train_jax_jit"),
    "jax-scan": ("benchmarks.peers_jax", "train_jax_scan"),
    "keras-jax": ("benchmarks.peers_keras", "train_keras"),
    "torch-eager": ("benchmarks.peers_torch", "train_torch_eager"),
    "torch-compile": ("benchmarks.peers_torch", "train_torch_compile"),
}
RESULT_PREFIX = "BENCH_RESULT "


def load_data(data: str, n_train: int, n_test: int, seed: int = 0):
    """``(train, test, source)``: images [N, H, W, C] float32 and int32 labels. ``cifar`` uses the real CIFAR-10
    if dlfund finds it prepared on disk (never downloads), else CIFAR-shaped synthetic data; ``synth`` is always
    synthetic (MNIST-shaped). The training set is cut to whole batches, so that every peer (Keras would otherwise
    run a ragged last batch) takes the same steps on the same examples."""
    spec = workloads.DATASETS[data]
    train = test = None
    source = "synthetic"
    if data == "cifar":
        try:
            import dlfund

            ds = dlfund.data.load("cifar10", download=False, val_fraction=0.0)
            train, test, source = ds.train, ds.test, "real CIFAR-10"
            train = (train[0][:n_train], train[1][:n_train].astype(np.int32))
            test = (test[0][:n_test], test[1][:n_test].astype(np.int32))
        except Exception as error:  # not prepared on this machine (offline): say so in the result
            source = f"synthetic (no CIFAR-10 on disk: {type(error).__name__})"
            train = None
    if train is None:
        train, test = workloads.synthetic_images(spec["image_shape"], n_train, n_test)
    keep = (len(train[0]) // workloads.BATCH) * workloads.BATCH
    return (train[0][:keep], train[1][:keep]), test, source


def accuracy(predict, x: np.ndarray, y: np.ndarray, batch: int = 1000) -> float:
    correct = 0
    for i in range(0, len(x), batch):
        correct += int(np.sum(np.argmax(np.asarray(predict(x[i : i + batch])), axis=-1) == y[i : i + batch]))
    return correct / len(x)


def measure(
    peer: str, task: str, data: str, epochs: int, n_train: int, n_test: int, seed: int, precision: str = "float32"
) -> dict:
    module, name = PEERS[peer]
    train_fn = getattr(importlib.import_module(module), name)
    (x, y), (x_test, y_test), source = load_data(data, n_train, n_test)
    image_shape = x.shape[1:]
    shape = workloads.input_shape(task, image_shape)
    x, x_test = x.reshape(len(x), *shape), x_test.reshape(len(x_test), *shape)
    timings, losses = [], []
    compiles = None  # seconds of XLA compilation inside the timed (second) call; None without JAX
    for call in range(2):  # the first call compiles; the second is the measurement
        if call == 1:
            compiles = _listen_to_compilations()
        start = time.perf_counter()
        out = train_fn(task, (x, y), epochs, seed, precision)
        timings.append(time.perf_counter() - start)
        losses.append(float(out[0]))
    predict, notes = out[1], list(out[2]) if len(out) > 2 else []
    examples = (len(x) // workloads.BATCH) * workloads.BATCH * epochs
    return {
        "peer": peer,
        "task": task,
        "data": data,
        "data_source": source,
        "image_shape": list(image_shape),
        "epochs": epochs,
        "precision": precision,
        "train_examples": len(x),
        "test_examples": len(x_test),
        "examples": examples,
        "first_call_seconds": timings[0],
        "warm_seconds": timings[1],
        "examples_per_second": examples / timings[1],
        "warm_compile_seconds": None if compiles is None else sum(compiles),
        "final_loss": losses[1],
        "first_call_final_loss": losses[0],
        "test_accuracy": accuracy(predict, x_test, y_test),
        "notes": notes,
    }


def _listen_to_compilations() -> list[float] | None:
    """A list that collects the duration of every XLA compilation from now on, if this process runs JAX (a peer
    that builds a new model per call, as Keras does, compiles again inside the timed call; the table says how
    much); None in a PyTorch worker, which never imports JAX for it."""
    if "jax" not in sys.modules:
        return None
    import jax

    seconds: list[float] = []

    def record(event: str, duration: float, **_: object) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            seconds.append(duration)

    jax.monitoring.register_event_duration_secs_listener(record)
    return seconds


def peak_matmul(size: int | None = None, repeats: int = 5, precision: str = "float32") -> dict:
    """The default device's matmul FLOP/s as XLA reaches it: jitted [size, size] products in ``precision`` (XLA's
    default matmul precision, as the peers' models get), the best of ``repeats`` timings. ``size`` defaults to 2048
    on CPU and 8192 on an accelerator (smaller products leave a GPU's units idle).

    Half a second of products first (an idle GPU runs at a fraction of its clock until it has been busy a while),
    then each timing covers enough products for ~50 ms, synchronised once, so that waiting for the device costs a
    percent at most."""
    import jax
    import jax.numpy as jnp

    backend = jax.default_backend()
    size = size or (2048 if backend == "cpu" else 8192)
    dtype = jnp.dtype(precision)
    a = jax.random.normal(jax.random.key(0), (size, size), dtype)
    b = jax.random.normal(jax.random.key(1), (size, size), dtype)
    matmul = jax.jit(jnp.matmul)
    matmul(a, b).block_until_ready()  # compile
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < 0.5:
        matmul(a, b).block_until_ready()
        calls += 1
    batch = max(1, round(0.05 / ((time.perf_counter() - start) / calls)))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(batch):
            out = matmul(a, b)
        out.block_until_ready()
        best = min(best, (time.perf_counter() - start) / batch)
    return {
        "peak_gflops": 2 * size**3 / best / 1e9,
        "matmul_size": size,
        "products_per_timing": batch,
        "precision": precision,
        "backend": backend,
        "device": jax.devices()[0].device_kind,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("peer", nargs="?", choices=sorted(PEERS))
    parser.add_argument("--task", choices=workloads.TASKS, default="mlp")
    parser.add_argument("--data", choices=sorted(workloads.DATASETS), default="synth")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument("--test-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", choices=workloads.PRECISIONS, default="float32")
    parser.add_argument("--peak", action="store_true", help="measure the matmul FLOP/s in --precision instead")
    parser.add_argument("--peak-size", type=int, default=None, help="default 2048 on CPU, 8192 on an accelerator")
    args = parser.parse_args(argv)
    if args.peak:
        result = peak_matmul(args.peak_size, precision=args.precision)
    elif args.peer is None:
        parser.error("give a PEER or --peak")
    else:
        spec = workloads.DATASETS[args.data]
        n_train = args.train_size or spec["train"]
        n_test = args.test_size or spec["test"]
        result = measure(args.peer, args.task, args.data, args.epochs, n_train, n_test, args.seed, args.precision)
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
