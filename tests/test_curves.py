"""ROC and precision-recall curves, their areas and figures, against scikit-learn; the confusion-matrix figure."""

import warnings

import numpy as np
import pytest
import sklearn.metrics as skm
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from dlfund import metrics, plotting

# Few distinct score values: ties between positives and negatives, and runs of equal scores, are the cases that
# a curve drawn one example at a time gets wrong.
TIED_SCORES = st.sampled_from([-1.0, 0.0, 0.25, 0.5, 0.5000001, 1.0])
ANY_SCORES = st.floats(-1e6, 1e6, allow_nan=False, width=64)


@st.composite
def labelled_scores(draw, scores=TIED_SCORES):
    n = draw(st.integers(1, 40))
    y = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    s = draw(st.lists(scores, min_size=n, max_size=n))
    return np.array(y), np.array(s)


def sklearn_quietly(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn warns on one class (and returns nan) where we raise
        return fn(*args, **kwargs)


def assert_curves_equal(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(data=st.one_of(labelled_scores(), labelled_scores(ANY_SCORES)), drop=st.booleans())
def test_curves_and_areas_equal_scikit_learn(data, drop):
    y, s = data
    if np.unique(y).size == 2:
        assert_curves_equal(
            metrics.roc_curve(y, s, drop_intermediate=drop), skm.roc_curve(y, s, drop_intermediate=drop)
        )
        assert metrics.roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    else:
        with pytest.raises(ValueError, match="roc_curve needs both classes in y_true"):
            metrics.roc_curve(y, s)
        with pytest.raises(ValueError, match="needs both classes"):
            metrics.roc_auc(y, s)
    if y.any():  # all positives is defined: precision 1 everywhere
        expected = sklearn_quietly(skm.precision_recall_curve, y, s, drop_intermediate=drop)
        assert_curves_equal(metrics.precision_recall_curve(y, s, drop_intermediate=drop), expected)
        assert metrics.average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
    else:
        with pytest.raises(ValueError, match="needs positives"):
            metrics.average_precision(y, s)


def test_tied_scores_are_one_threshold():
    # Two positives and a negative share the score 0.5: they enter the prediction together, a diagonal step.
    y, s = np.array([1, 0, 1, 0, 1]), np.array([0.5, 0.5, 0.5, 0.1, 0.9])
    fpr, tpr, thresholds = metrics.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(thresholds, [np.inf, 0.9, 0.5, 0.1])
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 1, 1])
    assert metrics.roc_auc(y, s) == pytest.approx(0.5 * (1 / 3 + 1) / 2 + 0.5)  # trapezoids: a tie counts half
    precision, recall, _ = metrics.precision_recall_curve(y, s)
    np.testing.assert_allclose(precision, [3 / 5, 3 / 4, 1, 1])
    np.testing.assert_allclose(recall, [1, 1, 1 / 3, 0])


def test_results_unpack_like_scikit_learn_and_name_their_parts():
    y, s = np.array([0, 1, 1, 0]), np.array([0.1, 0.8, 0.4, 0.3])
    curve = metrics.roc_curve(y, s)
    fpr, tpr, thresholds = curve
    assert (curve.fpr, curve.tpr, curve.thresholds) == (fpr, tpr, thresholds)
    assert thresholds[0] == np.inf and fpr.dtype == tpr.dtype == np.float64
    assert metrics.precision_recall_curve(y, s).recall[-1] == 0.0
    # Booleans and float labels work; so do integer scores.
    assert metrics.roc_auc(y.astype(bool), s) == metrics.roc_auc(y.astype(np.float32), s) == 1.0
    assert metrics.roc_auc(y, (s * 10).astype(int)) == 1.0


@pytest.mark.parametrize(
    ("y", "scores", "message"),
    [
        ([0, 1, 2], [0.1, 0.2, 0.3], r"binary labels y_true in \{0, 1\}.*labels 0, 1, 2.*roc_curve\(y_true == k"),
        ([-1, 1], [0.1, 0.2], r"labels -1, 1"),
        ([0, 1], [[0.9, 0.1], [0.2, 0.8]], r"shape \(2, 2\).*scores\[:, 1\] \(the positive class's column\)"),
        ([0, 1], [[0.1], [0.8]], r"shape \(2, 1\).*scores\[:, 0\]"),
        ([0, 1, 1], [0.1, 0.2], r"same length; got 3 \(y_true\) and 2 \(scores\)"),
        ([0, 1], [0.1, np.nan], r"must be finite; scores\[1\] is nan"),
        ([], [], "empty"),
        ([[0, 1]], [0.1, 0.2], r"y_true must be labels of shape \[N\]"),
        ([[0], [1]], [0.1, 0.2], r"shape \(2, 1\)\. Pass y_true\[:, 0\]"),
    ],
)
def test_bad_input_is_named_with_the_fix(y, scores, message):
    with pytest.raises(ValueError, match=message):
        metrics.roc_curve(np.array(y), np.array(scores))


