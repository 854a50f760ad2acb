"""dlfund.fit / evaluate / predict end to end on tiny problems."""

import dataclasses
import json
import math
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import dlfund
from dlfund.models import MLP, LogisticRegression


def small_mlp(seed=0, **kwargs):
    return MLP(4, (8,), 3, rngs=nnx.Rngs(seed), **kwargs)


def quiet_fit(model, data, **kwargs):
    return dlfund.fit(model, data, progress=False, **{"epochs": 3, "batch_size": 16, **kwargs})


def params_of(model):
    return jax.tree.map(np.asarray, nnx.state(model, nnx.Param))


def test_fit_on_a_pair_of_arrays_learns_and_records_history(blobs):
    train, val = blobs
    result = quiet_fit(
        small_mlp(), train, validation_data=val, epochs=15, learning_rate=0.03, metrics=("accuracy", "f1")
    )
    history = result.history
    assert len(history) == 15 and history["epoch"].tolist() == list(range(1, 16))
    assert history.columns == ["epoch", "loss", "accuracy", "f1", "val_loss", "val_accuracy", "val_f1", "learning_rate"]
    assert history["loss"][-1] < history["loss"][0] / 3
    assert history["val_accuracy"][-1] > 0.9
    assert result.best_epoch == history.best_epoch("val_loss")
    assert result.stop_reason is None and result.execution == "scan"
    # The model passed in is trained in place and left in eval mode.
    metrics = dlfund.evaluate(result.model, val)
    assert metrics["accuracy"] == pytest.approx(history["val_accuracy"][-1], abs=1e-6)
    assert metrics["loss"] == pytest.approx(history["val_loss"][-1], rel=1e-5)


def test_fit_on_a_dataset_uses_its_validation_split(digits):
    model = MLP(64, (32,), 10, rngs=nnx.Rngs(0))
    result = dlfund.fit(model, digits, epochs=4, batch_size=64, progress=False)
    assert "val_loss" in result.history and "val_accuracy" in result.history
    assert result.config["num_val"] == len(digits.val[0]) and result.config["num_train"] == len(digits.train[0])
    assert dlfund.evaluate(model, digits)["accuracy"] > 0.75  # a Dataset evaluates on its test split


def test_same_seed_same_history_and_weights(blobs):
    runs = [quiet_fit(small_mlp(), blobs[0], validation_data=blobs[1], seed=7) for _ in range(2)]
    assert runs[0].history == runs[1].history
    for a, b in zip(jax.tree.leaves(params_of(runs[0].model)), jax.tree.leaves(params_of(runs[1].model))):
        np.testing.assert_array_equal(a, b)
    other = quiet_fit(small_mlp(), blobs[0], validation_data=blobs[1], seed=8)
    assert other.history != runs[0].history


def test_same_seed_same_history_with_dropout(blobs):
    histories = [quiet_fit(small_mlp(dropout=0.3), blobs[0], seed=3).history for _ in range(2)]
    assert histories[0] == histories[1]


def compiled_programs():
    """Cache sizes of every program a scan-strategy fit compiles (the whole-run call, the optimizer's init)."""
    from dlfund import optimizers
    from dlfund.train import loop

    return loop.run_epochs._cache_size(), optimizers._init._cache_size()


def test_a_second_fit_with_the_same_shapes_does_not_compile_again(blobs):
    stopper = dlfund.EarlyStopping(patience=3)
    quiet_fit(small_mlp(1), blobs[0], validation_data=blobs[1], epochs=2, early_stopping=stopper)
    sizes = compiled_programs()
    assert all(sizes)  # the programs a fit uses, so the comparisons below can fail
    # A new model, another run length, another patience and min_delta:
    stopper = dlfund.EarlyStopping(patience=7, min_delta=1e-3)
    result = quiet_fit(small_mlp(2), blobs[0], validation_data=blobs[1], epochs=5, early_stopping=stopper)
    quiet_fit(result.model, blobs[0], validation_data=blobs[1], epochs=2, early_stopping=stopper)  # continued
    assert compiled_programs() == sizes


def lr_problem():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 4)).astype(np.float32)
    return x, (x[:, 0] > x[:, 1]).astype(np.int32)


