"""dlfund.metrics against scikit-learn, and the accumulators against the functional forms."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import label_strategies
import numpy as np
import pytest
import sklearn.metrics as skm
from hypothesis import given, settings
from hypothesis import strategies as st

from dlfund import metrics
from dlfund.metrics import (
    AVERAGES,
    F1,
    METRICS,
    Accuracy,
    ConfusionMatrix,
    MeanLoss,
    Precision,
    Recall,
    get_metric,
)

ZERO_DIVISIONS = (0.0, 1.0, math.nan)
SK_SCORES = {"precision": skm.precision_score, "recall": skm.recall_score, "f1": skm.f1_score}
OUR_SCORES = {"precision": metrics.precision, "recall": metrics.recall, "f1": metrics.f1}


def assert_matches(ours, expected):
    """Equal to 1e-6 (float32 against sklearn's float64), nan matching nan."""
    np.testing.assert_allclose(
        np.asarray(ours, np.float64), np.asarray(expected, np.float64), rtol=1e-6, atol=1e-6, equal_nan=True
    )


# Label pools for num_classes=None: small binary-ish sets (so average="binary" is often valid, and sometimes
# invalid the way sklearn rejects it) plus arbitrary, possibly negative, label sets.
_FIXED_POOLS = st.sampled_from([[0, 1], [0], [1], [-1, 1], [0, 2], [3], [1, 5]])
_FREE_POOLS = st.lists(st.integers(-3, 8), min_size=1, max_size=5, unique=True)


def labelled():
    """Label pairs (see :func:`label_strategies.labelled`): up to 5 classes, pools for num_classes=None from
    ``_FIXED_POOLS`` or ``_FREE_POOLS``, up to 24 examples."""
    return label_strategies.labelled(max_classes=5, free_pools=st.one_of(_FIXED_POOLS, _FREE_POOLS), max_examples=24)


def _sk_labels(num_classes):
    return None if num_classes is None else np.arange(num_classes)


def _binary_is_static_error(average, num_classes):
    # With num_classes given, binary needs C <= 2 whatever the data hold (it must be decidable under jit);
    # sklearn decides from the labels present, so there is nothing to compare against.
    return average == "binary" and num_classes is not None and num_classes > 2


# ----------------------------------------------------------------------------------------------------
# Functional forms against scikit-learn
# ----------------------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(labelled())
def test_precision_recall_f1_match_sklearn_for_every_average_and_zero_division(data):
    y_true, y_pred, num_classes = data
    for average in AVERAGES:
        for zero_division in ZERO_DIVISIONS:
            kwargs = dict(average=average, zero_division=zero_division)
            if _binary_is_static_error(average, num_classes):
                with pytest.raises(ValueError, match="binary"):
                    metrics.precision_recall_f1(y_true, y_pred, num_classes=num_classes, **kwargs)
                continue
            try:
                expected = skm.precision_recall_fscore_support(
                    y_true, y_pred, labels=_sk_labels(num_classes), **kwargs
                )[:3]
            except ValueError:
                with pytest.raises(ValueError, match="binary"):
                    metrics.precision_recall_f1(y_true, y_pred, num_classes=num_classes, **kwargs)
                continue
            ours = metrics.precision_recall_f1(y_true, y_pred, num_classes=num_classes, **kwargs)
            for got, want in zip(ours, expected, strict=True):
                assert_matches(got, want)


@settings(max_examples=150, deadline=None)
@given(
    labelled(),
    st.sampled_from(AVERAGES),
    st.sampled_from(ZERO_DIVISIONS),
    st.sampled_from(sorted(SK_SCORES)),
)
def test_score_functions_match_sklearn_score_functions(data, average, zero_division, score):
    y_true, y_pred, num_classes = data
    kwargs = dict(average=average, zero_division=zero_division)
    ours = OUR_SCORES[score]
    if _binary_is_static_error(average, num_classes):
        with pytest.raises(ValueError, match="at most 2 classes"):
            ours(y_true, y_pred, num_classes=num_classes, **kwargs)
        return
    try:
        expected = SK_SCORES[score](y_true, y_pred, labels=_sk_labels(num_classes), **kwargs)
    except ValueError:
        with pytest.raises(ValueError, match="binary"):
            ours(y_true, y_pred, num_classes=num_classes, **kwargs)
        return
    assert_matches(ours(y_true, y_pred, num_classes=num_classes, **kwargs), expected)


@pytest.mark.filterwarnings("ignore:A single label was found:UserWarning")
@settings(max_examples=150, deadline=None)
@given(labelled())
def test_confusion_matrix_and_accuracy_match_sklearn(data):
    y_true, y_pred, num_classes = data
    ours = metrics.confusion_matrix(y_true, y_pred, num_classes=num_classes)
    expected = skm.confusion_matrix(y_true, y_pred, labels=_sk_labels(num_classes))
    assert ours.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(ours), expected)
    assert_matches(metrics.accuracy(y_true, y_pred), skm.accuracy_score(y_true, y_pred))


