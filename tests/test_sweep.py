"""dlfund.sweep: K members in one vmapped program, each equal to its own dlfund.fit."""

import inspect
import textwrap
import warnings

import jax
import numpy as np
import pytest
from flax import nnx
from sweep_helpers import problem
from virtual_devices import run_on_8_devices

import dlfund
from dlfund.models import MLP
from dlfund.train import sweeps as sweep_lib

TRAIN, VAL = problem()
OPTIONS = dict(batch_size=16, learning_rate=1e-2, progress=False, validation_data=VAL)
OPTIONS_NO_LR = {k: v for k, v in OPTIONS.items() if k != "learning_rate"}


def model_fn(dropout=0.2, classes=3):
    return lambda rngs: MLP(5, (16,), classes, dropout=dropout, rngs=rngs)


def own_fit(member, *, dropout=0.2, **options):
    """Member ``member`` trained alone: exactly what the sweep promises it equals."""
    seed = member.get("seed", 0)
    options = {**OPTIONS, **options, "seed": seed}
    for key in ("learning_rate", "weight_decay"):
        if key in member:
            options[key] = member[key]
    if member.get("label_smoothing"):
        options["label_smoothing"] = member["label_smoothing"]
    if "l2" in member:
        options["regularizers"] = (f"l2:{member['l2']}",)
    return dlfund.fit(model_fn(dropout)(nnx.Rngs(seed)), TRAIN, **options)


def params(model):
    return [np.asarray(a) for a in jax.tree.leaves(nnx.state(model, nnx.Param))]


