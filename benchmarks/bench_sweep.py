"""Wall time of ``dlfund.sweep`` next to sequential ``dlfund.fit`` calls and a hand-written vmapped floor.

Peers (every one trains K members, member k with learning rate lr_k and seed s_k):
  (a) "sweep[es p=5]": ``dlfund.sweep`` validating every epoch with early stopping (patience 5, on val_loss); some
      members stop early, and the vmapped program keeps computing them (frozen) until the last one stops.
      "sweep[es p=1000]": the same sweep (the same compiled program) with a patience that never fires, so every
      member runs every epoch: the like-for-like comparison with the floor.
  (b) "fits[es p=5]": K warm sequential ``dlfund.fit`` calls with the same options, one per member.
  (c) "hand-vmap": the compute floor, written from ``bench_fit.scan_epoch``: ``jax.vmap`` over the members of a
      whole run in one jitted call (``lax.scan`` over epochs of ``lax.scan`` over batches, each member's epoch
      shuffled with its own key), Adam (``optax.scale_by_adam`` scaled by each member's rate), params stacked and
      donated; no validation, no metrics, no early stopping, no result read before the end.

Workloads:
  S1/K=8: MLP 64-128-10 on scikit-learn digits, Adam, batch 32, 30 epochs, 8 learning rates
      (``np.geomspace(1e-3, 3e-2, 8)``); the sweep and the fits also compute accuracy and validate every epoch.
  S1/K=64: the same with 64 learning rates (``np.geomspace(1e-3, 3e-2, 64)``).
  S2/K=4: compute-bound: MLP 784-512-512-10, Adam, batch 128, 3 epochs, 6,000 synthetic MNIST-shaped examples
      (``bench_fit.w1_data``), 4 learning rates; no validation or metrics besides the loss (as the floor).

Each peer is called once per workload before timing (its first call compiles; that time is printed as "first
call"); rounds then cycle through the peers so that machine noise hits all of them alike; the median (min, max)
over rounds of the wall time of the whole call is reported (model construction, data placement and the read-back
of results included), with each peer's ratio to the floor and the time per member. Timed calls must not compile:
the jit caches of the sweep's, fit's and the floor's programs and a count of every XLA compilation in the process
are checked around each timed call, and a warning is printed if anything compiled. To show that nobody is faster
by not learning, the best member of each peer (by validation accuracy where there is validation, else by test
accuracy) is reported with its validation and test accuracy.

Run: ``.venv/bin/python benchmarks/bench_sweep.py`` (about 3 minutes on 2 CPU cores; ``--rounds`` to change
that); ``--quick`` for a smoke run (tiny settings, about 30 s, nearly all compiling); ``--json PATH`` writes the
numbers.
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import dlfund
from dlfund.train import loop as loop_lib
from dlfund.train import sweeps as sweeps_lib

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # bench_fit, also when run from elsewhere
from bench_fit import init_params, mlp_apply, timed, w1_data, w2_data, w3_validation

# --- compilation watch ----------------------------------------------------------------------------------------

_COMPILES = [0]


def _count_compiles(event, duration, **_):
    if event == "/jax/core/compile/backend_compile_duration":
        _COMPILES[0] += 1


jax.monitoring.register_event_duration_secs_listener(_count_compiles)


def compile_marks():
    """The jit cache sizes of the programs the peers run, and the number of XLA compilations so far."""
    return {
        "sweep._run_members": sweeps_lib._run_members._cache_size(),
        "loop.run_epochs (fit)": loop_lib.run_epochs._cache_size(),
        "floor_run": floor_run._cache_size(),
        "xla compilations": _COMPILES[0],
    }


# --- peer (c): the hand-written floor ---------------------------------------------------------------------------

ADAM = optax.scale_by_adam()


@functools.partial(jax.jit, static_argnames=("sizes",))
def floor_init(keys, *, sizes):
    params = jax.vmap(lambda key: init_params(sizes, key))(keys)
    return params, jax.vmap(ADAM.init)(params)


@functools.partial(jax.jit, static_argnames=("batch", "epochs"), donate_argnums=(0, 1))
def floor_run(params, opt_state, rates, keys, x, y, *, batch, epochs):
    """``epochs`` epochs of every member in one call: vmap over members of scan over epochs of scan over batches."""
    steps = x.shape[0] // batch

    def member(params, opt_state, rate, key):
        def epoch(carry, e):
            order = jax.random.permutation(jax.random.fold_in(key, e), x.shape[0])[: steps * batch]

            def step(carry, idx):
                params, opt_state = carry

                def loss_fn(p):
                    return optax.softmax_cross_entropy_with_integer_labels(mlp_apply(p, x[idx]), y[idx]).mean()

                loss, grads = jax.value_and_grad(loss_fn)(params)
                updates, opt_state = ADAM.update(grads, opt_state, params)
                updates = jax.tree.map(lambda u: -rate * u, updates)
                return (optax.apply_updates(params, updates), opt_state), loss

            carry, losses = jax.lax.scan(step, carry, order.reshape(steps, batch))
            return carry, losses.mean()

        (params, opt_state), losses = jax.lax.scan(epoch, (params, opt_state), jnp.arange(epochs))
        return params, opt_state, losses

    return jax.vmap(member)(params, opt_state, rates, keys)


_floor_predict = jax.jit(jax.vmap(mlp_apply, in_axes=(0, None)))


# --- the peers: each trains every member and returns its outcome -------------------------------------------------


class Setup:
    """One workload's data, members and fit options, shared by its peers."""

    def __init__(self, spec, quick):
        settings = {**spec, **(spec.get("quick", {}) if quick else {})}
        self.train, self.test = settings["data"](**settings.get("data_options", {}))
        self.val = settings["validation"]() if settings.get("validation") else None
        self.sizes, self.batch, self.epochs = settings["sizes"], settings["batch"], settings["epochs"]
        self.rates = [float(r) for r in np.geomspace(*settings["rates"], settings["members"])]
        self.fit_options = dict(
            epochs=self.epochs, batch_size=self.batch, progress=False, metrics=settings.get("metrics", ())
        )
        if self.val is not None:
            self.fit_options["validation_data"] = self.val
        self.peers = settings["peers"]
        self.x_train, self.y_train = jax.device_put(self.train[0]), jax.device_put(self.train[1])

    def seeds(self, round_index):
        return [round_index * len(self.rates) + k for k in range(len(self.rates))]

    def model_fn(self, rngs):
        return dlfund.models.MLP(self.sizes[0], self.sizes[1:-1], self.sizes[-1], rngs=rngs)

    def early_stopping(self, patience):
        return {} if patience is None else {"early_stopping": dlfund.EarlyStopping(patience=patience)}


