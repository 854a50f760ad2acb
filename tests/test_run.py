"""Run folders: exact resume, crashes, damaged checkpoints, TensorBoard, load_model, bad run folders."""

import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest
from flax import nnx

import dlfund
from dlfund.checkpoint import CheckpointWarning
from dlfund.models import MLP
from dlfund.train import run as run_lib

SETTINGS = dict(
    epochs=6, batch_size=16, learning_rate=0.01, schedule="cosine", progress=False,
    early_stopping=dlfund.EarlyStopping(patience=10),
)  # fmt: skip


def problem():
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=2.0, size=(3, 4))
    y = rng.integers(0, 3, size=200)
    x = (centers[y] + rng.normal(size=(200, 4))).astype(np.float32)
    return (x[:160], y[:160].astype(np.int32)), (x[160:], y[160:].astype(np.int32))


def model():
    return MLP(4, (16,), 3, dropout=0.2, rngs=nnx.Rngs(0))


def run(run_dir=None, **kwargs):
    train, val = problem()
    return dlfund.fit(model(), train, validation_data=val, run_dir=run_dir, **{**SETTINGS, **kwargs})


def params(result):
    return [np.asarray(a) for a in jax.tree.leaves(nnx.state(result.model))]


def assert_identical(a, b):
    assert a.history == b.history
    for x, y in zip(params(a), params(b), strict=True):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(jax.tree.leaves(a.state.opt_state), jax.tree.leaves(b.state.opt_state), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def uninterrupted():
    return run()


class Interrupt(Exception):
    pass


def interrupt_after(epoch):
    def on_epoch_end(e, logs, state):
        if e == epoch:
            raise Interrupt

    return dlfund.LambdaCallback(on_epoch_end=on_epoch_end)


@pytest.mark.parametrize("boundary", [1, 3, 5])
def test_resume_at_an_epoch_boundary_is_bit_identical(tmp_path, uninterrupted, boundary):
    with pytest.raises(Interrupt):
        run(tmp_path, callbacks=(interrupt_after(boundary),))
    assert run_lib.History.from_csv(tmp_path / "history.csv")["epoch"].tolist() == list(range(1, boundary + 1))
    resumed = run(tmp_path, resume=True)
    assert_identical(resumed, uninterrupted)
    lines = (tmp_path / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == list(range(1, 7))


def test_resume_with_checkpoints_every_two_epochs_redoes_the_epochs_after_the_last(tmp_path, uninterrupted):
    with pytest.raises(Interrupt):
        run(tmp_path, checkpoint_every=2, callbacks=(interrupt_after(3),))
    assert len((tmp_path / "history.jsonl").read_text().splitlines()) == 3  # epoch 3 logged, not checkpointed
    resumed = run(tmp_path, resume=True, checkpoint_every=2)
    assert_identical(resumed, uninterrupted)


def test_resuming_a_finished_run_returns_it(tmp_path, uninterrupted):
    run(tmp_path)
    for name in run_lib.EVALUATION_FIGURES:  # as dlfund train leaves them
        (tmp_path / name).write_bytes(b"an earlier end's figure")
    again = run(tmp_path, resume=True)
    assert_identical(again, uninterrupted)
    # They showed the model the resumed run started from; its own end (dlfund train) draws them anew.
    assert not any((tmp_path / name).exists() for name in run_lib.EVALUATION_FIGURES)


def test_a_run_folder_of_another_configuration_is_refused(tmp_path):
    run(tmp_path, epochs=2)
    with pytest.raises(ValueError, match=r"different configuration.*differing keys: .*learning_rate") as info:
        run(tmp_path, epochs=2, learning_rate=0.02, resume=True)
    assert "new run_dir" in str(info.value)
    with pytest.raises(ValueError, match="already holds a run; pass resume=True"):
        run(tmp_path, epochs=2)


def test_a_damaged_latest_checkpoint_is_skipped_on_resume(tmp_path, uninterrupted):
    with pytest.raises(Interrupt):
        run(tmp_path, callbacks=(interrupt_after(4),))
    files = (tmp_path / "checkpoints" / "4" / "model").rglob("*")
    weights = max((p for p in files if p.is_file()), key=os.path.getsize)
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x55
    weights.write_bytes(bytes(data))
    with pytest.warns(CheckpointWarning, match="checkpoint 4 .* damaged"):
        resumed = run(tmp_path, resume=True)
    assert_identical(resumed, uninterrupted)


def test_a_full_disk_stops_the_run_but_returns_the_trained_state(tmp_path, monkeypatch, uninterrupted):
    calls = {"n": 0}
    original = run_lib.RunRecorder._log_row

    def failing(self, row):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        return original(self, row)

    monkeypatch.setattr(run_lib.RunRecorder, "_log_row", failing)
    with pytest.warns(RuntimeWarning, match="could not write to the run folder.*No space left"):
        result = run(tmp_path)
    assert "No space left" in result.stop_reason and "in memory" in result.stop_reason
    assert len(result.history) == 3 and int(result.state.step) == 3 * 10
    # The 3 epochs are the uninterrupted run's, and the model returned is the trained one: it scores what the
    # history recorded for the epoch it holds (the best, restored).
    np.testing.assert_array_equal(result.history["val_loss"], uninterrupted.history["val_loss"][:3])
    accuracy = dlfund.evaluate(result.model, problem()[1])["accuracy"]
    assert accuracy == pytest.approx(result.history["val_accuracy"][result.best_epoch - 1], abs=1e-6)
    assert accuracy > 0.6  # 3 classes: chance is 1/3


def test_tensorboard_event_files_hold_every_history_column(tmp_path):
    from tensorboardX.proto import event_pb2

    result = run(tmp_path, epochs=3)
    (events,) = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
    data, values = events.read_bytes(), {}
    while data:  # TFRecord framing: length (8), its CRC (4), the Event proto, its CRC (4)
        (length,) = struct.unpack("<Q", data[:8])
        event = event_pb2.Event.FromString(data[12 : 12 + length])
        data = data[16 + length :]
        for value in event.summary.value:
            values.setdefault(value.tag, []).append((event.step, value.simple_value))
    assert {"loss/train", "loss/val", "accuracy/train", "accuracy/val", "learning_rate"} <= set(values)
    np.testing.assert_allclose([v for _, v in values["loss/val"]], result.history["val_loss"], rtol=1e-6)
    assert [s for s, _ in values["learning_rate"]] == [1, 2, 3]


def test_load_model_round_trips_from_run_folder_weights_and_checkpoint(tmp_path):
    result = run(tmp_path, epochs=3)
    x = problem()[1][0]
    expected = dlfund.predict(result.model, x)
    for source in (tmp_path, tmp_path / "weights.safetensors", tmp_path / "checkpoints" / "3"):
        np.testing.assert_array_equal(dlfund.predict(dlfund.load_model(source), x), expected)
    os.remove(tmp_path / "weights.safetensors")  # a run that never finished: its newest checkpoint
    np.testing.assert_array_equal(dlfund.predict(dlfund.load_model(tmp_path), x), expected)
    with pytest.raises(FileNotFoundError, match="nothing to load"):
        dlfund.load_model(tmp_path / "nowhere")


def test_loading_into_another_shape_names_the_parameter(tmp_path):
    result = run(tmp_path, epochs=1)
    other = MLP(4, (8,), 3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"parameter 'dense/0/bias': the model has shape \(8,\).*\(16,\)"):
        dlfund.load_weights(tmp_path / "weights.safetensors", other)
    del result


SCRIPT = textwrap.dedent(
    """
    import sys, time, os, signal
    import numpy as np
    from flax import nnx
    import dlfund
    sys.path.insert(0, {tests!r})
    from test_run import problem, model, SETTINGS
    mode, run_dir = sys.argv[1], sys.argv[2]
    callbacks = ()
    if mode == "slow":  # slow enough for the parent to kill it mid-run
        callbacks = (dlfund.LambdaCallback(on_epoch_end=lambda e, logs, s: time.sleep(0.4)),)
    if mode == "kill-during-save":
        from dlfund.checkpoint import CheckpointStore
        original = CheckpointStore.save
        def save(self, step, *args, **kwargs):
            original(self, step, *args, **kwargs)  # Orbax is still writing in the background...
            if step == 3:
                os.kill(os.getpid(), signal.SIGKILL)  # ...when the process dies
        CheckpointStore.save = save
    train, val = problem()
    dlfund.fit(model(), train, validation_data=val, run_dir=run_dir, callbacks=callbacks, **SETTINGS)
    """
)


def _start(mode, run_dir):
    script = SCRIPT.format(tests=os.path.dirname(__file__))
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen([sys.executable, "-c", script, mode, str(run_dir)], env=env, stderr=subprocess.PIPE)


def test_a_run_killed_with_sigkill_resumes_to_the_same_result(tmp_path, uninterrupted):
    process = _start("slow", tmp_path)
    deadline = time.time() + 120
    while not (tmp_path / "checkpoints" / "3").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (tmp_path / "weights.safetensors").exists()  # it really died mid-run
    assert_identical(run(tmp_path, resume=True), uninterrupted)


def test_a_kill_in_the_middle_of_a_save_keeps_the_previous_checkpoint(tmp_path, uninterrupted):
    process = _start("kill-during-save", tmp_path)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == -signal.SIGKILL, stderr.decode()[-2000:]
    with warnings_allowed():
        resumed = run(tmp_path, resume=True)
    assert_identical(resumed, uninterrupted)


class warnings_allowed:
    """The interrupted save may or may not have left a temporary folder (and a warning): both are fine here."""

    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("ignore", CheckpointWarning)

    def __exit__(self, *exc):
        return self._catch.__exit__(*exc)


def test_resuming_with_another_model_is_refused_and_nothing_is_set_aside(tmp_path):
    run(tmp_path, epochs=2)
    train, val = problem()
    other = MLP(4, (32,), 3, dropout=0.2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"differing keys: model\.config\.hidden"):
        dlfund.fit(other, train, validation_data=val, run_dir=tmp_path, resume=True, **{**SETTINGS, "epochs": 2})
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2"]


def test_resuming_may_place_the_data_differently(tmp_path):
    with pytest.raises(Interrupt):
        run(tmp_path, execution="loop", callbacks=(interrupt_after(2),))
    resumed = run(tmp_path, resume=True, data_placement="stream")  # streamed steps are the loop's steps
    assert_identical(resumed, run(execution="loop"))


def test_retention_after_a_resume_matches_an_uninterrupted_run(tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    run(whole, keep_checkpoints=2)
    with pytest.raises(Interrupt):
        run(parts, keep_checkpoints=2, callbacks=(interrupt_after(3),))
    run(parts, keep_checkpoints=2, resume=True)
    assert sorted(os.listdir(whole / "checkpoints")) == sorted(os.listdir(parts / "checkpoints"))
    assert len(os.listdir(whole / "checkpoints")) <= 3  # the latest two and the best


def test_a_failed_asynchronous_checkpoint_write_stops_the_run_but_returns_the_state(tmp_path, monkeypatch):
    import orbax.checkpoint as ocp

    calls = {"n": 0}
    original = ocp.CheckpointManager.wait_until_finished

    def failing(self):
        calls["n"] += 1
        if calls["n"] == 3:  # what Orbax raises when TensorStore cannot write
            raise ValueError("RESOURCE_EXHAUSTED: No space left on device")
        return original(self)

    monkeypatch.setattr(ocp.CheckpointManager, "wait_until_finished", failing)
    with pytest.warns(RuntimeWarning, match="RESOURCE_EXHAUSTED"):
        result = run(tmp_path)
    assert "RESOURCE_EXHAUSTED" in result.stop_reason and len(result.history) >= 2
    assert dlfund.evaluate(result.model, problem()[1])["num_examples"] == 40


def test_resuming_an_early_stopped_run_keeps_its_reason(tmp_path):
    first = run(tmp_path, epochs=30, early_stopping=dlfund.EarlyStopping(patience=1), learning_rate=0.3)
    assert first.stop_reason and first.stop_reason.startswith("early stopping")
    again = run(tmp_path, epochs=30, early_stopping=dlfund.EarlyStopping(patience=1), learning_rate=0.3, resume=True)
    assert again.stop_reason == first.stop_reason and again.history == first.history