def fit_rates(learning_rate, weight_decay, l2=1e-4, label_smoothing=0.1):
    """A short AdamW run with warm-up, dropout, an L2 penalty and label smoothing; returns the result and all
    weights as one vector."""
    model = MLP(4, (16,), 2, dropout=0.2, rngs=nnx.Rngs(0))
    options = dict(epochs=3, batch_size=16, schedule="warmup_cosine", optimizer="adamw", progress=False)
    options.update(regularizers=(f"l2:{l2}",), label_smoothing=label_smoothing)
    result = dlfund.fit(model, lr_problem(), learning_rate=learning_rate, weight_decay=weight_decay, **options)
    return result, np.concatenate([np.ravel(a) for a in jax.tree.leaves(nnx.state(result.model, nnx.Param))])


def test_other_rates_penalties_and_smoothing_reuse_the_compiled_program_and_are_used(tmp_path):
    """Learning rate, weight decay, L2 strength and label smoothing are values in the state: no second
    compilation, and the numbers are those of a fresh process."""
    import subprocess
    import sys

    fit_rates(1e-3, 1e-4, 1e-4, 0.1)
    sizes = compiled_programs()
    result, weights = fit_rates(3e-2, 1e-2, 1e-1, 0.3)
    assert compiled_programs() == sizes  # not compiled again
    # The new peak is the one the steps used (warmup_cosine reaches it at the end of the warm-up).
    rates = result.history["learning_rate"]
    assert rates.max() <= 3e-2 and rates[0] > 3e-3
    script = (
        "import sys, numpy as np; from tests.test_fit import fit_rates; "
        "np.save(sys.argv[1], fit_rates(3e-2, 1e-2, 1e-1, 0.3)[1])"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "w.npy")], check=True, timeout=300, cwd=root)
    np.testing.assert_allclose(weights, np.load(tmp_path / "w.npy"), rtol=1e-5, atol=1e-6)


def test_early_stopping_stops_at_the_right_epoch_and_restores_the_best_weights(blobs):
    (x, y), _ = blobs
    flipped = (x, (y + 1) % 3)  # the better the model fits the train labels, the worse this validation loss
    stopper = dlfund.EarlyStopping(monitor="val_loss", patience=2)
    result = quiet_fit(
        small_mlp(), (x, y), validation_data=flipped, epochs=30, learning_rate=0.03, early_stopping=stopper
    )
    val_loss = result.history["val_loss"]
    best = int(np.argmin(val_loss)) + 1
    assert result.best_epoch == best
    assert len(result.history) == best + 2  # two epochs without improvement, then stop
    assert "early stopping" in result.stop_reason
    # The returned model holds the best epoch's weights: the same as a run that simply ended there.
    reference = quiet_fit(small_mlp(), (x, y), validation_data=flipped, epochs=best, learning_rate=0.03)
    for a, b in zip(jax.tree.leaves(params_of(result.model)), jax.tree.leaves(params_of(reference.model))):
        np.testing.assert_array_equal(a, b)
    assert int(result.state.step) > int(reference.state.step)  # the state is the last epoch's


def test_early_stopping_state_machine():
    stopper = dlfund.EarlyStopping(monitor="val_accuracy", patience=2, min_delta=0.01)
    assert stopper.maximize
    state = stopper.init()
    stops = []
    for epoch, value in enumerate([0.5, 0.6, 0.605, float("nan"), 0.7, 0.69, 0.70, 0.71], start=1):
        state = stopper.update(state, value, epoch)
        stops.append(bool(state.stop))
    # 0.605 and NaN are not improvements (min_delta, NaN) -> stop after epoch 4; 0.7 improves again, etc.
    assert stops == [False, False, False, True, False, False, True, True]
    assert int(state.best_epoch) == 5 and float(state.best) == pytest.approx(0.7)
    assert not dlfund.EarlyStopping(monitor="val_loss").maximize
    jitted = jax.jit(stopper.update)(stopper.init(), jnp.float32(0.3), 1)  # pure: runs under jit
    assert int(jitted.best_epoch) == 1
    # An equal value is no improvement; min_delta and patience given to update (as the compiled loop passes them,
    # values in its state) replace the rule's own.
    rule = dlfund.EarlyStopping(monitor="val_loss", patience=5, min_delta=0.0)
    state = rule.update(rule.init(), 0.5, 1)
    assert int(rule.update(state, 0.5, 2).wait) == 1
    assert int(rule.update(state, 0.45, 2).best_epoch) == 2
    assert int(rule.update(state, 0.45, 2, min_delta=jnp.float32(0.1)).best_epoch) == 1
    assert bool(rule.update(state, 0.6, 2, patience=jnp.int32(1)).stop)
    # An infinite value is no improvement in either direction (a diverged loss of -inf is not the best epoch).
    for monitor, infinite in (("val_loss", -math.inf), ("val_accuracy", math.inf)):
        rule = dlfund.EarlyStopping(monitor=monitor, patience=5)
        state = rule.update(rule.init(), 0.5, 1)
        state = rule.update(state, infinite, 2)
        assert int(state.best_epoch) == 1 and float(state.best) == 0.5 and int(state.wait) == 1


