import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dlfund import losses

KEY = jax.random.key(0)
LOGITS = jax.random.normal(KEY, (16, 5)) * 3
LABELS = jax.random.randint(jax.random.fold_in(KEY, 1), (16,), 0, 5)
SCORES = jax.random.normal(jax.random.fold_in(KEY, 2), (16, 1)) * 2
BINARY = jax.random.bernoulli(jax.random.fold_in(KEY, 3), 0.4, (16,)).astype(jnp.int32)


def test_softmax_cross_entropy_matches_optax():
    np.testing.assert_allclose(
        losses.get("softmax_cross_entropy")(LOGITS, LABELS),
        optax.softmax_cross_entropy_with_integer_labels(LOGITS, LABELS),
        rtol=1e-6,
    )
    # and against the definition: -log softmax at the label
    manual = -jax.nn.log_softmax(LOGITS)[jnp.arange(16), LABELS]
    np.testing.assert_allclose(losses.get("cross_entropy")(LOGITS, LABELS), manual, rtol=1e-5)


def test_label_smoothing_matches_optax():
    loss = losses.get("softmax_cross_entropy", label_smoothing=0.1)
    targets = optax.smooth_labels(jax.nn.one_hot(LABELS, 5), 0.1)
    np.testing.assert_allclose(loss(LOGITS, LABELS), optax.softmax_cross_entropy(LOGITS, targets), rtol=1e-6)
    assert loss != losses.get("softmax_cross_entropy")  # different option, different compiled step


def test_binary_cross_entropy_matches_optax_for_both_output_shapes():
    ref = optax.sigmoid_binary_cross_entropy(SCORES[:, 0], BINARY.astype(jnp.float32))
    np.testing.assert_allclose(losses.get("binary_cross_entropy")(SCORES, BINARY), ref, rtol=1e-6)
    np.testing.assert_allclose(losses.get("bce")(SCORES[:, 0], BINARY), ref, rtol=1e-6)
    manual = -(
        BINARY * jnp.log(jax.nn.sigmoid(SCORES[:, 0])) + (1 - BINARY) * jnp.log(1 - jax.nn.sigmoid(SCORES[:, 0]))
    )
    np.testing.assert_allclose(ref, manual, rtol=1e-4)


def test_mse_matches_optax_squared_error():
    targets = jax.random.normal(jax.random.fold_in(KEY, 4), (16, 5))
    np.testing.assert_allclose(
        losses.get("mse")(LOGITS, targets), optax.squared_error(LOGITS, targets).mean(-1), rtol=1e-6
    )
    with pytest.raises(ValueError, match="shape"):
        losses.get("mse")(LOGITS, targets[:, :3])


def test_hinge_and_perceptron_match_optax_with_signed_targets():
    signed = 2.0 * BINARY - 1.0
    np.testing.assert_allclose(losses.get("hinge")(SCORES, BINARY), optax.losses.hinge_loss(SCORES[:, 0], signed))
    np.testing.assert_allclose(
        losses.get("perceptron")(SCORES, BINARY), optax.losses.perceptron_loss(SCORES[:, 0], signed)
    )
    np.testing.assert_allclose(
        losses.get("hinge")(SCORES, BINARY), jnp.maximum(0.0, 1.0 - signed * SCORES[:, 0]), rtol=1e-6
    )


def test_predictions_follow_the_task():
    assert np.array_equal(losses.get("softmax_cross_entropy").predict(LOGITS), jnp.argmax(LOGITS, -1))
    assert np.array_equal(losses.get("binary_cross_entropy").predict(SCORES), (SCORES[:, 0] > 0).astype(int))
    with pytest.raises(ValueError, match="regression"):
        losses.get("mse").predict(LOGITS)


def test_custom_callable_loss():
    loss = losses.get(lambda out, y: jnp.sum(out, axis=-1) * 0 + y)
    assert loss.task == "auto"
    assert loss.predict(LOGITS).shape == (16,)
    with pytest.raises(ValueError, match="one value per example"):
        losses.get(lambda out, y: out)(LOGITS, LABELS)


@pytest.mark.parametrize("name", ["binary_cross_entropy", "hinge", "perceptron"])
def test_binary_losses_take_a_label_column_as_one_label_per_example(name):
    # [B, 1] labels beside [B, 1] scores once broadcast to a [B, B] loss matrix (its mean 0.97 instead of 0.47)
    loss = losses.get(name)
    column = loss(SCORES, BINARY[:, None])
    assert column.shape == (16,)
    np.testing.assert_allclose(column, loss(SCORES[:, 0], BINARY), rtol=1e-6)
    with pytest.raises(ValueError, match=r"labels of shape \(4,\)"):
        loss(SCORES, BINARY[:4])


def test_binary_loss_rejects_several_outputs():
    with pytest.raises(ValueError, match="one score per example"):
        losses.get("binary_cross_entropy")(LOGITS, BINARY)


