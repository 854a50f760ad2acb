"""What several devices, FSDP, gradient accumulation and bfloat16 cost and save, measured with ``dlfund.fit``.

On this machine the devices are virtual: ``--xla_force_host_platform_device_count=8`` splits one CPU into 8 XLA
devices that share its 2 cores, so a data-parallel step cannot run faster than on one device; what these numbers
show is the price of the communication and partitioning that a real multi-device run pays (all-reduces of the
gradients, FSDP's gathers), not a speed-up. On a GPU/TPU box the same script measures the real thing.

Parts (each timing: the median (min, max) of ``--rounds`` warm whole ``fit`` calls, after one call that compiles):
  P1 devices: MLP 784-512-512-10, Adam, batch 256, 3 epochs of 8,192 synthetic MNIST-shaped examples, on 1 device
     and with data parallelism and FSDP on all devices; examples/s and the ratio to 1 device.
  P2 data layout: the same run's data replicated on every device (what ``fit`` does: each device gathers its share
     of a batch from its own copy) against the data split over the devices (each step's random gather then moves
     examples between devices).
  P3 FSDP memory: per-device bytes of the train step's arguments (weights, optimizer state, batch) from
     ``compiled.memory_analysis()``, data parallelism vs FSDP.
  P4 accumulation: the train step's scratch memory (``temp_size_in_bytes``) for a batch of 8,192 in k = 1, 2, 4, 8
     micro-batches (MLP 12-512-512-4), and the time of 3 epochs with each.
  P5 precision: P1's MLP on one device in float32 and bfloat16.

Run: ``.venv/bin/python benchmarks/bench_parallel.py`` (about 3 minutes on 2 CPU cores); ``--quick`` for a smoke run;
``--json PATH`` writes the numbers. The script asks XLA for 8 host devices unless ``XLA_FLAGS`` is already set.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import argparse
import json
import statistics
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

import dlfund
from dlfund.train import devices as devices_lib
from dlfund.train.fit import plan_fit, train_planned
from dlfund.train.options import FitConfig
from dlfund.train.state import create_train_state
from dlfund.train.step import train_step


def mnist_like(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(10, 784)).astype(np.float32)
    y = rng.integers(0, 10, size=n).astype(np.int32)
    return (centers[y] + rng.normal(size=(n, 784)).astype(np.float32)) / 2, y


def mlp(sizes=(784, 512, 512, 10), seed=0):
    return dlfund.models.MLP(sizes[0], sizes[1:-1], sizes[-1], rngs=nnx.Rngs(seed))


def median_of(fn, rounds: int):
    fn()  # compiles
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), max(times)


def row(name, seconds, examples, reference=None):
    med, lo, hi = seconds
    ratio = "" if reference is None else f"{reference / med:.2f}x"
    print(f"  {name:<34} {examples / med:>10,.0f} ex/s   {med:7.3f} s ({lo:.3f}-{hi:.3f})  {ratio}")
    return {"name": name, "median_s": med, "min_s": lo, "max_s": hi, "examples_per_s": examples / med}


def p1_devices(data, options, rounds, out):
    print(f"P1 devices ({jax.device_count()} visible):")
    examples = (len(data[0]) // options["batch_size"]) * options["batch_size"] * options["epochs"]
    results, reference = [], None
    for name, extra in (
        ("1 device", dict(devices=1)),
        (f"{jax.device_count()} devices, data", dict(parallelism="data")),
        (f"{jax.device_count()} devices, fsdp", dict(parallelism="fsdp")),
    ):
        seconds = median_of(lambda extra=extra: dlfund.fit(mlp(), data, **options, **extra), rounds)
        reference = reference or seconds[0]
        results.append(row(name, seconds, examples, reference))
    print("  (ratio: the 1-device time over this one; above 1 is faster)")
    out["P1"] = results


def p2_layout(data, options, rounds, out):
    print("P2 data layout (all devices, data parallelism):")
    examples = (len(data[0]) // options["batch_size"]) * options["batch_size"] * options["epochs"]
    results, reference = [], None
    for name, split in (("replicated (fit's choice)", False), ("split over the devices", True)):

        def call(split=split):
            plan = plan_fit(mlp(), data, FitConfig.of(**options))
            if split:
                layout = plan.state.layout
                plan.train = jax.device_put(plan.train, NamedSharding(layout.mesh, PartitionSpec("data")))
            return train_planned(plan)

        seconds = median_of(call, rounds)
        reference = reference or seconds[0]
        results.append(row(name, seconds, examples, reference))
    out["P2"] = results


def p3_fsdp_memory(out):
    print("P3 FSDP memory per device (train step arguments, from compiled.memory_analysis()):")
    model = mlp()
    x, y = jnp.zeros((256, 784)), jnp.zeros((256,), jnp.int32)
    results = {}
    for parallelism in ("data", "fsdp"):
        layout = devices_lib.resolve_layout("auto", parallelism)
        state = create_train_state(model, key=jax.random.key(0), layout=layout)
        analysis = train_step.lower(state, (x, y)).compile().memory_analysis()
        weights = sum(
            leaf.addressable_shards[0].data.nbytes for leaf in jax.tree.leaves((state.params, state.opt_state))
        )
        results[parallelism] = {"argument_bytes": analysis.argument_size_in_bytes, "weights_bytes_per_device": weights}
        print(
            f"  {parallelism:<5} arguments {analysis.argument_size_in_bytes / 2**20:6.2f} MiB, weights + Adam "
            f"moments on one device {weights / 2**20:6.2f} MiB"
        )
    out["P3"] = results


def p4_accumulation(rounds, out):
    print("P4 gradient accumulation (MLP 12-512-512-4, batch 8192, one device):")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8192 * 4, 12)).astype(np.float32)
    y = rng.integers(0, 4, size=len(x)).astype(np.int32)
    model = mlp((12, 512, 512, 4))
    results = []
    for k in (1, 2, 4, 8):
        state = create_train_state(model, key=jax.random.key(0), accumulate_steps=k)
        batch = (jnp.zeros((8192, 12)), jnp.zeros((8192,), jnp.int32))
        temp = train_step.lower(state, batch).compile().memory_analysis().temp_size_in_bytes
        options = dict(epochs=3, batch_size=8192, accumulate_steps=k, devices=1, progress=False)
        seconds = median_of(lambda options=options: dlfund.fit(mlp((12, 512, 512, 4)), (x, y), **options), rounds)
        results.append({"k": k, "temp_bytes": temp, "median_s": seconds[0]})
        print(
            f"  k={k}: scratch {temp / 2**20:6.1f} MiB, 3 epochs {seconds[0]:.3f} s ({seconds[1]:.3f}-{seconds[2]:.3f})"
        )
    out["P4"] = results


def p5_precision(data, options, rounds, out):
    print(f"P5 precision (one {jax.devices()[0].platform} device):")
    examples = (len(data[0]) // options["batch_size"]) * options["batch_size"] * options["epochs"]
    results, reference = [], None
    for precision in ("float32", "bfloat16"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the CPU note: this is what it is about
            seconds = median_of(
                lambda precision=precision: dlfund.fit(mlp(), data, devices=1, precision=precision, **options), rounds
            )
        reference = reference or seconds[0]
        results.append(row(precision, seconds, examples, reference))
    out["P5"] = results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny settings: a smoke run")
    parser.add_argument("--json", type=str, default=None)
    args = parser.parse_args()
    n = 1024 if args.quick else 8192
    rounds = 1 if args.quick else args.rounds
    data = mnist_like(n)
    options = dict(epochs=1 if args.quick else 3, batch_size=256, progress=False)
    print(
        f"jax {jax.__version__}, backend {jax.default_backend()}, {jax.device_count()} devices, {os.cpu_count()} CPUs"
    )
    out: dict = {"jax": jax.__version__, "backend": jax.default_backend(), "devices": jax.device_count()}
    p1_devices(data, options, rounds, out)
    p2_layout(data, options, rounds, out)
    p3_fsdp_memory(out)
    p4_accumulation(rounds, out)
    p5_precision(data, options, rounds, out)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