@pytest.mark.parametrize(
    "monitor",
    ["val_balanced_accuracy", "val_top_5_accuracy", "val_roc_auc", "val_average_precision", "acc", "f1_macro"],
)
def test_early_stopping_maximizes_scores_named_in_any_position(monitor):
    # Only names starting with accuracy/precision/... were maximized: a rising balanced accuracy stopped the run
    # at epoch 3 and, with restore_best, kept epoch 1's weights.
    stopper = dlfund.EarlyStopping(monitor=monitor, patience=2)
    state = stopper.init()
    for epoch, value in enumerate([0.5, 0.7, 0.9, 0.95], start=1):
        state = stopper.update(state, value, epoch)
    assert not bool(state.stop) and int(state.best_epoch) == 4


@pytest.mark.parametrize("monitor", ["val_loss", "mse", "val_mae", "val_error_rate", "val_log_loss"])
def test_early_stopping_minimizes_losses_and_errors(monitor):
    assert not dlfund.EarlyStopping(monitor=monitor).maximize


def test_early_stopping_refuses_a_name_without_a_direction_in_auto_mode():
    with pytest.raises(ValueError, match=r"mode='max'.*mode='min'"):
        dlfund.EarlyStopping(monitor="val_margin")
    assert dlfund.EarlyStopping(monitor="val_margin", mode="max").maximize
    # NumPy numbers (a sweep's np.arange) are numbers, kept as Python ones so the run's config stays JSON
    stopper = dlfund.EarlyStopping(patience=np.int64(3), min_delta=np.float32(0.5))
    assert json.loads(json.dumps(dataclasses.asdict(stopper)))["patience"] == 3
    with pytest.raises(ValueError, match="patience"):
        dlfund.EarlyStopping(patience=2.5)


def test_callbacks_are_called_and_can_stop(blobs):
    seen = {}
    callback = dlfund.LambdaCallback(
        on_train_begin=lambda config: seen.setdefault("config", config),
        on_epoch_end=lambda epoch, logs, state: epoch == 2,
        on_train_end=lambda result: seen.setdefault("result", result),
    )
    result = quiet_fit(small_mlp(), blobs[0], epochs=10, callbacks=(callback,))
    assert len(result.history) == 2 and "callback" in result.stop_reason
    assert seen["config"]["epochs"] == 10 and seen["result"] is result


def test_learning_rate_schedule_is_visible_in_history(blobs):
    result = quiet_fit(small_mlp(), blobs[0], epochs=4, schedule="cosine", learning_rate=0.1, batch_size=60)
    steps = np.array([4, 8, 12, 16]) - 1  # the rate used by each epoch's last step
    expected = [float(result.state.optimizer.learning_rate_at(s)) for s in steps]
    np.testing.assert_allclose(result.history["learning_rate"], expected, rtol=1e-6)
    assert result.history["learning_rate"][-1] < 0.1 / 5


def test_an_optax_transformation_trains_with_its_own_rate_and_the_history_does_not_invent_one(blobs, tmp_path, caplog):
    train, _ = blobs
    own = quiet_fit(small_mlp(), train, optimizer=optax.sgd(0.5), epochs=2, run_dir=tmp_path / "run")
    assert "NaN or Inf" not in caplog.text  # TensorBoard is not given the unknown rate
    named = quiet_fit(small_mlp(), train, optimizer="sgd", learning_rate=0.5, epochs=2)
    for a, b in zip(jax.tree.leaves(params_of(own.model)), jax.tree.leaves(params_of(named.model))):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    # fit's default learning rate (1e-3) used to be reported here, and written to config.json
    assert np.isnan(own.history["learning_rate"]).all()
    assert own.config["optimizer"] == {"name": "custom", "learning_rate": None}
    assert json.loads((tmp_path / "run" / "config.json").read_text())["fit"]["optimizer"]["learning_rate"] is None
    reported = quiet_fit(small_mlp(), train, optimizer=optax.sgd(0.5), learning_rate=0.5, epochs=1)
    assert reported.history["learning_rate"].tolist() == [0.5]
    assert named.history["learning_rate"].tolist() == [0.5, 0.5]
    assert quiet_fit(small_mlp(), train, epochs=1).config["optimizer"]["learning_rate"] == 1e-3  # by name: 1e-3


