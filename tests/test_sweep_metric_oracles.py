"""Oracle tests for sweeps, sweep results, ensembles, early stopping and callbacks, from a mutation review.

Each test here failed with a one-line bug that the rest of the suite let through. The oracles are independent of
the code under test:

* a member of a sweep against a separate ``dlfund.fit`` of that member alone (its own seed, learning rate and
  L2 strength), and its best epoch against the argmin of its own validation curve (NumPy);
* ``SweepResult.best``, ``weights``, ``table`` against hand-built results whose right answer is known by
  construction (the best member by its best epoch, not its last; NaN epochs skipped; the sweep's own mode);
* an ensemble's outputs against ``log(mean_k softmax(f_k(x)))`` computed in NumPy from separately built,
  identical members in eval mode;
* the streaming metrics with fractional masks against scikit-learn's ``sample_weight`` (hypothesis);
* ``improves_upward`` and ``LivePlot`` against the documented rules, called directly.
"""

from __future__ import annotations

import math
import types
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sklearn.metrics as skm
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st
from sweep_helpers import problem

import dlfund
from dlfund import metrics
from dlfund.history import History
from dlfund.models import MLP
from dlfund.train.early_stopping import improves_upward
from dlfund.train.sweep_result import SweepResult

TRAIN, VAL = problem()
OPTIONS = dict(batch_size=16, progress=False, validation_data=VAL)


def mlp(rngs):
    return MLP(5, (16,), 3, rngs=rngs)


def params(model):
    return [np.asarray(a) for a in jax.tree.leaves(nnx.state(model, nnx.Param))]


# ----------------------------------------------------------------------------------------------------
# Sweeps against their members' own fits
# ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sweep_without_early_stopping():
    # Over 4 epochs, learning rate 1e-2 improves every epoch while 0.3 overshoots after epoch 3 (val_loss 0.44
    # then 0.70): the two members have different best epochs, so a best epoch read off the wrong member shows.
    # Both members use seed 0, so the seed is a member key without changing any number.
    return dlfund.sweep(mlp, TRAIN, {"learning_rate": [1e-2, 0.3], "seed": [0, 0]}, epochs=4, **OPTIONS)


def test_without_early_stopping_each_member_best_epoch_is_the_argmin_of_its_own_val_loss(
    sweep_without_early_stopping,
):
    result = sweep_without_early_stopping
    assert result.members == [{"learning_rate": 1e-2, "seed": 0}, {"learning_rate": 0.3, "seed": 0}]  # in order
    expected = [int(np.nanargmin(h["val_loss"])) + 1 for h in result.histories]
    assert expected[0] != expected[1]  # else this test could not tell the members apart
    assert result.best_epochs == expected
    assert [h.selected_epoch for h in result.histories] == expected


def test_without_early_stopping_the_sweep_ranks_members_by_val_loss_like_fit(sweep_without_early_stopping):
    # fit's best epoch (and so the sweep's "best") is read from val_loss when there is validation data.
    result = sweep_without_early_stopping
    assert result.monitor == ("val_loss", "min")
    assert result.best() == int(np.argmin([np.nanmin(h["val_loss"]) for h in result.histories]))
    assert all("best_val_loss" in row and row["stopped"] == "" for row in result.table())


def test_the_sweep_config_says_which_options_are_per_member(sweep_without_early_stopping):
    # The recorded configuration (config.json of a run folder) must not claim member 0's value for all members.
    config = sweep_without_early_stopping.config
    assert config["optimizer"]["learning_rate"] == "per member" and config["seed"] == "per member"
    assert config["members"] == sweep_without_early_stopping.members