def test_named_edge_cases_match_sklearn():
    """Hand-picked cases whose sklearn values are easy to get wrong, pinned explicitly."""
    # Weighted precision with nan zero_division: class 0 is never predicted (nan, dropped); class 1 has
    # precision 0 but support 0, so the remaining weights sum to 0 and sklearn falls back to a plain mean.
    y_true, y_pred = np.array([0, 0]), np.array([1, 1])
    assert float(metrics.precision(y_true, y_pred, average="weighted", zero_division=math.nan)) == 0.0
    # Binary on a label set without 1 (single class): the positive class is absent, so every score is
    # zero_division.
    for zero_division in (0.0, 1.0):
        for score in SK_SCORES:
            got = OUR_SCORES[score]([3, 3], [3, 3], average="binary", zero_division=zero_division)
            assert float(got) == zero_division == SK_SCORES[score]([3, 3], [3, 3], zero_division=zero_division)
    # Two labels, neither of them 1: sklearn rejects average="binary" and so do we.
    with pytest.raises(ValueError, match="positive class 1"):
        metrics.f1([0, 2], [2, 0], average="binary")
    # F1 is 2tp/(true+pred): a class that is predicted but never true has F1 0 (not zero_division).
    assert_matches(metrics.f1([0, 0], [0, 1], average=None, zero_division=1.0), [2 / 3, 0.0])
    # Macro ignores the nan classes (1 and 2 are never predicted); with nothing left it is nan.
    got = metrics.precision([0], [0], num_classes=3, average="macro", zero_division=math.nan)
    assert float(got) == 1.0 == skm.precision_score([0], [0], labels=[0, 1, 2], average="macro", zero_division=math.nan)
    assert math.isnan(float(metrics.precision([], [], num_classes=3, zero_division=math.nan)))


def test_jax_array_inputs_and_lists_give_the_numpy_result():
    y_true, y_pred = [0, 2, 1, 1, 0], [0, 1, 1, 2, 2]
    expected = metrics.f1(np.array(y_true), np.array(y_pred), average="weighted")
    assert_matches(metrics.f1(jnp.array(y_true), jnp.array(y_pred), average="weighted"), expected)
    assert_matches(metrics.f1(y_true, y_pred, average="weighted"), expected)


def test_functional_forms_under_jit_match_eager():
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 4, size=32), rng.integers(0, 4, size=32)

    @jax.jit
    def everything(t, p):
        return (
            metrics.confusion_matrix(t, p, num_classes=4),
            metrics.accuracy(t, p),
            metrics.precision_recall_f1(t, p, num_classes=4, average="weighted", zero_division=math.nan),
            metrics.recall(t, p, num_classes=4, average=None),
        )

    jitted = everything(y_true, y_pred)
    eager = (
        metrics.confusion_matrix(y_true, y_pred, num_classes=4),
        metrics.accuracy(y_true, y_pred),
        metrics.precision_recall_f1(y_true, y_pred, num_classes=4, average="weighted", zero_division=math.nan),
        metrics.recall(y_true, y_pred, num_classes=4, average=None),
    )
    jax.tree.map(assert_matches, jitted, eager)


def test_out_of_range_labels_under_jit_are_left_out_not_wrapped():
    # Under jit nothing can raise; a -1 must not be counted as the last class (negative index wrap-around).
    counts = jax.jit(lambda t, p: metrics.confusion_matrix(t, p, num_classes=3))(
        jnp.array([0, -1, 2, 5]), jnp.array([0, 2, 2, 1])
    )
    np.testing.assert_array_equal(np.asarray(counts), [[1, 0, 0], [0, 0, 0], [0, 0, 1]])
    # The same for a prediction out of range (a -1 would wrap onto the last column); scikit-learn on the rows
    # where both are in range is the oracle.
    true, pred = np.array([0, 1, 2, 2, 1]), np.array([0, -1, 2, 7, 1])
    counts = jax.jit(lambda t, p: metrics.confusion_matrix(t, p, num_classes=3))(jnp.asarray(true), jnp.asarray(pred))
    inside = (pred >= 0) & (pred < 3)
    expected = skm.confusion_matrix(true[inside], pred[inside], labels=range(3))
    np.testing.assert_array_equal(np.asarray(counts), expected)