def test_one_class_is_a_clear_error_where_the_curve_is_undefined():
    with pytest.raises(ValueError, match=r"all 3 labels are 1: with no negatives \(0\)"):
        metrics.roc_auc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"all 2 labels are 0: with no positives \(1\)"):
        metrics.roc_curve([0, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="all 2 labels are 0: recall is 0/0"):
        metrics.precision_recall_curve([0, 0], [0.1, 0.2])
    assert metrics.average_precision([1, 1], [0.1, 0.2]) == 1.0


def test_binary_scores_of_each_kind_of_classifier():
    import jax
    from flax import nnx

    from dlfund.models import MLP, LogisticRegression, Perceptron
    from dlfund.train.evaluation import predict
    from dlfund.train.run import binary_scores

    def built(build):  # random weights without compiling an initializer per kernel shape
        graphdef, state = nnx.split(nnx.eval_shape(build))
        rng = np.random.default_rng(0)
        return nnx.merge(graphdef, jax.tree.map(lambda s: rng.normal(size=s.shape).astype(s.dtype), state))

    x = np.random.default_rng(1).normal(size=(6, 3)).astype(np.float32)
    softmax = built(lambda: MLP(3, (), 2, rngs=nnx.Rngs(0)))
    scores, threshold = binary_scores(softmax, x)  # log-odds of class 1, threshold 0 (probability 0.5)
    assert threshold == 0.0 and scores.dtype == np.float64
    probability = jax.nn.softmax(predict(softmax, x))[:, 1]
    np.testing.assert_allclose(scores, np.log(probability) - np.log1p(-probability), rtol=1e-4, atol=1e-5)
    sigmoid = built(lambda: LogisticRegression(3, 2, rngs=nnx.Rngs(0)))
    scores, threshold = binary_scores(sigmoid, x)
    probability = jax.nn.sigmoid(predict(sigmoid, x)[:, 0])
    np.testing.assert_allclose(scores, np.log(probability) - np.log1p(-probability), rtol=1e-4, atol=1e-5)
    # A confident model: probabilities all round to 1.0 (even in float64), the scores keep every example apart,
    # so the curves agree with scikit-learn's on the true margins instead of collapsing into one tie.
    confident = built(lambda: LogisticRegression(3, 2, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(confident)
    confident = nnx.merge(graphdef, jax.tree.map(lambda a: a * 0 + 1, state))
    far = np.array([[20, 20, 1], [20, 20, 2], [20, 20, 3], [20, 20, 4]], np.float32)  # logits 61, 62, 63, 64
    scores, _ = binary_scores(confident, far)
    assert np.all(1 / (1 + np.exp(-scores)) == 1.0) and len(np.unique(scores)) == 4
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    y = np.array([0, 1, 0, 1])
    assert metrics.roc_auc(y, scores) == pytest.approx(sklearn_metrics.roc_auc_score(y, np.arange(4))) == 0.75
    perceptron = built(lambda: Perceptron(3, rngs=nnx.Rngs(0)))
    scores, threshold = binary_scores(perceptron, x)  # a margin, no probability: its own threshold 0
    assert threshold == 0.0
    np.testing.assert_allclose(scores, predict(perceptron, x)[:, 0], rtol=1e-6)
    assert binary_scores(built(lambda: MLP(3, (), 3, rngs=nnx.Rngs(0))), x) is None  # 3 classes
    assert binary_scores(built(lambda: MLP(3, (), 1, rngs=nnx.Rngs(0))), x, loss="mse") is None  # regression


# --- figures ----------------------------------------------------------------------------------------------


def cell_texts(ax: Axes) -> dict[tuple[int, int], str]:
    """{(row, column): annotation} of a confusion-matrix figure (text at x = column, y = row)."""
    return {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}


def test_confusion_matrix_figure_puts_true_classes_in_rows():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 1, 1, 1, 1, 2])  # true 0 predicted 1 twice; nothing true 1 predicted 0
    fig = plotting.plot_confusion_matrix(y_true, y_pred, class_names=["a", "b", "c"])
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    texts = cell_texts(ax)
    assert texts[(0, 1)] == "2" and texts[(1, 0)] == "0" and texts[(0, 0)] == "1" and texts[(2, 2)] == "1"
    assert ax.get_ylabel() == "true class" and ax.get_xlabel() == "predicted class"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]
    np.testing.assert_array_equal(ax.images[0].get_array(), skm.confusion_matrix(y_true, y_pred))
    # The same from the matrix dlfund.evaluate returns.
    again = plotting.plot_confusion_matrix(skm.confusion_matrix(y_true, y_pred).tolist(), class_names=["a", "b", "c"])
    assert cell_texts(again.axes[0]) == texts