def run_sweep(setup, round_index, patience=None):
    members = {"learning_rate": setup.rates, "seed": setup.seeds(round_index)}
    result = dlfund.sweep(setup.model_fn, setup.train, members, **setup.fit_options, **setup.early_stopping(patience))
    jax.block_until_ready(result.state)
    return result


def run_fits(setup, round_index, patience=None):
    results = []
    for rate, seed in zip(setup.rates, setup.seeds(round_index)):
        model = setup.model_fn(nnx.Rngs(seed))
        options = {**setup.fit_options, **setup.early_stopping(patience)}
        results.append(dlfund.fit(model, setup.train, seed=seed, learning_rate=rate, **options))
    jax.block_until_ready([nnx.state(r.model) for r in results])
    return results


def run_floor(setup, round_index):
    keys = jax.vmap(jax.random.key)(jnp.asarray(setup.seeds(round_index)))
    params, opt_state = floor_init(keys, sizes=tuple(setup.sizes))
    rates = jnp.asarray(setup.rates, jnp.float32)
    params, _, losses = floor_run(
        params, opt_state, rates, keys, setup.x_train, setup.y_train, batch=setup.batch, epochs=setup.epochs
    )
    jax.block_until_ready((params, losses))
    return params, losses


PEER_FUNCTIONS = {
    "sweep[es p=5]": functools.partial(run_sweep, patience=5),
    "sweep[es p=1000]": functools.partial(run_sweep, patience=1000),
    "sweep": run_sweep,
    "fits[es p=5]": functools.partial(run_fits, patience=5),
    "fits": run_fits,
    "hand-vmap": run_floor,
}
FLOOR = "hand-vmap"


# --- outcomes: epochs run, accuracy of the best member ------------------------------------------------------------


def _accuracy(logits, labels):
    return float(np.mean(np.argmax(np.asarray(logits), axis=-1) == labels))