def test_accuracy_of_nothing_is_nan():
    assert math.isnan(float(metrics.accuracy([], [])))


# ----------------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------------


def test_length_mismatch_names_both_lengths():
    with pytest.raises(ValueError, match=r"same length.*5 \(y_true\).*3 \(y_pred\)"):
        metrics.precision(np.zeros(5, int), np.zeros(3, int))
    with pytest.raises(ValueError, match=r"4 \(labels\).*2 \(predictions\)"):
        Accuracy().update(Accuracy().init(), labels=jnp.zeros(4, int), predictions=jnp.zeros(2, int))


def test_unknown_average_lists_the_valid_ones():
    for call in (
        lambda: metrics.recall([0, 1], [1, 1], average="mean"),
        lambda: Recall(3, average="mean"),
    ):
        with pytest.raises(ValueError, match="'binary', 'micro', 'macro', 'weighted', None") as info:
            call()
        assert "'mean'" in str(info.value)


def test_bad_zero_division_is_rejected():
    with pytest.raises(ValueError, match="zero_division"):
        metrics.f1([0, 1], [0, 1], zero_division=0.5)
    with pytest.raises(ValueError, match="zero_division"):
        F1(3, zero_division="warn")


def test_out_of_range_label_says_which():
    with pytest.raises(ValueError, match=r"y_true has labels outside \[0, 3\).*: -1, 3"):
        metrics.precision([0, 3, -1, 3], [0, 1, 2, 2], num_classes=3)
    with pytest.raises(ValueError, match=r"y_pred has labels outside \[0, 2\).*: 7"):
        metrics.confusion_matrix([0, 1], [7, 1], num_classes=2)
    metric = ConfusionMatrix(2)
    with pytest.raises(ValueError, match=r"predictions has labels outside \[0, 2\).*: 2"):
        metric.update(metric.init(), labels=jnp.array([0, 1]), predictions=jnp.array([2, 1]))


def test_binary_needs_at_most_two_classes():
    with pytest.raises(ValueError, match=r"at most 2 classes.*num_classes=3"):
        metrics.precision([0, 1], [0, 1], num_classes=3, average="binary")
    with pytest.raises(ValueError, match=r"at most 2 classes.*\[0, 1, 2\]"):
        metrics.precision([0, 1, 2], [0, 1, 1], average="binary")
    with pytest.raises(ValueError, match="at most 2 classes"):
        Precision(3, average="binary")


def test_label_shape_and_dtype_errors_are_explicit():
    with pytest.raises(ValueError, match="argmax"):
        metrics.accuracy(np.zeros(4, int), np.zeros((4, 3)))
    with pytest.raises(TypeError, match="integer class labels"):
        metrics.accuracy(np.zeros(4), np.zeros(4))
    with pytest.raises(ValueError, match=r"a column of shape \(4, 1\)\. Pass y_true\[:, 0\]"):
        metrics.accuracy(np.zeros((4, 1), int), np.zeros(4, int))
    with pytest.raises(ValueError, match=r"num_classes is required under jax\.jit"):
        jax.jit(metrics.f1)(jnp.zeros(3, int), jnp.zeros(3, int))


def test_mean_loss_needs_losses():
    with pytest.raises(ValueError, match="losses="):
        MeanLoss().update(MeanLoss().init(), labels=jnp.zeros(2, int), predictions=jnp.zeros(2, int))


def test_unknown_metric_name_lists_known_ones():
    with pytest.raises(ValueError, match=r"Did you mean 'accuracy'.*Known metrics: accuracy, confusion_matrix"):
        get_metric("acuracy", 3)
    with pytest.raises(TypeError, match="init/update/compute"):
        get_metric(42, 3)


# ----------------------------------------------------------------------------------------------------
# Registry and configuration objects
# ----------------------------------------------------------------------------------------------------