def test_regression_with_mse():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5]) + 0.3).astype(np.float32)
    model = MLP(3, (), 1, rngs=nnx.Rngs(0))
    result = quiet_fit(model, (x, y), loss="mse", epochs=40, learning_rate=0.05)
    assert result.history.columns == ["epoch", "loss", "learning_rate"]
    assert result.history["loss"][-1] < 1e-3
    assert dlfund.evaluate(model, (x, y), loss="mse")["loss"] < 1e-3
    with pytest.raises(ValueError, match="regression"):
        quiet_fit(model, (x, y), loss="mse", metrics=("accuracy",))


def test_binary_logistic_regression_on_breast_cancer():
    ds = dlfund.data.load("breast_cancer")
    model = LogisticRegression(30, 2, rngs=nnx.Rngs(0))
    result = dlfund.fit(
        model, ds, epochs=20, batch_size=32, learning_rate=0.01, progress=False, metrics=("accuracy", "f1")
    )
    report = dlfund.evaluate(model, ds.test)
    assert report["accuracy"] > 0.93 and report["f1"] > 0.9  # f1 of the positive (malignant) class
    assert {"precision", "recall", "precision_macro", "confusion_matrix"} <= set(report)
    assert np.sum(report["confusion_matrix"]) == len(ds.test[0])
    assert result.history["val_accuracy"][-1] > 0.9


def test_evaluate_counts_every_example_and_agrees_with_predict(blobs):
    train, val = blobs
    model = small_mlp()
    quiet_fit(model, train)
    x, y = val[0][:53], val[1][:53]  # 53 = 2 batches of 20 + a ragged 13
    report = dlfund.evaluate(model, (x, y), batch_size=20)
    predictions = np.argmax(dlfund.predict(model, x, batch_size=20), axis=-1)
    assert report["num_examples"] == 53 and np.sum(report["confusion_matrix"]) == 53
    assert report["accuracy"] == pytest.approx(np.mean(predictions == y))
    assert report["f1_macro"] == pytest.approx(float(dlfund.metrics.f1(y, predictions, num_classes=3)), abs=1e-6)
    assert dlfund.predict(model, x).shape == (53, 3)


def test_every_execution_strategy_gives_the_same_history(blobs):
    scan = quiet_fit(small_mlp(), blobs[0], execution="scan")
    for strategy in ("loop", "chunk"):  # 15 steps per epoch: one chunk of 8, then 7 single steps
        other = quiet_fit(small_mlp(), blobs[0], execution=strategy)
        assert other.execution == strategy
        np.testing.assert_allclose(scan.history["loss"], other.history["loss"], rtol=1e-5)


def test_convolutional_models_on_cpu_run_in_chunks():
    x = np.random.default_rng(0).normal(size=(32, 8, 8, 1)).astype(np.float32)
    model = dlfund.models.CNN((8, 8, 1), channels=(4,), dense=(), num_classes=2, rngs=nnx.Rngs(0))
    assert quiet_fit(model, (x, np.arange(32) % 2), epochs=1).execution == "chunk"


# --- bad input: a clear error before anything compiles --------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"optimizer": "adamm"}, ValueError, "Known optimizers"),
        ({"loss": "softmax_crossentropy"}, ValueError, "Known losses"),
        ({"metrics": ("acuracy",)}, ValueError, "Known metrics"),
        ({"regularizers": ("l3",)}, ValueError, "Known regularizers"),
        ({"schedule": "linear"}, ValueError, "Known schedules"),
        ({"batch_size": 0}, ValueError, "batch_size must be an integer >= 1"),
        ({"epochs": 0}, ValueError, "epochs must be an integer >= 1"),
        ({"learning_rate": 0.0}, ValueError, "learning_rate must be a finite number > 0"),
        ({"learning_rate": -1e-3}, ValueError, "learning_rate"),
        ({"learning_rate": float("nan")}, ValueError, "learning_rate"),
        ({"execution": "fast"}, ValueError, "Known: auto, scan, loop"),
        ({"early_stopping": dlfund.EarlyStopping()}, ValueError, "monitors 'val_loss'.*pass validation_data"),
        ({"label_smoothing": 2.0}, ValueError, "label_smoothing"),
    ],
)
def test_bad_settings_fail_before_training(blobs, kwargs, error, match):
    with pytest.raises(error, match=match):
        quiet_fit(small_mlp(), blobs[0], **kwargs)


