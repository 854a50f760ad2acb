"""Inputs that are almost surely a mistake: unnormalized arrays, one-hot labels, a model too small for the labels."""

import warnings

import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import dlfund
from dlfund.models import MLP
from dlfund.train import checks

FIT = dict(epochs=1, progress=False)


def blobs(n=200, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, size=n).astype(np.int32)
    x = rng.normal(size=(n, 6)).astype(np.float32) + y[:, None] * 0.3
    return x, y


def fit_quietly(model, data, **kwargs):
    """fit, with any DataWarning turned into an error (so a test sees that none was raised)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", dlfund.DataWarning)
        return dlfund.fit(model, data, **{**FIT, **kwargs})


def test_integer_images_warn_once_naming_the_split_the_range_and_the_fix():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(64, 4, 4, 1), dtype=np.uint8)
    y = rng.integers(0, 2, size=64)
    with pytest.warns(dlfund.DataWarning) as record:
        dlfund.fit(MLP(16, (8,), 2, rngs=nnx.Rngs(0)), (x, y), validation_data=(x[:16], y[:16]), **FIT)
    messages = [str(w.message) for w in record if issubclass(w.category, dlfund.DataWarning)]
    assert len(messages) == 1
    message = messages[0]
    assert "the train inputs are integers (uint8) in [0, 255]" in message
    assert "the validation inputs are integers (uint8)" in message
    assert "x / 255" in message and "dlfund.data.from_arrays" in message
    assert record[0].filename == __file__  # points at the user's fit call


def test_float_values_far_outside_normalized_ranges_warn():
    x, y = blobs()
    with pytest.warns(dlfund.DataWarning, match=r"float64 values in \[-\d+\.?\d*, \d+"):
        dlfund.fit(MLP(6, (8,), 10, rngs=nnx.Rngs(0)), (x * 100, y), **FIT)


def test_normalized_arrays_and_datasets_do_not_warn():
    x, y = blobs()
    fit_quietly(MLP(6, (8,), 10, rngs=nnx.Rngs(0)), (x, y))
    # [0, 1] pixels, 0/1 integer features and bool inputs are fine as they are.
    fit_quietly(MLP(6, (8,), 10, rngs=nnx.Rngs(0)), (np.clip(x / 10 + 0.5, 0, 1), y))
    fit_quietly(MLP(6, (8,), 10, rngs=nnx.Rngs(0)), ((x > 0).astype(np.int64), y))
    fit_quietly(MLP(6, (8,), 10, rngs=nnx.Rngs(0)), (x > 0, y))
    ds = dlfund.data.load("digits")
    fit_quietly(MLP(64, (8,), 10, rngs=nnx.Rngs(0)), ds)


def test_one_hot_labels_are_told_to_use_argmax():
    x, y = blobs()
    with pytest.raises(ValueError, match=r"look one-hot encoded \(shape \(200, 10\).*y.argmax\(-1\)"):
        dlfund.fit(MLP(6, (8,), 10, rngs=nnx.Rngs(0)), (x, np.eye(10)[y]), **FIT)
    with pytest.raises(ValueError, match=r"validation labels look one-hot"):
        dlfund.fit(MLP(6, (8,), 10, rngs=nnx.Rngs(0)), (x, y), validation_data=(x, np.eye(10)[y]), **FIT)


def test_a_model_with_too_few_outputs_is_a_model_error():
    x, y = blobs()
    expected = r"the model has 5 outputs but the labels go up to 9: build it with num_classes=10"
    with pytest.raises(ValueError, match=expected):
        dlfund.fit(MLP(6, (8,), 5, rngs=nnx.Rngs(0)), (x, y), **FIT)
    # A validation label beyond the outputs counts too.
    small = y % 5
    with pytest.raises(ValueError, match="labels go up to 9"):
        dlfund.fit(MLP(6, (8,), 5, rngs=nnx.Rngs(0)), (x, small), validation_data=(x, y), **FIT)
    with pytest.raises(ValueError, match=r"binary classifier \(one score per example.*num_classes=10"):
        dlfund.fit(MLP(6, (8,), 1, rngs=nnx.Rngs(0)), (x, y), loss="binary_cross_entropy", **FIT)


def test_a_label_equal_to_the_number_of_outputs_is_out_of_range():
    """The off-by-one boundary: 3 outputs take labels 0..2, so label 3 is refused, by fit and by evaluate."""
    x, y = blobs(classes=3)
    edge = np.where(y == 2, 3, y)  # labels 0, 1, 3: the highest equals the number of outputs
    expected = r"the model has 3 outputs but the labels go up to 3: build it with num_classes=4"
    with pytest.raises(ValueError, match=expected):
        dlfund.fit(MLP(6, (8,), 3, rngs=nnx.Rngs(0)), (x, edge), **FIT)
    with pytest.raises(ValueError, match=r"binary classifier \(one score per example.*labels go up to 2"):
        dlfund.fit(MLP(6, (8,), 1, rngs=nnx.Rngs(0)), (x, y), loss="binary_cross_entropy", **FIT)
    # evaluate has no model-size check: the label check itself must refuse the boundary label.
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\); found \[3\]"):
        dlfund.evaluate(MLP(6, (8,), 3, rngs=nnx.Rngs(0)), (x, edge))


def test_the_scale_check_sees_every_feature_and_the_whole_range():
    """A flat stride through [N, F] data can land on one column; whole examples are sampled instead."""
    from dlfund.train import checks

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200_000, 10)).astype(np.float32)
    x[:, 1:] *= 1000
    x[123, 0] = 7e4  # the extreme is in one example only; the message names the data's range, not the sample's
    problem = checks.scale_problem("train", x)
    assert problem is not None and f"{x.max():g}]" in problem


def _scale_problem_by_percentile(x: np.ndarray) -> bool:
    """The scale check's verdict with the percentile always computed (the rule before it could be skipped)."""
    integer = np.issubdtype(x.dtype, np.integer)
    rows = x[:: max(1, x.size // checks._SCALE_SAMPLE)]
    large = float(np.percentile(np.abs(rows.astype(np.float64)), 99)) > checks.UNNORMALIZED_LIMIT
    return (integer and float(x.max()) - float(x.min()) > 1) or large


@settings(max_examples=150, deadline=None)
@given(
    values=hnp.arrays(
        np.int16, hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=40), elements=st.integers(-40, 40)
    ),
    dtype=st.sampled_from([np.float32, np.float64, np.int16, np.uint8, np.bool_]),
    scale=st.sampled_from([0.01, 0.3, 1.0]),
)
def test_scale_check_skips_the_percentile_only_where_it_cannot_pass_the_limit(values, dtype, scale):
    """Values within +-10 cannot have a 99th percentile of |x| above 10, so the check skips it there; its verdict
    is the full rule's for inputs in and out of range, negative extremes included."""
    if np.issubdtype(dtype, np.floating):
        x = (values * scale).astype(dtype)
    else:
        x = (np.abs(values) if dtype in (np.uint8, np.bool_) else values).astype(dtype)
    assert (checks.scale_problem("train", x) is not None) == _scale_problem_by_percentile(x)


def test_scale_check_does_not_compute_the_percentile_of_inputs_within_the_limit(monkeypatch):
    monkeypatch.setattr(checks, "_large_values", lambda x: pytest.fail("the percentile was computed"))
    x = np.random.default_rng(0).uniform(-10, 10, size=(500, 8)).astype(np.float32)
    assert checks.scale_problem("train", x) is None


def test_fit_takes_the_inputs_range_from_the_finiteness_check(monkeypatch):
    """The range as_split_with_range found (the original dtype's values, exactly) is the one the scale warning
    reports: fit passes it on instead of a second min/max over the images."""
    from dlfund.train import checks

    x = np.random.default_rng(0).integers(3, 251, size=(64, 6)).astype(np.uint8)
    (converted, _), value_range = checks.as_split_with_range("train", (x, np.zeros(64, np.int32)))
    assert converted.dtype == np.float32 and value_range == (x.min(), x.max())
    seen = []
    original = checks.scale_problem
    monkeypatch.setattr(checks, "scale_problem", lambda *a: seen.append(a[2:]) or original(*a))
    with pytest.warns(dlfund.DataWarning, match=rf"integers \(uint8\) in \[{x.min()}, {x.max()}\]"):
        dlfund.fit(MLP(6, (8,), 10, rngs=nnx.Rngs(0)), (x, np.arange(64) % 10), **FIT)
    assert seen == [((float(x.min()), float(x.max())),)]


def test_negative_labels_stay_a_label_error():
    x, y = blobs()
    with pytest.raises(ValueError, match=r"labels must be in \[0, 10\); found \[-1\]"):
        dlfund.fit(MLP(6, (8,), 10, rngs=nnx.Rngs(0)), (x, np.where(y == 0, -1, y)), **FIT)


def test_labels_beyond_int32_are_refused_not_wrapped_into_range():
    x, y = blobs(classes=3)
    wrapped = np.where(y == 1, 2**32 + 1, y.astype(np.int64))  # int32 wraps 2**32 + 1 to 1, a valid class
    with pytest.raises(ValueError, match=r"labels must be class ids in \[0, 2\*\*31\); found 4294967297"):
        dlfund.evaluate(MLP(6, (8,), 3, rngs=nnx.Rngs(0)), (x, wrapped))


def test_more_outputs_than_classes_seen_warns():
    x, y = blobs()
    with pytest.warns(dlfund.DataWarning, match=r"12 outputs but the labels seen go only up to 9 \(10 classes\)"):
        dlfund.fit(MLP(6, (8,), 12, rngs=nnx.Rngs(0)), (x, y), **FIT)
    fit_quietly(MLP(6, (8,), 10, rngs=nnx.Rngs(0)), (x, y))  # exactly enough outputs: no warning
    fit_quietly(MLP(6, (8,), 2, rngs=nnx.Rngs(0)), (x, (y == 0).astype(np.int32)))


def test_a_lone_string_or_callback_where_a_sequence_goes_is_one_item_not_its_letters():
    x, y = blobs()
    seen = []
    result = fit_quietly(
        MLP(6, (8,), 10, rngs=nnx.Rngs(0)),
        (x, y),
        regularizers="l2:1e-4",
        metrics="f1_macro",
        callbacks=dlfund.LambdaCallback(on_epoch_end=lambda epoch, logs, state: seen.append(epoch)),
    )
    assert result.config["regularizers"] == ["l2:0.0001"]
    assert "f1_macro" in result.history.columns and seen == [1]
    with pytest.raises(TypeError, match=r"callbacks must be dlfund.Callback objects .*LambdaCallback"):
        fit_quietly(MLP(6, (8,), 10, rngs=nnx.Rngs(0)), (x, y), callbacks=[print])


@pytest.mark.parametrize("value", [5, True])
def test_early_stopping_given_a_number_is_shown_the_object(value):
    x, y = blobs()
    with pytest.raises(TypeError, match=r"early_stopping=dlfund.EarlyStopping\(patience=5\)"):
        fit_quietly(MLP(6, (8,), 10, rngs=nnx.Rngs(0)), (x, y), early_stopping=value)


def test_a_misspelt_monitor_gets_the_close_name_not_pass_validation_data():
    x, y = blobs()
    model = MLP(6, (8,), 10, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"did you mean 'val_accuracy'") as error:
        fit_quietly(model, (x, y), validation_data=(x, y), early_stopping=dlfund.EarlyStopping(monitor="val_acc"))
    assert "pass validation_data" not in str(error.value)
    with pytest.raises(ValueError, match=r"pass validation_data"):
        fit_quietly(model, (x, y), early_stopping=dlfund.EarlyStopping(monitor="val_loss"))


def test_a_weight_decay_that_is_not_a_number_is_named():
    x, y = blobs()
    with pytest.raises(ValueError, match=r"weight_decay must be a number >= 0 .*'1e-4'"):
        fit_quietly(MLP(6, (8,), 10, rngs=nnx.Rngs(0)), (x, y), weight_decay="1e-4")


def test_a_binary_loss_on_many_classes_is_a_loss_error_not_a_model_error():
    digits = dlfund.data.load("digits")
    model = MLP(64, (8,), 10, rngs=nnx.Rngs(0))
    for loss in ("binary_cross_entropy", "hinge"):
        with pytest.raises(ValueError, match=rf"the '{loss}' loss is for two classes .* dataset has 10"):
            fit_quietly(model, digits, loss=loss)
        with pytest.raises(ValueError, match=rf"the '{loss}' loss is for two classes .* labels go up to 9"):
            fit_quietly(model, digits.train, loss=loss)


def test_mse_is_refused_on_class_labels_and_on_targets_shaped_unlike_the_outputs():
    digits = dlfund.data.load("digits")
    model = MLP(64, (8,), 10, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"'mse' loss is a regression loss, but the dataset holds class labels"):
        fit_quietly(model, digits, loss="mse")
    with pytest.raises(ValueError, match=r"targets have shape \(\) per example but the model outputs \(10,\).*class"):
        fit_quietly(model, digits.train, loss="mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    with pytest.raises(ValueError, match=r"targets have shape \(3,\) .* outputs \(1,\).*with 3 outputs"):
        fit_quietly(MLP(4, (8,), 1, rngs=nnx.Rngs(0)), (x, x[:, :3]), loss="mse")
    with pytest.raises(ValueError, match=r"evaluation targets have shape \(3,\)"):
        dlfund.evaluate(MLP(4, (8,), 1, rngs=nnx.Rngs(0)), (x, x[:, :3]), loss="mse")
    # The shapes mse takes: [N] targets with one output, and equal shapes.
    fit_quietly(MLP(4, (8,), 1, rngs=nnx.Rngs(0)), (x, x[:, 0]), loss="mse")
    fit_quietly(MLP(4, (8,), 3, rngs=nnx.Rngs(0)), (x, x[:, :3]), loss="mse")


# --- checks.min_max: the inputs' range in parallel row blocks ------------------------------------------------

_ANY_FLOAT32 = st.floats(width=32, allow_nan=True, allow_infinity=True)


@settings(max_examples=150, deadline=None)
@given(
    x=hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=12), elements=_ANY_FLOAT32),
    threads=st.integers(1, 16),
)
def test_min_max_in_blocks_equals_numpys_min_and_max_nan_included(monkeypatch_module, x, threads):
    """Every block counts (a block dropped or a row skipped changes the answer for some array) and a NaN in any
    block gives NaN (Python's min() over the blocks' results would keep a finite value after a NaN)."""
    monkeypatch_module.setattr(checks.os, "cpu_count", lambda: threads)
    low, high = checks.min_max(x)
    np.testing.assert_array_equal([low, high], [np.min(x), np.max(x)])


@pytest.fixture(scope="module")
def monkeypatch_module():
    """A monkeypatch for hypothesis' examples, with the parallel path taken on arrays of any size."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(checks, "_PARALLEL_RANGE_SIZE", 1)
        yield patch


def test_min_max_runs_blocks_on_threads_for_large_inputs(monkeypatch):
    """The parallel path is the one large inputs take (its equality is the test above), and the NaN check of fit's
    inputs goes through it."""
    blocks = []
    real_split = np.array_split
    monkeypatch.setattr(checks.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(checks.np, "array_split", lambda x, k: blocks.append(k) or real_split(x, k))
    x = np.zeros((2048, 2048), np.float32)
    x[2047, 5] = np.nan
    with pytest.raises(ValueError, match="1 NaN/Inf values \\(first in example 2047\\)"):
        checks.as_split_with_range("train", (x, np.zeros(2048)))
    assert blocks == [4]