def test_registry_names_and_built_metrics():
    scored = {f"{s}{suffix}" for s in SK_SCORES for suffix in ("", "_micro", "_macro", "_weighted")}
    assert set(METRICS.names()) == {"loss", "accuracy", "confusion_matrix"} | scored
    for name in METRICS:
        metric = get_metric(name, 3)
        assert metric.name == name
        assert isinstance(metric, metrics.Metric)
    assert get_metric("f1", 2) == F1(2, average="binary", name="f1")
    assert get_metric("f1", 3) == F1(3, average="macro")
    assert get_metric("recall_weighted", 4) == Recall(4, average="weighted", name="recall_weighted")
    assert get_metric("Precision-Micro", 3).average == "micro"
    custom = Precision(5, average=None)
    assert get_metric(custom, 3) is custom


def test_default_names_follow_the_average():
    assert Precision(3).name == "precision"
    assert Recall(3, average="micro").name == "recall_micro"
    assert F1(2, average="binary").name == "f1_binary"
    assert F1(3, average=None).name == "f1_per_class"
    assert F1(3, average="weighted", name="my_f1").name == "my_f1"


def test_configs_are_hashable_by_value_even_with_nan():
    a = Precision(3, zero_division=float("nan"))
    b = Precision(np.int64(3), zero_division=np.nan)
    assert a == b and hash(a) == hash(b)
    assert Precision(3) != Recall(3)
    assert Precision(3, average="micro") != Precision(3)


def test_equal_configs_share_one_compilation():
    traces = []

    def step(metric, state, labels, predictions):
        traces.append(metric)
        return metric.update(state, labels=labels, predictions=predictions)

    jitted = jax.jit(step, static_argnums=0)
    labels = jnp.array([0, 1, 2, 1])
    for metric in (F1(3, zero_division=float("nan")), F1(3, zero_division=np.nan), F1(3, zero_division=1.0)):
        jitted(metric, metric.init(), labels, labels)
    assert len(traces) == 2


# ----------------------------------------------------------------------------------------------------
# Accumulators
# ----------------------------------------------------------------------------------------------------

BATCH = 8


def _all_registered(num_classes):
    return (
        *(get_metric(name, num_classes) for name in METRICS),
        Precision(num_classes, average=None, zero_division=math.nan),
        Recall(num_classes, average="weighted", zero_division=1.0),
        F1(num_classes, average="micro"),
    )


def _expected(metric, y_true, y_pred, losses):
    """What ``metric`` must compute after seeing exactly these examples, from the functional forms."""
    if isinstance(metric, MeanLoss):
        return np.mean(losses) if losses.size else np.nan
    if isinstance(metric, Accuracy):
        return metrics.accuracy(y_true, y_pred)
    if isinstance(metric, ConfusionMatrix):
        return metrics.confusion_matrix(y_true, y_pred, num_classes=metric.num_classes)
    score = OUR_SCORES[metric.score]
    kwargs = dict(num_classes=metric.num_classes, average=metric.average, zero_division=metric.zero_division)
    return score(y_true, y_pred, **kwargs)


@functools.partial(jax.jit, static_argnames="metric_set")
def _update_all(states, labels, predictions, losses, mask, *, metric_set):
    """One compiled update of every metric in ``metric_set`` (static: the metrics are hashable configs)."""
    return tuple(
        m.update(s, labels=labels, predictions=predictions, losses=losses, mask=mask)
        for m, s in zip(metric_set, states, strict=True)
    )


def _padded_batches(rng, num_classes, sizes):
    """Real examples split by ``sizes``, each batch padded to BATCH with garbage.

    Padding has nan losses, random labels and mask 0, so a padded example that leaks into any metric changes
    its value.
    """
    n = sum(sizes)
    y_true = rng.integers(0, num_classes, size=n)
    y_pred = np.where(rng.random(n) < 0.5, y_true, rng.integers(0, num_classes, size=n))
    losses = rng.random(n).astype(np.float32)
    batches, start = [], 0
    for size in sizes:
        pad = BATCH - size
        sl = slice(start, start + size)
        start += size
        batches.append(
            (
                np.concatenate([y_true[sl], rng.integers(0, num_classes, size=pad)]),
                np.concatenate([y_pred[sl], rng.integers(0, num_classes, size=pad)]),
                np.concatenate([losses[sl], np.full(pad, np.nan, np.float32)]),
                np.concatenate([np.ones(size, bool), np.zeros(pad, bool)]),
            )
        )
    return (y_true, y_pred, losses), batches