def test_l2_members_replace_the_strength_of_an_l2_regularizer_given_as_a_fit_option():
    # With regularizers=("l2:...",) shared, the member's l2 value must replace that penalty's strength (a fit with
    # regularizers=("l2:<member value>",)), not leave the shared one in force.
    members = {"l2": [0.0, 0.5]}
    result = dlfund.sweep(mlp, TRAIN, members, epochs=2, regularizers=("l2:1e-3",), **OPTIONS)
    assert result.config["regularizers"] == ["l2:per member"]  # not the shared 1e-3
    for k, strength in enumerate(members["l2"]):
        alone = dlfund.fit(mlp(nnx.Rngs(0)), TRAIN, epochs=2, regularizers=(f"l2:{strength}",), **OPTIONS)
        np.testing.assert_allclose(result.histories[k]["loss"], alone.history["loss"], rtol=1e-5)
        for a, b in zip(params(result.model(k)), params(alone.model), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("members", "message"),
    [
        # fit refuses these values; a sweep member with them must be refused too, not trained.
        ({"label_smoothing": [0.1, 1.0]}, r"member 1: label_smoothing=1.0: label smoothing must be in \[0, 1\)"),
        ({"learning_rate": [1e-3, 0.0]}, "member 1: learning_rate=0.0: the learning rate must be > 0"),
    ],
)
def test_member_values_that_fit_refuses_are_refused(members, message):
    with pytest.raises(ValueError, match=message):
        dlfund.sweep(mlp, TRAIN, members, epochs=1, **OPTIONS)


# ----------------------------------------------------------------------------------------------------
# SweepResult on hand-built results: the right answer is known by construction
# ----------------------------------------------------------------------------------------------------


def built_result(val_losses, *, monitor=("val_loss", "min"), stop_reasons=None, restored=None, state=None, best=None):
    histories = [
        History([{"epoch": e, "loss": 1.0, "val_loss": v} for e, v in enumerate(values, start=1)])
        for values in val_losses
    ]
    size = len(histories)
    return SweepResult(
        members=[{"seed": k} for k in range(size)],
        histories=histories,
        best_epochs=[len(h) for h in histories],
        stop_reasons=stop_reasons or [None] * size,
        state=state,
        best_weights=best,
        restored=np.zeros(size, bool) if restored is None else np.asarray(restored),
        monitor=monitor,
        epoch_seconds=[0.1],
        wasted_fraction=0.0,
        seeds=list(range(size)),
    )


def test_best_ranks_members_by_their_best_epoch_not_their_last():
    # Member 0 reached 0.5 and then got worse (0.9); member 1 never got below 0.6. The best member is 0.
    result = built_result([[0.5, 0.9], [0.6, 0.7]])
    assert result.best() == 0
    assert result.best("val_loss", mode="max") == 0  # 0.9 is the highest value any member reached


def test_best_skips_a_member_s_nan_epochs_but_keeps_its_finite_ones():
    # Member 0 reached 0.3 before its loss went NaN: that 0.3 is still the best value of the sweep.
    result = built_result([[0.3, math.nan], [0.5, 0.4]])
    assert result.best() == 0
    with pytest.raises(ValueError, match="no member has a finite val_loss"):
        built_result([[math.nan], [math.nan]]).best()


def test_best_uses_the_sweep_s_own_mode_for_its_monitor():
    # Early stopping on a column whose name says nothing (mode="max" given): best() must use that mode, not
    # guess from the name (which cannot be done for "val_margin").
    histories = [[0.2, 0.8], [0.5, 0.6]]
    result = built_result(histories, monitor=("val_margin", "max"))
    for h, values in zip(result.histories, histories):
        for row, v in zip(h.rows, values):
            row["val_margin"] = v
    assert result.best() == 0 and result.best("val_margin") == 0


def test_the_table_tells_an_early_stop_from_a_non_finite_halt():
    stops = [
        "early stopping: val_loss did not improve for 2 epochs (best 0.5 at epoch 1)",
        "training stopped: the loss became NaN/Inf at epoch 2, step 4 of 11 (global step 15).",
        None,
    ]
    result = built_result([[0.5, 0.6], [0.4, 0.3], [0.7, 0.2]], stop_reasons=stops)
    assert [row["stopped"] for row in result.table()] == ["early", "non-finite", ""]


