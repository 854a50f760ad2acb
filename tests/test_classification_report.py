"""dlfund.metrics.per_class_scores / classification_report against sklearn.metrics.classification_report."""

from __future__ import annotations

import dataclasses
import json
import math

import jax.numpy as jnp
import label_strategies
import numpy as np
import pytest
import sklearn.metrics as skm
from hypothesis import given, settings
from hypothesis import strategies as st

from dlfund import metrics
from dlfund.metrics import ClassificationReport, classification_report, per_class_scores

ZERO_DIVISIONS = (0.0, 1.0, math.nan)
SCORES = ("precision", "recall", "f1")


def labelled():
    """Label pairs (see :func:`label_strategies.labelled`): up to 6 classes, arbitrary label sets (negative labels,
    gaps) for num_classes=None, up to 30 examples."""
    free_pools = st.lists(st.integers(-3, 9), min_size=1, max_size=6, unique=True)
    return label_strategies.labelled(max_classes=6, free_pools=free_pools, max_examples=30)


def sklearn_dict(y_true, y_pred, num_classes, zero_division, class_names=None):
    """sklearn's output_dict=True report, reshaped into per_class_scores' layout."""
    labels = None if num_classes is None else np.arange(num_classes)
    sk = skm.classification_report(
        y_true, y_pred, labels=labels, target_names=class_names, output_dict=True, zero_division=zero_division
    )
    names = [key for key in sk if key not in ("accuracy", "macro avg", "weighted avg", "micro avg")]
    averages = {
        heading: {
            "precision": sk[heading]["precision"],
            "recall": sk[heading]["recall"],
            "f1": sk[heading]["f1-score"],
            "support": sk[heading]["support"],
        }
        for heading in ("macro avg", "weighted avg")
    }
    return {
        "classes": names,
        "precision": [sk[name]["precision"] for name in names],
        "recall": [sk[name]["recall"] for name in names],
        "f1": [sk[name]["f1-score"] for name in names],
        "support": [sk[name]["support"] for name in names],
        "accuracy": sk["accuracy"],  # KeyError (a failure) if sklearn reports a micro avg instead
        **averages,
    }


def assert_close(ours, expected):
    np.testing.assert_allclose(
        np.asarray(ours, np.float64), np.asarray(expected, np.float64), rtol=1e-6, atol=1e-6, equal_nan=True
    )


def assert_same_report(ours, expected):
    assert list(ours) == list(expected)
    assert ours["classes"] == expected["classes"]
    assert ours["support"] == expected["support"]
    for score in SCORES:
        assert_close(ours[score], expected[score])
    assert_close(ours["accuracy"], expected["accuracy"])
    for heading in ("macro avg", "weighted avg"):
        assert list(ours[heading]) == [*SCORES, "support"]
        assert ours[heading]["support"] == expected[heading]["support"]
        for score in SCORES:
            assert_close(ours[heading][score], expected[heading][score])


def sklearn_text(y_true, y_pred, num_classes, digits, zero_division):
    """sklearn's text report, its support column written as ints.

    When no prediction at all is correct, sklearn's supports come out as floats (its "pathological case" of
    ``multilabel_confusion_matrix`` starts from float zeros) and print as "3.0"; supports are counts, and ours
    print as "3". Support is the last 9-character column of every table row.
    """
    labels = None if num_classes is None else np.arange(num_classes)
    text = skm.classification_report(y_true, y_pred, labels=labels, digits=digits, zero_division=zero_division)
    lines = []
    for line in text.split("\n"):
        support = line[-9:].strip()
        if support.endswith(".0") and support[:-2].isdigit():
            line = line[:-9] + f"{support[:-2]:>9}"
        lines.append(line)
    return "\n".join(lines)


def same_json(first, second):
    """Equal as JSON text: nan equals nan, and float/int types must agree (1 vs 1.0 is a difference)."""
    return json.dumps(first) == json.dumps(second)


def assert_plain_python(report):
    """Only lists, dicts, str, float and int (no NumPy scalars), and it survives a JSON round trip."""
    assert all(type(name) is str for name in report["classes"])
    for score in SCORES:
        assert all(type(v) is float for v in report[score])
    assert all(type(v) is int for v in report["support"])
    assert type(report["accuracy"]) is float
    for heading in ("macro avg", "weighted avg"):
        assert all(type(report[heading][s]) is float for s in SCORES)
        assert type(report[heading]["support"]) is int
    assert json.loads(json.dumps(report)).keys() == report.keys()


# ----------------------------------------------------------------------------------------------------
# Numbers against scikit-learn
# ----------------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(labelled(), st.sampled_from(ZERO_DIVISIONS))
def test_per_class_scores_match_sklearn_output_dict(data, zero_division):
    y_true, y_pred, num_classes = data
    ours = per_class_scores(y_true, y_pred, num_classes=num_classes, zero_division=zero_division)
    assert_same_report(ours, sklearn_dict(y_true, y_pred, num_classes, zero_division))
    assert_plain_python(ours)