def test_bad_data_fails_with_a_message_naming_the_problem(blobs):
    (x, y), val = blobs
    cases = [
        ((x, y[:-1]), {}, "240 inputs .* but 239 targets"),
        ((x[:0], y[:0]), {}, "train split is empty"),
        ((x, np.where(y == 2, 5, y)), {}, r"the model has 3 outputs but the labels go up to 5: .*num_classes=6"),
        ((x, y - 1), {}, r"found \[-1\]"),
        ((x, y + 0.5), {}, "integer class ids"),
        ((np.concatenate([x, x], axis=1), y), {}, "expects 4 input features .* = 8 features"),
        (
            (np.where(np.arange(240)[:, None] == 17, np.nan, x), y),
            {},
            "train inputs contain 4 NaN/Inf values.*example 17",
        ),
        ((x, y), {"validation_data": (np.full_like(val[0], np.inf), val[1])}, "validation inputs contain"),
        ((x, y), {"validation_data": (val[0][:, :2], val[1])}, "validation examples have shape"),
    ]
    for data, kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            quiet_fit(small_mlp(), data, **kwargs)


def test_model_and_dataset_class_counts_must_agree(digits):
    with pytest.raises(ValueError, match=r"distinguishes 3 classes .* dataset has 10"):
        dlfund.fit(MLP(64, (8,), 3, rngs=nnx.Rngs(0)), digits, progress=False)


def test_batch_larger_than_the_training_set_warns_and_uses_one_full_batch(blobs):
    with pytest.warns(UserWarning, match="larger than the 240 training examples"):
        result = quiet_fit(small_mlp(), blobs[0], batch_size=1000, epochs=2)
    assert result.config["batch_size"] == 240 and result.config["steps_per_epoch"] == 1
    assert int(result.state.step) == 2


def test_a_diverging_run_stops_with_the_epoch_and_step_and_keeps_finite_weights(blobs):
    x, y = blobs[0]
    with pytest.warns(dlfund.NonFiniteLossWarning, match=r"epoch \d+, step \d+ of 15") as caught:
        warnings.simplefilter("ignore", dlfund.DataWarning)  # x * 1e3 is unnormalized on purpose
        result = quiet_fit(small_mlp(), (x * 1e3, y), optimizer="sgd", learning_rate=1e8, epochs=20)
    assert "became NaN/Inf" in result.stop_reason and "learning rate" in result.stop_reason
    assert len([w for w in caught if w.category is dlfund.NonFiniteLossWarning]) == 1
    for leaf in jax.tree.leaves(params_of(result.model)):
        assert np.isfinite(leaf).all()
    assert len(result.history) < 20
    assert len(result.epoch_seconds) == len(result.history) + 1  # and the partial epoch replayed, as documented


def test_the_stop_message_names_the_exact_step_that_went_non_finite(blobs):
    """The poisoned example sits in the 8th batch of epoch 1; the message, and the state, stop right there."""
    from dlfund.train.execution import epoch_order
    from dlfund.train.fit import order_root

    x, y = blobs[0]
    order = np.asarray(epoch_order(jax.random.fold_in(order_root(0), 1), len(y), 16))
    y = y.copy()
    y[order[7, 0]] = 3  # the only example of class 3, in batch 8 of 15

    def loss(outputs, labels):  # NaN exactly on the batch that holds class 3
        return jnp.where(labels == 3, jnp.nan, optax.softmax_cross_entropy_with_integer_labels(outputs, labels))

    expected = r"the loss became NaN/Inf at epoch 1, step 8 of 15 \(global step 8\)"
    with pytest.warns(dlfund.NonFiniteLossWarning, match=expected):
        result = quiet_fit(MLP(4, (8,), 4, rngs=nnx.Rngs(0)), (x, y), loss=loss, metrics=())
    assert int(result.state.step) == 7 and len(result.history) == 0