def assert_close_weights(a, b, rtol=1e-4, atol=1e-5):
    for x, y in zip(params(a), params(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def test_each_member_equals_its_own_fit_over_a_short_horizon():
    # Short: with dropout, batched and unbatched kernels' rounding differences grow chaotically over many steps.
    members = {"seed": [0, 1, 2], "learning_rate": [1e-2, 3e-2, 1e-2]}
    result = dlfund.sweep(model_fn(), TRAIN, members, epochs=3, **OPTIONS_NO_LR)
    assert len(result) == 3 and result.members[1] == {"seed": 1, "learning_rate": 3e-2}
    for k, member in enumerate(result.members):
        alone = own_fit(member, epochs=3)
        assert_close_weights(result.model(k), alone.model)
        assert result.histories[k].columns == alone.history.columns
        for column in alone.history.columns:
            np.testing.assert_allclose(result.histories[k][column], alone.history[column], rtol=1e-4, atol=1e-6)
    # Members 0 and 2 differ only in their seed: different initializations and data orders.
    assert not np.allclose(params(result.model(0))[0], params(result.model(2))[0])


def test_members_stop_where_their_own_fits_stop():
    """Over a long run, compare outcomes: stop and best epochs, with a min_delta far above the rounding noise."""
    stopper = dlfund.EarlyStopping(monitor="val_loss", patience=3, min_delta=0.02)
    members = {"seed": [0, 1, 2, 3], "learning_rate": [3e-3, 3e-2, 1e-2, 1e-1]}
    result = dlfund.sweep(model_fn(), TRAIN, members, epochs=60, early_stopping=stopper, **OPTIONS_NO_LR)
    ran = [len(h) for h in result.histories]
    assert len(set(ran)) > 1, ran  # the members stop at different epochs, so the masking is exercised
    for k, member in enumerate(result.members):
        alone = own_fit(member, epochs=60, early_stopping=stopper)
        assert (len(result.histories[k]), result.best_epochs[k]) == (len(alone.history), alone.best_epoch), k
        assert result.stop_reasons[k] == alone.stop_reason or (result.stop_reasons[k] or "").startswith("early")
        assert result.histories[k].restored_best == alone.history.restored_best
    # A stopped member is frozen; its compute is still spent while the others train: that share is reported.
    expected_waste = 1 - sum(ran) / (len(ran) * max(ran))
    assert result.wasted_fraction == pytest.approx(expected_waste)


def test_a_member_does_not_depend_on_the_other_members():
    """Member 0 alone and next to two others: the same run up to float rounding (measured: the weights agree to
    ~1e-7 and the epoch means to 1 ulp; XLA's batched reductions round differently for different K, and a sweep of
    1 differs from a plain fit as much)."""
    one = dlfund.sweep(model_fn(), TRAIN, {"seed": [0]}, epochs=4, **OPTIONS)
    three = dlfund.sweep(model_fn(), TRAIN, {"seed": [0, 5, 6]}, epochs=4, **OPTIONS)
    for column in one.histories[0].columns:
        np.testing.assert_allclose(one.histories[0][column], three.histories[0][column], rtol=1e-6, atol=1e-7)
    assert_close_weights(one.model(0), three.model(0), rtol=1e-6, atol=1e-6)


def test_another_value_of_a_traced_hyperparameter_does_not_compile_again():
    base = dict(epochs=2, regularizers=("l2:1e-4",), label_smoothing=0.1, weight_decay=1e-4, **OPTIONS)
    first = {"learning_rate": [1e-2, 3e-2], "seed": [0, 1], "dropout": [0.1, 0.2]}
    dlfund.sweep(model_fn(), TRAIN, first, **{k: v for k, v in base.items() if k != "learning_rate"})
    size = sweep_lib._run_members._cache_size()
    assert size >= 1
    again = dict(base, regularizers=("l2:1e-2",), label_smoothing=0.2, weight_decay=1e-3)
    again.pop("learning_rate")
    dlfund.sweep(model_fn(), TRAIN, {"learning_rate": [1e-3, 1e-1], "seed": [2, 3], "dropout": [0.0, 0.5]}, **again)
    assert sweep_lib._run_members._cache_size() == size
    three = {"learning_rate": [1e-3, 1e-1, 1e-2], "seed": [2, 3, 4], "dropout": [0.3] * 3}
    dlfund.sweep(model_fn(), TRAIN, three, **again)
    assert sweep_lib._run_members._cache_size() == size + 1  # another member count is another shape


def test_a_fit_with_another_l2_strength_or_label_smoothing_does_not_compile_again():
    from dlfund.train import loop

    options = dict(epochs=2, **OPTIONS)
    first = dlfund.fit(model_fn()(nnx.Rngs(0)), TRAIN, regularizers=("l2:1e-4",), label_smoothing=0.1, **options)
    size = loop.run_epochs._cache_size()
    second = dlfund.fit(model_fn()(nnx.Rngs(0)), TRAIN, regularizers=("l2:1e-1",), label_smoothing=0.3, **options)
    assert loop.run_epochs._cache_size() == size
    # ... and the new values are the ones used: a stronger penalty, more smoothing, a higher loss.
    assert second.history["loss"][-1] > first.history["loss"][-1]
    assert second.config["regularizers"] == ["l2:0.1"] and second.config["loss"]["label_smoothing"] == 0.3


def test_weight_decay_l2_and_label_smoothing_members_equal_their_fits():
    # Values of 0 next to others: the term is in the program for every member, and 0 must mean "off".
    members = {"weight_decay": [0.0, 5e-2], "l2": [1e-2, 0.0], "label_smoothing": [0.2, 0.0], "seed": [0, 1]}
    result = dlfund.sweep(model_fn(0.0), TRAIN, members, epochs=3, **OPTIONS)
    for k, member in enumerate(result.members):
        alone = own_fit(member, dropout=0.0, epochs=3)
        assert_close_weights(result.model(k), alone.model)
        np.testing.assert_allclose(result.histories[k]["loss"], alone.history["loss"], rtol=1e-5)


def test_weight_decay_members_with_a_schedule_equal_their_fits():
    members = {"weight_decay": [0.0, 1e-1]}
    options = dict(OPTIONS, schedule="cosine", optimizer="adamw")
    result = dlfund.sweep(model_fn(0.0), TRAIN, members, epochs=3, **options)
    for k, member in enumerate(result.members):
        alone = own_fit(member, dropout=0.0, epochs=3, schedule="cosine", optimizer="adamw")
        assert_close_weights(result.model(k), alone.model)
        np.testing.assert_allclose(result.histories[k]["learning_rate"], alone.history["learning_rate"])


def test_evaluating_an_ensemble_again_does_not_compile_again():
    """Each evaluate of a SweepResult builds a new Ensemble; equal ensembles must share the compiled program."""
    from dlfund.train import evaluation

    result = dlfund.sweep(model_fn(0.0), TRAIN, {"seed": [0, 1]}, epochs=1, **OPTIONS)
    first = dlfund.evaluate(result, VAL)
    size = evaluation.evaluate_arrays._cache_size()
    assert dlfund.evaluate(result, VAL) == first
    assert dlfund.evaluate(dlfund.Ensemble(result.models()), VAL) == first
    assert evaluation.evaluate_arrays._cache_size() == size


def test_dropout_members_equal_fits_of_models_built_with_their_rate():
    # 0 next to others: the member's layers keep every unit, as a model built without dropout.
    members = {"dropout": [0.0, 0.3, 0.6], "seed": [0, 1, 2]}
    result = dlfund.sweep(model_fn(0.1), TRAIN, members, epochs=3, **OPTIONS)
    for k, member in enumerate(result.members):
        alone = own_fit(member, dropout=member["dropout"], epochs=3)
        assert_close_weights(result.model(k), alone.model)
        assert result.model(k).config["dropout"] == member["dropout"]
    with pytest.raises(ValueError, match="has no dropout layers"):
        dlfund.sweep(model_fn(0.0), TRAIN, {"dropout": [0.1, 0.2]}, epochs=1, **OPTIONS)


def test_a_diverging_member_stops_alone_where_its_own_fit_stops():
    members = {"learning_rate": [1e-2, 1e9]}
    with pytest.warns(dlfund.NonFiniteLossWarning, match="sweep member 1"):
        result = dlfund.sweep(model_fn(0.0), TRAIN, members, epochs=4, optimizer="sgd", **OPTIONS_NO_LR)
    with pytest.warns(dlfund.NonFiniteLossWarning):
        alone = own_fit({"learning_rate": 1e9}, dropout=0.0, epochs=4, optimizer="sgd")
    assert "NaN/Inf" in result.stop_reasons[1] and result.stop_reasons[1] == alone.stop_reason
    assert len(result.histories[1]) == len(alone.history)
    assert_close_weights(result.model(1), alone.model)
    assert result.stop_reasons[0] is None and len(result.histories[0]) == 4
    assert_close_weights(
        result.model(0), own_fit({"learning_rate": 1e-2}, dropout=0.0, epochs=4, optimizer="sgd").model
    )


def test_the_result_table_best_member_models_and_plot(tmp_path):
    stopper = dlfund.EarlyStopping(monitor="val_loss", patience=2, min_delta=0.02)
    members = dlfund.grid(learning_rate=[1e-3, 3e-2], seed=[0, 1])
    result = dlfund.sweep(model_fn(), TRAIN, members, epochs=30, early_stopping=stopper, **OPTIONS_NO_LR)
    table = result.table()
    assert [row["member"] for row in table] == [0, 1, 2, 3]
    for k, row in enumerate(table):
        history = result.histories[k]
        assert (row["learning_rate"], row["seed"]) == (members["learning_rate"][k], members["seed"][k])
        assert row["epochs_run"] == len(history) and row["best_epoch"] == result.best_epochs[k]
        assert row["best_val_loss"] == history["val_loss"][row["best_epoch"] - 1]
        # The metrics of the restored epoch, which model(k) holds: evaluate agrees.
        assert result.restored[k]
        assert dlfund.evaluate(result.model(k), VAL)["loss"] == pytest.approx(row["val_loss"], rel=1e-5)
    best_losses = [np.nanmin(h["val_loss"]) for h in result.histories]  # best() ranks by each member's best
    assert result.best() == int(np.argmin(best_losses))
    best_accuracy = [np.nanmax(h["val_accuracy"]) for h in result.histories]
    assert result.best("val_accuracy") == int(np.argmax(best_accuracy))
    text = result.to_csv(tmp_path / "sweep.csv")
    assert (tmp_path / "sweep.csv").read_text() == text
    assert text.splitlines()[0].startswith("member,learning_rate,seed,epochs_run,best_epoch,best_val_loss")
    assert len(text.splitlines()) == 5
    import matplotlib.pyplot as plt

    figure = result.plot()
    assert figure.number not in plt.get_fignums()  # detached from pyplot: Jupyter shows it once, as the value
    assert [ax.get_title() for ax in figure.axes] == ["loss", "val_loss"]
    assert len(figure.axes[0].get_lines()) == 2 * len(result)  # a curve and a best-epoch marker per member
    assert "SweepResult(4 members" in repr(result) and "learning_rate" in repr(result)
    with pytest.raises(IndexError, match=r"members 0\.\.3"):
        result.model(4)
    with pytest.raises(ValueError, match="not a history column"):
        result.best("val_f1")
    with pytest.raises(ValueError, match="pass mode='max' or mode='min'"):
        result.best("val_margin")


def test_ensemble_predict_averages_the_members_probabilities_and_evaluate_scores_it():
    result = dlfund.sweep(model_fn(0.0), TRAIN, {"seed": [0, 1, 2]}, epochs=3, **OPTIONS)
    x, y = VAL
    by_hand = np.mean([jax.nn.softmax(dlfund.predict(m, x), axis=-1) for m in result.models()], axis=0)
    averaged = dlfund.ensemble_predict(result, x)
    np.testing.assert_allclose(averaged, by_hand, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dlfund.ensemble_predict(result.models(), x), averaged, rtol=1e-6)
    scores = dlfund.evaluate(result, VAL)
    assert scores["accuracy"] == pytest.approx(np.mean(by_hand.argmax(-1) == y))
    assert scores["loss"] == pytest.approx(-np.mean(np.log(by_hand[np.arange(len(y)), y])), rel=1e-5)
    assert dlfund.evaluate(dlfund.Ensemble(result.models()), VAL) == scores


def test_an_ensemble_of_binary_models_averages_their_probabilities():
    train, val = problem(classes=2)
    models = [dlfund.models.LogisticRegression(5, rngs=nnx.Rngs(s)) for s in (0, 1)]
    for model in models:
        dlfund.fit(model, train, epochs=2, progress=False)
    by_hand = np.mean([jax.nn.sigmoid(dlfund.predict(m, val[0]).reshape(-1)) for m in models], axis=0)
    averaged = dlfund.ensemble_predict(models, val[0])
    np.testing.assert_allclose(averaged[:, 1], by_hand, rtol=1e-5)
    np.testing.assert_allclose(averaged.sum(-1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="not probabilities"):
        dlfund.Ensemble([dlfund.models.MLP(5, (4,), 1, rngs=nnx.Rngs(0))], loss="mse")


def test_grid_builds_every_combination_the_last_key_fastest():
    members = dlfund.grid(learning_rate=[1e-3, 1e-2], seed=[0, 1, 2])
    assert members == {"learning_rate": [1e-3] * 3 + [1e-2] * 3, "seed": [0, 1, 2] * 2}
    with pytest.raises(ValueError, match="is empty"):
        dlfund.grid(seed=[])
    with pytest.raises(ValueError, match="at least one key"):
        dlfund.grid()


@pytest.mark.parametrize(
    ("members", "options", "message"),
    [
        ({"seed": [0, 1], "learning_rate": [1e-3]}, {}, "seed has 2, learning_rate has 1"),
        ({"momentum": [0.9]}, {}, "unknown member key 'momentum'; sweepable keys: seed, learning_rate"),
        ({}, {}, "members is empty"),
        ({"seed": []}, {}, r"members\['seed'\] is empty"),
        ({"hidden": [(16,), (32,)]}, {}, "'hidden' is a model setting: it changes the model's shapes"),
        ({"batch_size": [16, 32]}, {}, "'batch_size' cannot differ between members: it changes the compiled"),
        ({"seed": 0}, {}, "must be a list with one value per member"),
        ({"learning_rate": [1e-3, -1.0]}, {}, "member 1: learning_rate=-1.0: the learning rate must be > 0"),
        ({"label_smoothing": [1.5]}, {}, r"label smoothing must be in \[0, 1\)"),
        ({"dropout": [0.1, 1.0]}, {}, r"member 1: dropout=1.0: a dropout rate must be in \[0, 1\)"),
        ({"learning_rate": [1e-3, float("inf")]}, {}, "member 1: learning_rate=inf: must be a finite number"),
        ({"seed": [0, 1]}, {"devices": "cpu"}, "devices must be 'auto', a number of devices or a list"),
        ({"seed": [0]}, {"seed": 3}, "both a member key and a fit option"),
        ({"seed": [0]}, {"epochs_per_call": 0}, "epochs_per_call must be"),
        ({"seed": [0]}, {"callbacks": [dlfund.Callback()]}, "does not take callbacks"),
        ({"seed": [0]}, {"execution": "loop"}, "runs whole epochs on the device"),
        ({"seed": [0]}, {"epoch": 3}, r"unknown fit option: 'epoch' \(did you mean epochs"),
        ({"label_smoothing": [0.1]}, {"loss": "mse"}, "applies to softmax_cross_entropy only"),
        ({"learning_rate": [0.1]}, {"optimizer": dlfund.optimizers.get("sgd")}, "optimizer given by name"),
    ],
)
def test_bad_members_and_options_are_refused_before_training(members, options, message):
    with pytest.raises(ValueError, match=message):
        dlfund.sweep(model_fn(), TRAIN, members, **{**OPTIONS_NO_LR, **options})


def test_members_whose_models_differ_in_shape_are_refused():
    widths = iter([16, 32])
    with pytest.raises(ValueError, match="member 1's model or training state differs in structure"):
        dlfund.sweep(lambda rngs: MLP(5, (next(widths),), 3, rngs=rngs), TRAIN, {"seed": [0, 1]}, **OPTIONS)


def test_fit_and_fit_config_have_the_same_options():
    """fit's keywords are a contract and FitConfig is where an option lives: the two must agree."""
    parameters = inspect.signature(dlfund.fit).parameters
    keywords = {n: p.default for n, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    fields = {n: getattr(dlfund.FitConfig(), n) for n in dlfund.FitConfig.names()}
    assert keywords == fields
    with pytest.raises(ValueError, match=r"'learningrate' \(did you mean learning_rate"):
        dlfund.FitConfig.of(learningrate=1e-3)


SHARDED = textwrap.dedent(
    """
    import jax, numpy as np, warnings
    from flax import nnx
    import dlfund
    assert len(jax.devices()) == 8
    rng = np.random.default_rng(0)
    x = rng.normal(size=(160, 5)).astype(np.float32); y = (x[:, 0] > 0).astype(np.int32)
    make = lambda rngs: dlfund.models.MLP(5, (8,), 2, rngs=rngs)
    members = {"seed": list(range(8))}
    spread = dlfund.sweep(make, (x, y), members, epochs=2, batch_size=16, progress=False)
    assert spread.config["member_devices"] == 8, spread.config["member_devices"]
    assert len(spread.state.step.sharding.device_set) == 8
    single = dlfund.sweep(make, (x, y), members, epochs=2, batch_size=16, progress=False, devices=1)
    for a, b in zip(spread.histories, single.histories):
        for column in a.columns:
            np.testing.assert_allclose(a[column], b[column], rtol=1e-5)
    try:
        dlfund.sweep(make, (x, y), {"seed": [0, 1, 2]}, epochs=1, progress=False, devices=2)
    except ValueError as error:
        assert "3 members do not split evenly over 2 devices" in str(error)
    else:
        raise AssertionError("3 members on 2 devices were accepted")
    print("OK")
    """
)


def test_the_member_axis_spreads_over_8_devices():
    run_on_8_devices(SHARDED)


def test_data_warnings_come_once_and_point_at_the_sweep_call():
    x, y = TRAIN
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dlfund.sweep(model_fn(), (x * 100, y), {"seed": [0, 1, 2]}, epochs=1, progress=False)
    data_warnings = [w for w in caught if issubclass(w.category, dlfund.DataWarning)]
    assert len(data_warnings) == 1 and data_warnings[0].filename == __file__


def test_a_sweep_run_folder_checkpoints_and_resumes_exactly(tmp_path, monkeypatch):
    from dlfund.train import sweep_run

    stopper = dlfund.EarlyStopping(monitor="val_loss", patience=2, min_delta=0.02)
    members = {"learning_rate": [3e-3, 1e-1], "seed": [0, 1]}
    options = dict(epochs=8, early_stopping=stopper, checkpoint_every=2, **OPTIONS_NO_LR)
    reference = dlfund.sweep(model_fn(), TRAIN, members, run_dir=tmp_path / "whole", **options)
    folder = tmp_path / "whole"
    for name in ("config.json", "sweep.csv", "curves.png", "result.json"):
        assert (folder / name).is_file(), name
    for k in range(2):
        saved = dlfund.load_model(folder / "members" / str(k) / "weights.safetensors")
        np.testing.assert_array_equal(dlfund.predict(saved, VAL[0]), dlfund.predict(reference.model(k), VAL[0]))
        assert dlfund.History.from_csv(folder / "members" / str(k) / "history.csv") == reference.histories[k]

    original = sweep_run.SweepRecorder.checkpoint

    def dies_after_epoch_4(self, epoch, *args):
        original(self, epoch, *args)
        if epoch == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(sweep_run.SweepRecorder, "checkpoint", dies_after_epoch_4)
    with pytest.raises(dlfund.TrainingInterrupted) as interrupted:
        dlfund.sweep(model_fn(), TRAIN, members, run_dir=tmp_path / "cut", **options)
    assert interrupted.value.checkpoint_epoch == 4
    monkeypatch.undo()
    with pytest.raises(ValueError, match="already holds a run; pass resume=True"):
        dlfund.sweep(model_fn(), TRAIN, members, run_dir=tmp_path / "cut", **options)
    with pytest.raises(ValueError, match="configured differently"):
        dlfund.sweep(model_fn(), TRAIN, {"learning_rate": [3e-3, 1e-2], "seed": [0, 1]}, run_dir=tmp_path / "cut",
                     resume=True, **options)  # fmt: skip
    resumed = dlfund.sweep(model_fn(), TRAIN, members, run_dir=tmp_path / "cut", resume=True, **options)
    assert resumed.histories == reference.histories  # bit for bit
    assert (resumed.best_epochs, resumed.stop_reasons) == (reference.best_epochs, reference.stop_reasons)
    for k in range(2):
        for a, b in zip(params(resumed.model(k)), params(reference.model(k)), strict=True):
            np.testing.assert_array_equal(a, b)