@settings(max_examples=60, deadline=None)
@given(labelled(), st.sampled_from(ZERO_DIVISIONS), st.integers(0, 5))
def test_report_dict_and_text_match_sklearn(data, zero_division, digits):
    y_true, y_pred, num_classes = data
    report = classification_report(y_true, y_pred, num_classes=num_classes, digits=digits, zero_division=zero_division)
    assert same_json(
        report.to_dict(), per_class_scores(y_true, y_pred, num_classes=num_classes, zero_division=zero_division)
    )
    expected = sklearn_text(y_true, y_pred, num_classes, digits, zero_division)
    assert str(report) == expected
    assert repr(report) == expected


@pytest.mark.parametrize("zero_division", ZERO_DIVISIONS)
@pytest.mark.parametrize(
    ("y_true", "y_pred", "num_classes"),
    [
        ([0, 0, 0], [0, 0, 0], None),  # one class, all correct
        ([0, 0, 0], [0, 0, 0], 1),
        ([4, 4], [4, 4], None),  # one class whose label is not 0
        ([0, 1, 1, 0], [1, 1, 1, 1], 2),  # class 0 never predicted
        ([1, 1, 1], [0, 1, 0], 2),  # class 0 never true: support 0, precision 0
        ([1, 1], [1, 1], 2),  # class 0 absent on both sides
        ([0, 0, 1], [1, 1, 0], 2),  # all wrong
        ([2, 2, 2], [0, 0, 0], 3),  # class 1 absent everywhere, true and predicted classes disjoint
        ([0, 1, 2, 3], [0, 0, 0, 0], 6),
    ],
)
def test_named_edge_cases_match_sklearn(y_true, y_pred, num_classes, zero_division):
    y_true, y_pred = np.array(y_true), np.array(y_pred)
    ours = per_class_scores(y_true, y_pred, num_classes=num_classes, zero_division=zero_division)
    assert_same_report(ours, sklearn_dict(y_true, y_pred, num_classes, zero_division))
    expected = sklearn_text(y_true, y_pred, num_classes, 4, zero_division)
    assert str(classification_report(y_true, y_pred, num_classes=num_classes, zero_division=zero_division)) == expected


def test_pinned_values_tell_precision_from_recall_and_true_from_predicted_support():
    """Hand-computed: class 0 has precision 1, recall 1/3; class 1 precision 1/3, recall 1. The weighted average
    uses the true supports (3, 1), not the predicted counts (1, 3)."""
    report = per_class_scores([0, 0, 0, 1], [0, 1, 1, 1])
    assert report["classes"] == ["0", "1"]
    assert_close(report["precision"], [1.0, 1 / 3])
    assert_close(report["recall"], [1 / 3, 1.0])
    assert_close(report["f1"], [0.5, 0.5])
    assert report["support"] == [3, 1]
    assert_close(report["accuracy"], 0.5)
    assert_close([report["macro avg"][s] for s in SCORES], [2 / 3, 2 / 3, 0.5])
    assert_close([report["weighted avg"][s] for s in SCORES], [(3 + 1 / 3) / 4, (1 + 1) / 4, 0.5])
    assert report["macro avg"]["support"] == report["weighted avg"]["support"] == 4


# ----------------------------------------------------------------------------------------------------
# The text table
# ----------------------------------------------------------------------------------------------------

Y_TRUE = np.array([0, 1, 2, 2, 1, 0, 3, 3, 2, 0, 1, 1])
Y_PRED = np.array([0, 2, 2, 2, 1, 1, 0, 3, 2, 0, 1, 4])


@pytest.mark.parametrize("digits", [2, 4])
def test_text_matches_sklearn_text_for_a_fixed_case(digits):
    report = classification_report(Y_TRUE, Y_PRED, num_classes=6, digits=digits)
    expected = skm.classification_report(Y_TRUE, Y_PRED, labels=np.arange(6), digits=digits, zero_division=0.0)
    text = str(report)
    assert text == expected
    lines = text.splitlines()
    assert lines[0].split() == ["precision", "recall", "f1-score", "support"]
    for name in map(str, range(6)):
        assert any(line.split()[:1] == [name] for line in lines)
    # The rounded numbers, read back from our rows: precision of class 2 is 3/4, recall of class 1 is 2/4.
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:] if line.strip()}
    assert rows["2"][0] == f"{3 / 4:.{digits}f}" and rows["1"][1] == f"{2 / 4:.{digits}f}"
    assert rows["accuracy"] == [f"{8 / 12:.{digits}f}", "12"]
    assert [row[-1] for name, row in rows.items() if name.isdigit()] == ["3", "4", "3", "2", "0", "0"]
    assert rows["weighted"][0] == "avg" and rows["weighted"][-1] == "12"