def outcome(setup, peer, out):
    """Per-member epochs run, final train loss and accuracies; the best member's accuracies."""
    splits = {"test": setup.test, **({"val": setup.val} if setup.val is not None else {})}
    if peer.startswith("sweep"):
        models = out.models()
        epochs_run = [len(h) for h in out.histories]
        first_loss = [float(h.rows[0]["loss"]) for h in out.histories]
        final_loss = [float(h.last()["loss"]) for h in out.histories]
        acc = {s: [_accuracy(dlfund.predict(m, d[0]), d[1]) for m in models] for s, d in splits.items()}
        extra = {"wasted_fraction": round(out.wasted_fraction, 4)}
    elif peer.startswith("fits"):
        epochs_run = [len(r.history) for r in out]
        first_loss = [float(r.history.rows[0]["loss"]) for r in out]
        final_loss = [float(r.history.last()["loss"]) for r in out]
        acc = {s: [_accuracy(dlfund.predict(r.model, d[0]), d[1]) for r in out] for s, d in splits.items()}
        extra = {}
    else:
        params, losses = out
        epochs_run = [setup.epochs] * len(setup.rates)
        first_loss = [float(v) for v in np.asarray(losses)[:, 0]]
        final_loss = [float(v) for v in np.asarray(losses)[:, -1]]
        acc = {s: [_accuracy(lg, d[1]) for lg in _floor_predict(params, d[0])] for s, d in splits.items()}
        extra = {}
    chooser = "val" if "val" in acc else "test"
    best = int(np.argmax(acc[chooser]))
    return {
        "epochs_run": epochs_run,
        "first_epoch_train_loss": first_loss,
        "final_train_loss": final_loss,
        "best_member": best,
        "best_learning_rate": setup.rates[best],
        **{f"best_{s}_accuracy": acc[s][best] for s in acc},
        **extra,
    }


# --- the benchmark -----------------------------------------------------------------------------------------------

S1 = dict(
    data=w2_data,
    validation=w3_validation,
    sizes=(64, 128, 10),
    batch=32,
    epochs=30,
    rates=(1e-3, 3e-2),
    metrics=("accuracy",),
)
WORKLOADS = {
    "S1/K=8": dict(
        **S1,
        members=8,
        peers=("sweep[es p=5]", "sweep[es p=1000]", "fits[es p=5]", FLOOR),
        quick=dict(members=4, epochs=3),
    ),
    "S1/K=64": dict(
        **S1,
        members=64,
        peers=("sweep[es p=5]", "sweep[es p=1000]", "fits[es p=5]", FLOOR),
        quick=dict(members=8, epochs=2, peers=("sweep[es p=5]", "sweep[es p=1000]", FLOOR)),
    ),
    "S2/K=4": dict(
        data=w1_data,
        data_options=dict(n_train=6_000, n_test=1_000),
        sizes=(784, 512, 512, 10),
        batch=128,
        epochs=3,
        rates=(3e-4, 3e-3),
        members=4,
        peers=("sweep", "fits", FLOOR),
        quick=dict(data_options=dict(n_train=512, n_test=256), members=2, epochs=1),
    ),
}


def bench(name, spec, rounds, quick, skip_fits):
    setup = Setup(spec, quick)
    peers = [p for p in setup.peers if not (skip_fits and p.startswith("fits"))]
    size = len(setup.rates)

    def call(peer, round_index):
        return timed(PEER_FUNCTIONS[peer], setup, round_index)

    first = {}
    for peer in peers:  # warm-up: compile everything once (the first call of each peer)
        first[peer], _ = call(peer, 0)
    times = {p: [] for p in peers}
    host = {p: [] for p in peers}  # sweeps: wall time minus the time of the compiled calls (sum of epoch_seconds)
    compiled = {p: {} for p in peers}
    outcomes = {}
    for r in range(1, rounds + 1):
        for peer in peers:
            before = compile_marks()
            seconds, out = call(peer, r)
            after = compile_marks()
            times[peer].append(seconds)
            if isinstance(out, dlfund.SweepResult):
                host[peer].append(seconds - sum(out.epoch_seconds))
            for mark, count in after.items():
                if count != before[mark]:
                    compiled[peer][mark] = compiled[peer].get(mark, 0) + count - before[mark]
            if r == rounds:
                outcomes[peer] = outcome(setup, peer, out)
    for peer, grew in compiled.items():
        if grew:
            print(f"WARNING: {name} {peer}: compiled during timed rounds: {grew}", file=sys.stderr, flush=True)
    floor = statistics.median(times[FLOOR])
    peers_out = {}
    for peer in peers:
        median = statistics.median(times[peer])
        peers_out[peer] = {
            "median_seconds": round(median, 4),
            "min_seconds": round(min(times[peer]), 4),
            "max_seconds": round(max(times[peer]), 4),
            "vs_floor": round(median / floor, 3),
            "ms_per_member": round(1000 * median / size, 2),
            "first_call_seconds": round(first[peer], 3),
            "compiled_in_timed_rounds": compiled[peer],
            **outcomes[peer],
        }
        if host[peer]:
            peers_out[peer]["host_seconds_median"] = round(statistics.median(host[peer]), 4)
    report = {
        "workload": name,
        "members": size,
        "epochs": setup.epochs,
        "batch": setup.batch,
        "sizes": list(setup.sizes),
        "train_examples": len(setup.train[0]),
        "learning_rates": [round(r, 6) for r in setup.rates],
        "rounds": rounds,
        "peers": peers_out,
    }
    sweep_peer = next((p for p in peers if p.startswith("sweep")), None)
    fits_peer = next((p for p in peers if p.startswith("fits")), None)
    if sweep_peer and fits_peer and sweep_peer.removeprefix("sweep") == fits_peer.removeprefix("fits"):
        # same seeds and options in the last round: member k of the sweep is fit k (up to float rounding)
        a, b = peers_out[sweep_peer], peers_out[fits_peer]
        first_diff = np.abs(np.subtract(a["first_epoch_train_loss"], b["first_epoch_train_loss"]))
        final_diff = np.abs(np.subtract(a["final_train_loss"], b["final_train_loss"]))
        report["sweep_vs_fits"] = {
            "fits_time_over_sweep_time": round(b["median_seconds"] / a["median_seconds"], 3),
            "members_with_same_epochs_run": int(np.sum(np.equal(a["epochs_run"], b["epochs_run"]))),
            "max_first_epoch_loss_difference": float(first_diff.max()),
            "median_final_loss_difference": float(np.median(final_diff)),
            "max_final_loss_difference": float(final_diff.max()),
        }
    return report