@pytest.mark.parametrize("normalize", ["true", "pred", "all"])
def test_normalized_confusion_matrices_equal_scikit_learns(normalize):
    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    y_pred = np.array([0, 1, 2, 1, 1, 2, 0, 2, 2])
    fig = plotting.plot_confusion_matrix(y_true, y_pred, normalize=normalize)
    expected = skm.confusion_matrix(y_true, y_pred, normalize=normalize)
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), expected)
    counts = skm.confusion_matrix(y_true, y_pred)
    texts = cell_texts(fig.axes[0])
    assert texts[(2, 0)] == f"{expected[2, 0]:.2f}\n({counts[2, 0]})"  # the share, then the count
    assert texts[(1, 0)] == "0"  # an empty cell just says 0


def test_confusion_matrix_figure_refuses_bad_input_and_draws_into_given_axes():
    with pytest.raises(ValueError, match=r"Unknown normalize 'rows'; known values are None, 'true', 'pred', 'all'"):
        plotting.plot_confusion_matrix([0, 1], [0, 1], normalize="rows")
    with pytest.raises(ValueError, match=r"class_names has 3 names for a 2x2 confusion matrix"):
        plotting.plot_confusion_matrix([[1, 0], [0, 1]], class_names=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"or one confusion matrix \[C, C\]"):
        plotting.plot_confusion_matrix([0, 1, 1])
    with pytest.raises(ValueError, match="counts: finite numbers >= 0"):
        plotting.plot_confusion_matrix([[1, -1], [0, 1]])
    fig = Figure()
    ax = fig.add_subplot()
    assert plotting.plot_confusion_matrix([[3, 1], [0, 2]], ax=ax) is fig and cell_texts(ax)[(0, 1)] == "1"


def legend_texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_roc_figure_draws_scikit_learns_curve_its_auc_and_the_threshold():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 60)
    s = np.round(y * 0.4 + rng.random(60), 1)  # ties
    fig = plotting.plot_roc_curve(y, s, threshold=0.7, label="mlp")
    fpr, tpr, _ = skm.roc_curve(y, s)
    curve = fig.axes[0].lines[0]
    np.testing.assert_allclose(curve.get_xdata(), fpr)
    np.testing.assert_allclose(curve.get_ydata(), tpr)
    texts = legend_texts(fig)
    assert texts[0] == f"mlp (AUC = {skm.roc_auc_score(y, s):.3f})"
    predicted = (s >= 0.7).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, predicted).ravel()
    marker = fig.axes[0].lines[2]
    assert (marker.get_xdata()[0], marker.get_ydata()[0]) == pytest.approx((fp / (fp + tn), tp / (tp + fn)))
    assert texts[2] == f"threshold 0.7: FPR {fp / (fp + tn):.2f}, TPR {tp / (tp + fn):.2f}"
    with pytest.raises(ValueError, match="threshold must be a finite number"):
        plotting.plot_roc_curve(y, s, threshold=float("nan"))


def test_precision_recall_figure_draws_scikit_learns_curve_its_ap_and_the_threshold():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 60)
    s = np.round(y * 0.4 + rng.random(60), 1)
    fig = plotting.plot_precision_recall_curve(y, s, threshold=0.7)
    precision, recall, _ = skm.precision_recall_curve(y, s)
    curve = fig.axes[0].lines[0]
    np.testing.assert_allclose(curve.get_xdata(), recall)
    np.testing.assert_allclose(curve.get_ydata(), precision)
    assert curve.get_drawstyle() == "steps-post"
    texts = legend_texts(fig)
    assert texts[0] == f"model (AP = {skm.average_precision_score(y, s):.3f})"
    assert texts[1] == f"chance (AP = prevalence {y.mean():.2f})"
    predicted = (s >= 0.7).astype(int)
    marker = fig.axes[0].lines[2]
    expected = (skm.recall_score(y, predicted), skm.precision_score(y, predicted))
    assert (marker.get_xdata()[0], marker.get_ydata()[0]) == pytest.approx(expected)
    with pytest.raises(ValueError, match="needs positives"):
        plotting.plot_precision_recall_curve(np.zeros(4, int), s[:4])