def test_class_names_label_rows_and_imply_num_classes():
    names = ["cat", "dog", "a-much-longer-class-name", "emu", "fox", "gnu"]
    report = classification_report(Y_TRUE, Y_PRED, class_names=names, digits=3)
    ours = report.to_dict()
    assert ours["classes"] == names
    assert len(ours["support"]) == 6  # "gnu" (5) occurs nowhere but still has a row
    assert_same_report(ours, sklearn_dict(Y_TRUE, Y_PRED, 6, 0.0, class_names=names))
    expected = skm.classification_report(
        Y_TRUE, Y_PRED, labels=np.arange(6), target_names=names, digits=3, zero_division=0.0
    )
    assert str(report) == expected
    for name in names:
        assert name in str(report)
    # num_classes may be given too when it agrees; tuples and non-str names work.
    again = per_class_scores(Y_TRUE, Y_PRED, class_names=tuple(names), num_classes=6)
    assert again == ours
    assert per_class_scores([0, 1], [1, 1], class_names=(10, 20))["classes"] == ["10", "20"]


def test_report_object_is_frozen_and_to_dict_is_a_copy():
    report = classification_report(Y_TRUE, Y_PRED, num_classes=6)
    assert isinstance(report, ClassificationReport)
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.digits = 2
    copy = report.to_dict()
    copy["precision"][0] = -1.0
    copy["macro avg"]["f1"] = -1.0
    assert report.to_dict()["precision"][0] != -1.0 and report.to_dict()["macro avg"]["f1"] != -1.0
    assert_plain_python(report.to_dict())


def test_jax_arrays_and_lists_give_the_numpy_result():
    expected = per_class_scores(Y_TRUE, Y_PRED, num_classes=6)
    assert per_class_scores(jnp.asarray(Y_TRUE), jnp.asarray(Y_PRED), num_classes=6) == expected
    assert per_class_scores(Y_TRUE.tolist(), Y_PRED.tolist(), num_classes=6) == expected


# ----------------------------------------------------------------------------------------------------
# Bad inputs
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("function", [per_class_scores, classification_report])
def test_bad_inputs_raise(function):
    with pytest.raises(ValueError, match=r"same length.*3.*2"):
        function([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match=r"y_true has labels outside \[0, 3\).*3"):
        function([0, 3], [0, 1], num_classes=3)
    with pytest.raises(ValueError, match=r"y_pred has labels outside \[0, 3\).*-1"):
        function([0, 1], [0, -1], num_classes=3)
    # class_names implies the class count, so labels past it are out of range too.
    with pytest.raises(ValueError, match=r"y_pred has labels outside \[0, 2\)"):
        function([0, 1], [0, 2], class_names=["a", "b"])
    with pytest.raises(ValueError, match=r"class_names has 2 names but num_classes=3"):
        function([0, 1], [0, 1], num_classes=3, class_names=["a", "b"])
    with pytest.raises(ValueError, match=r"class_names has 4 names but num_classes=3"):
        function([0, 1], [0, 1], num_classes=3, class_names=["a", "b", "c", "d"])
    with pytest.raises(TypeError, match="class_names"):
        function([0, 1], [0, 1], class_names="ab")
    with pytest.raises(ValueError, match="zero_division"):
        function([0, 1], [0, 1], zero_division=0.5)
    with pytest.raises(TypeError, match="integer"):
        function([0.0, 1.0], [0.0, 1.0])
    with pytest.raises(ValueError, match="no classes"):
        function([], [])


def test_bad_digits_raise():
    with pytest.raises(ValueError, match="digits"):
        classification_report([0, 1], [0, 1], digits=-1)
    with pytest.raises(TypeError, match="digits"):
        classification_report([0, 1], [0, 1], digits=2.5)


def test_public_names():
    assert metrics.classification_report is classification_report
    assert metrics.per_class_scores is per_class_scores
    if hasattr(metrics, "__all__"):
        assert {"classification_report", "per_class_scores"} <= set(metrics.__all__)


@pytest.mark.filterwarnings("ignore:A single label was found")
@settings(max_examples=40, deadline=None)
@given(labelled(), st.sampled_from(ZERO_DIVISIONS))
def test_the_report_of_a_confusion_matrix_matches_sklearn(data, zero_division):
    """What dlfund evaluate and metrics.json report: the same dict from evaluate's confusion matrix."""
    y_true, y_pred, num_classes = data
    if num_classes is None:
        return  # a confusion matrix has classes 0..C-1
    confusion = skm.confusion_matrix(y_true, y_pred, labels=np.arange(num_classes))
    names = [f"c{i}" for i in range(num_classes)]
    ours = metrics.per_class_from_confusion(confusion.tolist(), names, zero_division=zero_division)
    assert_same_report(ours, sklearn_dict(y_true, y_pred, num_classes, zero_division, class_names=names))


def test_a_confusion_matrix_must_be_square():
    with pytest.raises(ValueError, match="square"):
        metrics.per_class_from_confusion([[1, 2, 3], [4, 5, 6]])
    with pytest.raises(ValueError, match="2 names but num_classes=3"):
        metrics.per_class_from_confusion(np.eye(3), ["a", "b"])