def print_table(reports):
    columns = ("peer", "median s", "min s", "max s", "/ floor", "ms/member", "1st call s", "epochs run", "wasted")
    columns += ("best lr", "val acc", "test acc")
    for report in reports:
        print(
            f"\n{report['workload']}: MLP {'-'.join(map(str, report['sizes']))}, {report['members']} members, "
            f"{report['epochs']} epochs, batch {report['batch']}, {report['train_examples']} train examples, "
            f"{report['rounds']} rounds"
        )
        rows = []
        for peer, p in report["peers"].items():
            runs = p["epochs_run"]
            rows.append(
                (
                    peer,
                    f"{p['median_seconds']:.3f}",
                    f"{p['min_seconds']:.3f}",
                    f"{p['max_seconds']:.3f}",
                    f"{p['vs_floor']:.2f}x",
                    f"{p['ms_per_member']:.1f}",
                    f"{p['first_call_seconds']:.2f}",
                    f"{sum(runs) / len(runs):.1f} ({min(runs)}-{max(runs)})",
                    "" if "wasted_fraction" not in p else f"{p['wasted_fraction']:.3f}",
                    f"{p['best_learning_rate']:.2g}",
                    f"{p['best_val_accuracy']:.4f}" if "best_val_accuracy" in p else "",
                    f"{p['best_test_accuracy']:.4f}",
                )
            )
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(columns, widths))))
        for row in rows:
            print("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths))))
        for peer, p in report["peers"].items():
            if peer.startswith("sweep") and min(p["epochs_run"]) < max(p["epochs_run"]):
                print(f"  {peer} epochs run per member: {p['epochs_run']}")
            if "host_seconds_median" in p:
                print(
                    f"  {peer}: host time outside the compiled calls (wall - sum(epoch_seconds)), median "
                    f"{p['host_seconds_median']:.3f} s ({1000 * p['host_seconds_median'] / report['members']:.1f} ms "
                    "per member)"
                )
        if "sweep_vs_fits" in report:
            s = report["sweep_vs_fits"]
            print(
                f"  fits time / sweep time: {s['fits_time_over_sweep_time']:.2f}x (> 1: the sweep is faster); "
                f"members with the same epochs run: {s['members_with_same_epochs_run']}/{report['members']}; "
                f"|train loss difference| sweep vs fits, last round: epoch 1 max "
                f"{s['max_first_epoch_loss_difference']:.1e}, final median {s['median_final_loss_difference']:.1e} "
                f"max {s['max_final_loss_difference']:.1e}"
            )
        for peer, p in report["peers"].items():
            if p["compiled_in_timed_rounds"]:
                print(f"  WARNING: {peer} compiled during timed rounds: {p['compiled_in_timed_rounds']}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--quick", action="store_true", help="tiny settings and 2 rounds, for a smoke run")
    parser.add_argument("--no-fits-at-64", action="store_true", help="skip the 64 sequential fits of S1/K=64")
    parser.add_argument("--json", metavar="PATH", help="also write the numbers to this JSON file")
    args = parser.parse_args()
    rounds = 2 if args.quick else args.rounds
    start = time.perf_counter()
    info = {"jax": jax.__version__, "backend": jax.default_backend(), "devices": str(jax.devices())}
    print(json.dumps(info))
    reports = []
    for name in args.workloads:
        skip_fits = args.no_fits_at_64 and name == "S1/K=64"
        reports.append(bench(name, WORKLOADS[name], rounds, args.quick, skip_fits))
        print(json.dumps(reports[-1]), flush=True)
    print_table(reports)
    total = time.perf_counter() - start
    print(f"\ntotal {total:.0f} s")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({**info, "seconds": round(total, 1), "workloads": reports}))


if __name__ == "__main__":
    main()