def test_errors_list_known_names_and_check_options():
    with pytest.raises(ValueError, match="softmax_cross_entropy") as info:
        losses.get("crossentropy")
    assert "Known losses" in str(info.value)
    with pytest.raises(ValueError, match="label_smoothing"):
        losses.get("mse", label_smoothing=0.1)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        losses.get("softmax_cross_entropy", label_smoothing=1.5)


def test_losses_on_hand_computed_values():
    """Known values from the definitions, independent of optax (which dlfund's losses call)."""
    two = jnp.log(jnp.array([[1.0, 3.0], [1.0, 3.0]]))  # softmax [0.25, 0.75]
    labels = jnp.array([1, 0])
    ce = losses.get("softmax_cross_entropy")
    np.testing.assert_allclose(ce(two, labels), [-math.log(0.75), math.log(4)], rtol=1e-6)
    np.testing.assert_allclose(ce(jnp.zeros((3, 5)), jnp.array([0, 2, 4])), math.log(5), rtol=1e-6)  # uniform: ln C
    # Label smoothing a mixes the one-hot target with the uniform 1/C: for C = 2, targets a/2 and 1 - a/2.
    smoothed = losses.get("softmax_cross_entropy", label_smoothing=0.1)(two, labels)
    expected = [-(0.05 * math.log(0.25) + 0.95 * math.log(0.75)), -(0.95 * math.log(0.25) + 0.05 * math.log(0.75))]
    np.testing.assert_allclose(smoothed, expected, rtol=1e-6)
    # Binary cross-entropy on one logit: sigmoid(ln 3) = 0.75, sigmoid(0) = 0.5.
    bce = losses.get("binary_cross_entropy")(jnp.array([[math.log(3)], [math.log(3)], [0.0]]), jnp.array([1, 0, 1]))
    np.testing.assert_allclose(bce, [-math.log(0.75), math.log(4), math.log(2)], rtol=1e-6)
    # MSE averages over every non-batch axis.
    mse = losses.get("mse")
    np.testing.assert_allclose(
        mse(jnp.array([[1.0, 2.0], [0.0, 0.0]]), jnp.array([[0.0, 0.0], [3.0, 4.0]])), [2.5, 12.5]
    )
    np.testing.assert_allclose(mse(jnp.ones((2, 2, 2)), jnp.zeros((2, 2, 2))), [1.0, 1.0])
    # Margin losses with targets t = 2 * label - 1: hinge max(0, 1 - t s), perceptron max(0, -t s).
    scores, binary = jnp.array([2.0, 0.5, -1.0, -3.0, 0.5]), jnp.array([1, 1, 1, 0, 0])
    np.testing.assert_allclose(losses.get("hinge")(scores, binary), [0.0, 0.5, 2.0, 0.0, 1.5])
    np.testing.assert_allclose(losses.get("perceptron")(scores, binary), [0.0, 0.0, 1.0, 0.0, 0.5])


def test_a_score_of_exactly_zero_is_class_0_as_in_scikit_learn():
    """Binary predictions are ``score > 0`` (scikit-learn's linear classifiers: ``decision_function > 0``); a
    zero-initialized perceptron scores 0 everywhere. A custom loss with one output per example decides by sign
    too, not by an argmax over one column (always class 0)."""
    from sklearn.linear_model import LogisticRegression

    x = np.array([[-1.0], [0.0], [1.0]])
    oracle = LogisticRegression().fit([[-1.0], [1.0]], [0, 1])
    oracle.coef_, oracle.intercept_ = np.array([[1.0]]), np.array([0.0])
    expected = oracle.predict(x)
    np.testing.assert_array_equal(expected, [0, 0, 1])
    for name in ("binary_cross_entropy", "hinge", "perceptron"):
        np.testing.assert_array_equal(losses.get(name).predict(jnp.asarray(x, jnp.float32)), expected)
    custom = losses.get(lambda outputs, targets: jnp.zeros(outputs.shape[0]))
    np.testing.assert_array_equal(custom.predict(jnp.asarray(x, jnp.float32)), expected)


@pytest.mark.parametrize("amount", [0.0, 0.5, 0.999])
def test_label_smoothing_below_1_is_taken_and_its_description_rebuilds_the_same_loss(amount):
    """[0, 1) is the range (1 would make every target uniform); the description (what config.json records) names
    the amount, and the loss rebuilt from it has optax's values."""
    loss = losses.get("softmax_cross_entropy", label_smoothing=amount)
    described = loss.describe()
    rebuilt = losses.get(described.pop("name"), **described)
    logits = jax.random.normal(jax.random.key(0), (6, 4))
    labels = jnp.array([0, 1, 2, 3, 0, 1])
    expected = optax.softmax_cross_entropy(logits, optax.smooth_labels(jax.nn.one_hot(labels, 4), amount))
    np.testing.assert_allclose(rebuilt(logits, labels), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loss(logits, labels), expected, rtol=1e-5, atol=1e-6)


def test_label_smoothing_of_1_is_refused():
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\), got 1.0"):
        losses.get("softmax_cross_entropy", label_smoothing=1.0)