def test_weights_are_each_member_s_own_choice_of_best_or_last():
    # Member 0 restored its best epoch, member 1 (a member whose monitor was never finite) did not: each gets
    # its own, whatever the other member's flag says.
    last = {"w": jnp.array([1.0, 2.0])}
    best = ({"w": jnp.array([10.0, 20.0])}, {})
    state = types.SimpleNamespace(params=last, model_state={})
    result = built_result([[0.5], [0.4]], restored=[True, False], state=state, best=best)
    assert float(result.weights(0)[0]["w"]) == 10.0
    assert float(result.weights(1)[0]["w"]) == 2.0
    result = built_result([[0.5], [0.4]], restored=[False, True], state=state, best=best)
    assert float(result.weights(0)[0]["w"]) == 1.0
    assert float(result.weights(1)[0]["w"]) == 20.0


# ----------------------------------------------------------------------------------------------------
# Ensembles against NumPy
# ----------------------------------------------------------------------------------------------------


def test_ensemble_outputs_are_the_log_of_the_averaged_probabilities():
    # The docstring promises log(mean_k softmax(f_k(x))), normalized log-probabilities, not just something with
    # the same softmax (a constant shift would pass every test that only looks at probabilities).
    x = VAL[0][:16]
    members = [MLP(5, (8,), 3, rngs=nnx.Rngs(s)) for s in (0, 1, 2)]
    expected = np.log(np.mean([jax.nn.softmax(np.asarray(m(x), np.float64), axis=-1) for m in members], axis=0))
    outputs = np.asarray(dlfund.predict(dlfund.Ensemble(members), x))
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jax.nn.logsumexp(outputs, axis=-1), 0.0, atol=1e-6)


def test_an_ensemble_called_directly_uses_its_members_in_eval_mode():
    # Members left in train mode (with dropout) must still be used in eval mode: called as a module, the ensemble
    # gives the eval-mode average, the same every call. The oracle: identical members built apart, in eval mode.
    x = VAL[0][:16]
    members = [MLP(5, (32,), 3, dropout=0.5, rngs=nnx.Rngs(s)) for s in (0, 1)]
    for m in members:
        m.train()
    ensemble = dlfund.Ensemble(members)
    reference = [MLP(5, (32,), 3, dropout=0.5, rngs=nnx.Rngs(s)) for s in (0, 1)]
    for m in reference:
        m.eval()
    expected = np.log(np.mean([jax.nn.softmax(np.asarray(m(x), np.float64), axis=-1) for m in reference], axis=0))
    np.testing.assert_allclose(np.asarray(ensemble(x)), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(ensemble(x)), expected, rtol=1e-5, atol=1e-6)


def test_an_ensemble_of_a_regression_sweep_is_refused():
    # The sweep's own loss decides: members trained with mse give no probabilities, even though a one-output
    # model's default loss (binary cross-entropy) would.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3)).astype(np.float32)
    y = x.sum(axis=1, keepdims=True).astype(np.float32)
    result = dlfund.sweep(
        lambda rngs: MLP(3, (4,), 1, rngs=rngs), (x, y), {"seed": [0, 1]}, epochs=1, batch_size=16, loss="mse",
        progress=False,
    )  # fmt: skip
    with pytest.raises(ValueError, match="not probabilities"):
        dlfund.ensemble_predict(result, x)


# ----------------------------------------------------------------------------------------------------
# Early stopping's direction from a column name, and LivePlot's schedule
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("monitor", "upward"),
    [
        ("val_logloss", False),  # one word ending in loss (XGBoost's name)
        ("mlogloss", False),
        ("val_merror", False),  # ending in error
        ("val_top1accuracy", True),  # ending in accuracy
        ("val_AUC", True),  # names are read case-insensitively
        ("VAL_Loss", False),
    ],
)
def test_improves_upward_reads_word_endings_and_any_case(monitor, upward):
    assert improves_upward(monitor) is upward
    assert dlfund.EarlyStopping(monitor=monitor).maximize is upward