def test_a_nan_gradient_with_a_finite_loss_is_caught_even_at_the_last_step(blobs):
    # sqrt at 0: the loss is 0, its gradient is NaN; with one step per epoch only the final state can show it.
    loss = lambda outputs, y: jnp.sqrt(jnp.sum(outputs * 0.0, axis=-1))
    model = small_mlp()
    before = params_of(model)
    with pytest.warns(dlfund.NonFiniteLossWarning, match=r"the gradient became NaN/Inf at epoch 1, step 1 of 1"):
        result = quiet_fit(model, blobs[0], loss=loss, batch_size=240, metrics=())
    assert len(result.history) == 0 and result.best_epoch is None
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(params_of(result.model))):
        np.testing.assert_array_equal(a, b)


def test_weights_that_overflow_with_a_finite_loss_stop_the_run_before_the_update(blobs):
    """An update can take the weights to Inf while its loss and gradient are finite; the run stops before it."""
    x, y = blobs[0]
    loss = lambda outputs, labels: jnp.mean((outputs - 100.0) ** 2, axis=-1)
    model = small_mlp()
    with pytest.warns(dlfund.NonFiniteLossWarning, match=r"the weights \(the update overflowed\) became NaN/Inf"):
        result = quiet_fit(model, (x, y), loss=loss, optimizer="sgd", learning_rate=3e38, batch_size=240, metrics=())
    for leaf in jax.tree.leaves(params_of(result.model)):
        assert np.isfinite(leaf).all()


def test_no_warning_on_a_normal_run(blobs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet_fit(small_mlp(), blobs[0], epochs=1)


def test_augmentation_runs_inside_the_step_is_seeded_and_validated():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 8, 8, 1)).astype(np.float32)
    y = (x[:, :4].mean(axis=(1, 2, 3)) > 0).astype(np.int32)

    def go(**kwargs):
        model = MLP(64, (16,), 2, rngs=nnx.Rngs(0))
        return quiet_fit(model, (x, y), **kwargs)

    plain = go()
    augmented = [go(augment=("crop:2", "flip")) for _ in range(2)]
    assert augmented[0].history == augmented[1].history  # same seed, same augmentation draws
    assert augmented[0].history != plain.history
    assert augmented[0].config["augment"] == ["crop:2", "flip:0.5"]
    assert go(augment=("noise:0",)).history == plain.history  # identity at zero strength
    with pytest.raises(ValueError, match="Known augmentations"):
        go(augment=("flipp",))
    with pytest.raises(ValueError, match=r"needs images \[B, H, W, C\]"):
        quiet_fit(MLP(64, (16,), 2, rngs=nnx.Rngs(0)), (x.reshape(96, -1), y), augment=("flip",))


def test_every_callback_sees_the_epoch_in_which_another_asks_to_stop(blobs):
    seen = []
    stopper = dlfund.LambdaCallback(on_epoch_end=lambda epoch, logs, state: epoch == 2)
    logger = dlfund.LambdaCallback(on_epoch_end=lambda epoch, logs, state: seen.append(epoch))
    quiet_fit(small_mlp(), blobs[0], epochs=5, callbacks=(stopper, logger))
    assert seen == [1, 2]


def test_the_progress_bar_shows_each_epochs_own_metrics(blobs, monkeypatch):
    """Several epochs run in one compiled call and report as they end: when the bar reaches epoch k, the numbers
    beside it are epoch k's (they were epoch k-1's while the call ran)."""
    import importlib

    fit_module = importlib.import_module("dlfund.train.fit")  # the module, not dlfund.train's fit function
    shown = []

    class RecordingBar:
        def __init__(self, *args, initial=0, **kwargs):
            self.n, self.postfix = initial, {}

        def set_postfix(self, postfix, refresh=True):
            self.postfix = dict(postfix)

        def update(self, steps):
            self.n += steps
            if steps:
                shown.append((self.n, self.postfix.get("loss")))

        def close(self):
            pass

    monkeypatch.setattr(fit_module, "tqdm", RecordingBar)
    train, val = blobs
    result = dlfund.fit(small_mlp(), train, validation_data=val, epochs=4, batch_size=16, execution="scan")
    assert [n for n, _ in shown] == [1, 2, 3, 4]
    assert [loss for _, loss in shown] == [f"{v:.4g}" for v in result.history["loss"]]
