"""Whole runs on the device: epochs_per_call gives the per-epoch loop's history, stops and weights, in fewer calls."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import dlfund
from dlfund.models import MLP
from dlfund.train import loop as loop_lib


def problem(seed=0, n=240):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=1.5, size=(3, 5))
    y = rng.integers(0, 3, size=n)
    x = (centers[y] + rng.normal(size=(n, 5))).astype(np.float32)
    return (x[:180], y[:180].astype(np.int32)), (x[180:], y[180:].astype(np.int32))


def fit(epochs_per_call, *, epochs=25, stopper=None, dropout=0.2, **kwargs):
    train, val = problem()
    model = MLP(5, (16,), 3, dropout=dropout or 0.0, rngs=nnx.Rngs(0))
    options = dict(epochs=epochs, batch_size=16, learning_rate=1e-2, progress=False, validation_data=val)
    return dlfund.fit(model, train, early_stopping=stopper, epochs_per_call=epochs_per_call, **{**options, **kwargs})


def weights(result):
    return [np.asarray(a) for a in jax.tree.leaves(nnx.state(result.model))]


@pytest.mark.parametrize(
    "stopper",
    [
        None,
        # val_loss stops improving by 0.02 within a few epochs: the run stops early, mid-call for the longer calls
        dlfund.EarlyStopping(monitor="val_loss", patience=3, min_delta=0.02),
        dlfund.EarlyStopping(monitor="val_accuracy", patience=2, restore_best=False),
    ],
)
def test_one_seven_and_all_epochs_per_call_give_the_same_run(stopper):
    runs = {n: fit(n, stopper=stopper) for n in (1, 7, "auto")}
    reference = runs[1]
    if stopper is not None and stopper.min_delta:
        assert len(reference.history) < 25  # the case is one that stops early
    for n, result in runs.items():
        assert result.history == reference.history, n  # bit for bit: the same program per epoch
        assert (result.best_epoch, result.stop_reason) == (reference.best_epoch, reference.stop_reason), n
        for a, b in zip(weights(result), weights(reference), strict=True):
            np.testing.assert_array_equal(a, b)
    assert runs["auto"].config["epochs_per_call"] == "auto" and runs[7].config["epochs_per_call"] == 7


def test_whole_runs_match_the_strategy_that_steps_from_python():
    """An independent reference: execution="loop" runs each step from Python and ends each epoch on the host side
    of the same transition; up to float rounding it is the same run (no dropout: its keys amplify rounding)."""
    stopper = dlfund.EarlyStopping(monitor="val_loss", patience=3, min_delta=0.02)
    whole = fit("auto", stopper=stopper, dropout=None)
    stepped = fit("auto", stopper=stopper, dropout=None, execution="loop")
    assert (whole.execution, stepped.execution) == ("scan", "loop")
    assert len(whole.history) == len(stepped.history) < 25 and whole.best_epoch == stepped.best_epoch
    for column in whole.history.columns:
        np.testing.assert_allclose(whole.history[column], stepped.history[column], rtol=2e-4, atol=1e-6)


def test_the_restored_best_weights_are_the_best_epochs():
    stopper = dlfund.EarlyStopping(monitor="val_loss", patience=3, min_delta=0.02)
    result = fit("auto", stopper=stopper)
    best = result.best_epoch
    assert best < len(result.history) and result.history.restored_best
    again = fit(1, epochs=best)  # the same run, ended at the best epoch
    for a, b in zip(weights(result), weights(again), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_non_finite_epoch_inside_a_call_stops_where_the_per_epoch_loop_does():
    train, val = problem()
    x, y = train
    runs = {}
    for n in (1, "auto"):
        model = MLP(5, (16,), 3, rngs=nnx.Rngs(0))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            runs[n] = dlfund.fit(model, (x * 30, y), validation_data=val, optimizer="sgd", learning_rate=5.0,
                                 epochs=30, batch_size=16, progress=False, epochs_per_call=n)  # fmt: skip
        assert [str(w.message) for w in caught if w.category is dlfund.NonFiniteLossWarning] == [runs[n].stop_reason]
    assert "became NaN/Inf at epoch" in runs[1].stop_reason
    assert runs["auto"].stop_reason == runs[1].stop_reason and runs["auto"].history == runs[1].history
    assert int(runs["auto"].state.step) == int(runs[1].state.step)
    for a, b in zip(weights(runs["auto"]), weights(runs[1]), strict=True):
        assert np.isfinite(a).all()
        np.testing.assert_array_equal(a, b)


def test_runs_of_any_length_share_one_compiled_program():
    fit("auto", epochs=3)
    size = loop_lib.run_epochs._cache_size()
    fit("auto", epochs=11)
    fit(4, epochs=9)
    assert loop_lib.run_epochs._cache_size() == size


def test_a_run_longer_than_one_call_continues_exactly():
    long = fit("auto", epochs=loop_lib.ROWS_PER_CALL + 6, learning_rate=1e-3)
    per_epoch = fit(1, epochs=loop_lib.ROWS_PER_CALL + 6, learning_rate=1e-3)
    assert long.history == per_epoch.history and len(long.history) == loop_lib.ROWS_PER_CALL + 6


def test_a_run_folder_checkpoints_at_the_end_of_each_call_and_resumes_exactly(tmp_path):
    stopper = dlfund.EarlyStopping(patience=50)
    straight = fit("auto", stopper=stopper, epochs=9, run_dir=tmp_path / "a", checkpoint_every=3)
    steps = sorted(int(p.name) for p in (tmp_path / "a" / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[-1] == 9 and all(s % 3 == 0 for s in steps)
    per_epoch = fit(1, stopper=stopper, epochs=9, run_dir=tmp_path / "b", checkpoint_every=3)
    assert straight.history == per_epoch.history
    fit("auto", stopper=stopper, epochs=5, run_dir=tmp_path / "c", checkpoint_every=3)  # checkpoints 3 and 5
    resumed = fit("auto", stopper=stopper, epochs=9, run_dir=tmp_path / "c", checkpoint_every=3, resume=True)
    assert resumed.history == straight.history


def test_end_of_epoch_is_a_pure_transition_that_vmaps():
    """The same transition runs for one model and for a stack of them (a sweep): no Python value is read."""
    stopping = dlfund.EarlyStopping(monitor="loss", patience=2)
    program = loop_lib.EpochProgram(
        batch_size=4, metrics=(dlfund.metrics.get_metric("loss", 2),), early_stopping=stopping
    )
    model = MLP(3, (4,), 2, rngs=nnx.Rngs(0))
    state = dlfund.create_train_state(model, key=jax.random.key(0), optimizer="sgd", learning_rate=0.1)
    loop = loop_lib.init_loop(state, program)
    stacked = jax.tree.map(lambda a: jnp.stack([a, a]), loop)
    rows = jnp.asarray([[1.0, 0.1], [2.0, 0.1]])  # [member, (loss, learning_rate)]
    for step in range(3):  # member 0 improves every epoch, member 1 never after its first
        rows = rows.at[0, 0].add(-0.1) if step else rows
        stacked = jax.vmap(lambda lp, r: loop_lib.end_of_epoch(program, lp, r))(stacked, rows)
    assert stacked.stopped.tolist() == [False, True]
    assert stacked.stopper.best_epoch.tolist() == [3, 1] and stacked.epoch.tolist() == [3, 3]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs_per_call": 0}, "epochs_per_call must be an integer >= 1"),
        ({"epochs_per_call": 3, "execution": "loop"}, "needs the scan strategy"),
        ({"epochs_per_call": 3, "callbacks": (dlfund.LambdaCallback(),)}, "a callback sees every epoch"),
    ],
)
def test_bad_epochs_per_call_is_refused_before_training(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fit(**kwargs)


def test_a_long_call_reports_each_epoch_as_it_ends():
    """The progress bar moves during a call: the program sends every finished epoch to the host."""
    train, _ = problem()
    loss = dlfund.metrics.get_metric("loss", 3)
    program = loop_lib.EpochProgram(batch_size=16, metrics=(loss,), report=True)
    model = MLP(5, (8,), 3, rngs=nnx.Rngs(0))
    state = dlfund.create_train_state(model, key=jax.random.key(0), optimizer="sgd", learning_rate=0.1)
    seen = []
    loop_lib.report_to(lambda epoch, row: seen.append((epoch, np.asarray(row))))
    try:
        x, y = jax.device_put(train[0]), jax.device_put(train[1])
        loop, rows = loop_lib.run_epochs(
            loop_lib.init_loop(state, program), np.int32(4), x, y, x, y, jax.random.key(1), program=program
        )
        rows = np.asarray(rows)
        jax.effects_barrier()
    finally:
        loop_lib.report_to(None)
    assert [epoch for epoch, _ in seen] == [1, 2, 3, 4] and int(loop.epoch) == 4
    np.testing.assert_array_equal(np.stack([row for _, row in seen]), rows[:4])


def test_a_run_folder_that_fails_mid_call_keeps_a_history_that_matches_the_state(tmp_path, monkeypatch):
    from dlfund.train import run as run_lib

    log_row = run_lib.RunRecorder._log_row

    def failing(self, row):
        if row["epoch"] == 3:
            raise OSError(28, "No space left on device")
        return log_row(self, row)

    monkeypatch.setattr(run_lib.RunRecorder, "_log_row", failing)
    with pytest.warns(RuntimeWarning, match="No space left on device"):
        result = fit("auto", epochs=10, run_dir=tmp_path / "run", checkpoint_every=5)
    steps_per_epoch = result.config["steps_per_epoch"]
    assert len(result.history) * steps_per_epoch == int(result.state.step)  # every trained epoch is in the history
    assert "training stopped" in result.stop_reason