@settings(max_examples=20, deadline=None)
@given(
    st.sampled_from([2, 3]),
    st.lists(st.integers(0, BATCH), min_size=1, max_size=6),
    st.integers(0, 2**32 - 1),
)
def test_accumulators_over_masked_batches_equal_functional_form_on_concatenation(num_classes, sizes, seed):
    metric_set = _all_registered(num_classes)
    (y_true, y_pred, losses), batches = _padded_batches(np.random.default_rng(seed), num_classes, sizes)
    states = tuple(m.init() for m in metric_set)
    for labels, predictions, batch_losses, mask in batches:
        states = _update_all(states, labels, predictions, batch_losses, mask, metric_set=metric_set)
    for metric, state in zip(metric_set, states, strict=True):
        assert_matches(metric.compute(state), _expected(metric, y_true, y_pred, losses))


def test_accumulators_inside_lax_scan_and_jitted_compute():
    num_classes = 3
    metric_set = _all_registered(num_classes)
    (y_true, y_pred, losses), batches = _padded_batches(np.random.default_rng(1), num_classes, [8, 3, 0, 5])
    stacked = tuple(np.stack(column) for column in zip(*batches, strict=True))

    @jax.jit
    def evaluate(stacked_batches):
        def body(states, batch):
            labels, predictions, batch_losses, mask = batch
            updated = tuple(
                m.update(s, labels=labels, predictions=predictions, losses=batch_losses, mask=mask)
                for m, s in zip(metric_set, states, strict=True)
            )
            return updated, None

        states, _ = jax.lax.scan(body, tuple(m.init() for m in metric_set), stacked_batches)
        return tuple(m.compute(s) for m, s in zip(metric_set, states, strict=True))

    for metric, value in zip(metric_set, evaluate(stacked), strict=True):
        assert_matches(value, _expected(metric, y_true, y_pred, losses))


def test_vmap_over_stacked_states():
    num_classes, streams = 3, 4
    metric_set = (Accuracy(), F1(num_classes, average="weighted"), ConfusionMatrix(num_classes), MeanLoss())
    rng = np.random.default_rng(2)
    labels = rng.integers(0, num_classes, size=(streams, BATCH))
    predictions = rng.integers(0, num_classes, size=(streams, BATCH))
    losses = rng.random((streams, BATCH)).astype(np.float32)
    for metric in metric_set:
        states = jax.tree.map(lambda *xs: jnp.stack(xs), *[metric.init() for _ in range(streams)])
        states = jax.vmap(lambda s, t, p, loss, m=metric: m.update(s, labels=t, predictions=p, losses=loss))(
            states, labels, predictions, losses
        )
        values = jax.vmap(metric.compute)(states)
        for i in range(streams):
            assert_matches(values[i], _expected(metric, labels[i], predictions[i], losses[i]))


def test_fractional_mask_weights_the_mean_loss():
    metric = MeanLoss()
    losses = jnp.array([1.0, 2.0, 4.0, jnp.inf])
    mask = jnp.array([0.5, 1.0, 0.25, 0.0])
    state = metric.update(
        metric.init(), labels=jnp.zeros(4, int), predictions=jnp.zeros(4, int), losses=losses, mask=mask
    )
    assert_matches(metric.compute(state), (0.5 + 2.0 + 1.0) / 1.75)


def test_compute_before_any_example():
    assert math.isnan(float(MeanLoss().compute(MeanLoss().init())))
    assert math.isnan(float(Accuracy().compute(Accuracy().init())))
    # Every ratio is 0/0, so the scores are zero_division.
    assert float(Precision(3).compute(Precision(3).init())) == 0.0
    assert float(Recall(3, zero_division=1.0).compute(Recall(3).init())) == 1.0
    assert math.isnan(float(F1(3, zero_division=math.nan).compute(F1(3).init())))
    np.testing.assert_array_equal(np.asarray(ConfusionMatrix(2).compute(ConfusionMatrix(2).init())), np.zeros((2, 2)))


def test_fully_masked_batch_changes_nothing():
    metric = F1(3, average=None)
    first = metric.update(metric.init(), labels=jnp.array([0, 1, 2]), predictions=jnp.array([0, 2, 2]))
    second = metric.update(first, labels=jnp.array([1, 1, 1]), predictions=jnp.array([0, 0, 0]), mask=jnp.zeros(3))
    np.testing.assert_array_equal(np.asarray(second.counts), np.asarray(first.counts))