def test_early_stopping_refuses_an_infinite_min_delta():
    # min_delta=inf would make every epoch after the first "no improvement".
    with pytest.raises(ValueError, match="min_delta must be a finite number"):
        dlfund.EarlyStopping(min_delta=math.inf)


def test_live_plot_draws_on_every_nth_epoch_and_ends_with_the_run_s_whole_history(monkeypatch):
    IPython_display = pytest.importorskip("IPython.display")
    drawn = []  # the number of history rows each drawing showed

    class Handle:
        def update(self, image):
            drawn.append(len(live.history))

    def display(image, display_id=False):
        drawn.append(len(live.history))
        return Handle()

    monkeypatch.setattr(IPython_display, "display", display)
    live = dlfund.LivePlot(every=2)
    live.on_train_begin({})
    rows = [{"epoch": e, "loss": 1.0 / e} for e in range(1, 6)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for row in rows:
            live.on_epoch_end(row["epoch"], row, None)
        # A resumed run's result holds epochs from before this call too: the last drawing shows all of them.
        whole = History([{"epoch": 0, "loss": 2.0}, *rows])
        live.on_train_end(types.SimpleNamespace(history=whole))
    assert drawn == [2, 4, 6]  # after epochs 2 and 4, then the whole history at the end
    assert live.history is whole


# ----------------------------------------------------------------------------------------------------
# Streaming metrics with fractional masks against scikit-learn's sample_weight
# ----------------------------------------------------------------------------------------------------

PADDED = 24  # every batch is padded to this size with mask 0, so the eager JAX operations keep one shape


@settings(max_examples=40, deadline=None, derandomize=True)  # the same examples every run
@given(
    num_classes=st.sampled_from([2, 3, 4]),
    rows=st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 3), st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0])),
        min_size=1,
        max_size=PADDED,
    ),
    average=st.sampled_from(["binary", "micro", "macro", "weighted"]),
    zero_division=st.sampled_from([0.0, 1.0]),
)
def test_streaming_scores_with_a_fractional_mask_equal_sklearn_with_sample_weight(
    num_classes, rows, average, zero_division
):
    # The accumulators keep float counts "so that fractional masks work": a mask is a per-example weight, as
    # sklearn's sample_weight is. Two batches, to check the running sums too.
    if average == "binary" and num_classes != 2:
        average = "macro"
    y_true = np.array([t % num_classes for t, _, _ in rows])
    y_pred = np.array([p % num_classes for _, p, _ in rows])
    weight = np.array([w for _, _, w in rows])
    if weight.sum() == 0:
        weight[0] = 0.5
    pad = PADDED - len(rows)
    labels = np.concatenate([y_true, np.zeros(pad, int)])
    predictions = np.concatenate([y_pred, np.zeros(pad, int)])
    mask = np.concatenate([weight, np.zeros(pad)]).astype(np.float32)
    half = PADDED // 2
    classes = np.arange(num_classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn's UndefinedMetricWarning where zero_division applies
        expected_accuracy = skm.accuracy_score(y_true, y_pred, sample_weight=weight)
        for cls, sk_score in ((metrics.Precision, skm.precision_score), (metrics.Recall, skm.recall_score),
                              (metrics.F1, skm.f1_score)):  # fmt: skip
            metric = cls(num_classes, average=average, zero_division=zero_division)
            state = metric.init()
            for part in (slice(0, half), slice(half, PADDED)):
                state = metric.update(state, labels=labels[part], predictions=predictions[part], mask=mask[part])
            expected = sk_score(
                y_true, y_pred, labels=classes, average=average, sample_weight=weight, zero_division=zero_division
            )
            np.testing.assert_allclose(float(metric.compute(state)), expected, rtol=1e-5, atol=1e-6)
    accuracy = metrics.Accuracy()
    state = accuracy.update(accuracy.init(), labels=labels, predictions=predictions, mask=mask)
    np.testing.assert_allclose(float(accuracy.compute(state)), expected_accuracy, rtol=1e-6)
