"""The conv models (CNN, ResNet) and the losses checked against independent oracles.

Oracles (none of them calls the code under test):

- CNN and ResNet forward passes: recomputed from the models' own weights with ``jax.lax.conv_general_dilated``
  (XLA's convolution, not ``dlfund.models.conv_ops``), NumPy pooling over cropped non-overlapping windows, NumPy
  batch norm with the running statistics, and the textbook block order (conv -> BN -> activation -> pool for the
  CNN; relu(BN(conv(relu(BN(conv(x))))) + shortcut) for a basic block, the projection shortcut being 1x1 conv + BN).
  Weights and running statistics are first set to random values, so no term hides behind a zero or a one.
  Non-square images, odd sizes, strides, VALID padding, ragged pooling borders, avg pooling and global pooling
  are the settings the plain-Flax training comparison in ``test_models_cnn.py`` does not reach.
- Losses: ``optax.sigmoid_binary_cross_entropy`` and the float64 closed form ``max(s, 0) - s y + log1p(exp(-|s|))``
  at logits far beyond the range where ``log(sigmoid(s))`` stays finite in float32; ``optax.smooth_labels`` +
  ``optax.softmax_cross_entropy`` at the smoothing amount passed at call time (the train state's traced value).
- Probabilities: a NumPy softmax over each row (the classes) for softmax cross-entropy and for a multinomial
  ``LogisticRegression`` (its logits recomputed from its weights); for one binary logit, column 1 is the positive
  class, ``1 / (1 + exp(-s))`` in NumPy.
- Properties without a numeric oracle: the CNN's shape checks compare a kernel or pool with the *short* side of a
  non-square map, and every dropout site of the CNN's head draws its own key.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from model_helpers import dropout_keys

from dlfund import losses
from dlfund.models import CNN, LogisticRegression, ResNet


def _randomize(model, seed):
    """Every parameter and batch-norm statistic set to random values (variances positive)."""
    rng = np.random.default_rng(seed)
    for path, var in nnx.iter_graph(model):
        if isinstance(var, nnx.Variable) and isinstance(var, (nnx.Param, nnx.BatchStat)):
            shape = var[...].shape
            name = path[-1]
            if name == "var":
                value = rng.uniform(0.5, 2.0, shape)
            elif name == "scale":
                value = rng.uniform(0.5, 1.5, shape) * rng.choice([-1.0, 1.0], shape)
            else:
                value = rng.normal(0.0, 0.5, shape)
            var[...] = jnp.asarray(value, jnp.float32)
    return model


def _conv(x, conv, stride, padding):
    """XLA's own convolution (NHWC, HWIO) at full precision, plus the bias if the layer has one."""
    y = jax.lax.conv_general_dilated(
        jnp.asarray(x, jnp.float32),
        conv.kernel[...],
        (stride, stride),
        padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=jax.lax.Precision.HIGHEST,
    )
    y = np.asarray(y, np.float64)
    return y if conv.bias is None else y + np.asarray(conv.bias[...], np.float64)


def _bn_eval(x, bn):
    """Batch norm with the running statistics: scale * (x - mean) / sqrt(var + eps) + bias."""
    mean, var = np.asarray(bn.mean[...], np.float64), np.asarray(bn.var[...], np.float64)
    scale, bias = np.asarray(bn.scale[...], np.float64), np.asarray(bn.bias[...], np.float64)
    return scale * (x - mean) / np.sqrt(var + bn.epsilon) + bias


def _pool(x, window, kind):
    """Non-overlapping window x window pooling with stride window; a ragged bottom/right border is dropped."""
    b, h, w, c = x.shape
    ho, wo = h // window, w // window
    blocks = x[:, : ho * window, : wo * window].reshape(b, ho, window, wo, window, c)
    return blocks.max(axis=(2, 4)) if kind == "max" else blocks.mean(axis=(2, 4))


def _dense(x, layer):
    return x @ np.asarray(layer.kernel[...], np.float64) + np.asarray(layer.bias[...], np.float64)


_ACTIVATIONS = {
    "relu": lambda z: np.maximum(z, 0.0),
    "tanh": np.tanh,
    "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
}


def _cnn_oracle(model, x, *, strides, padding, pools, pooling, activation, global_pool):
    act = _ACTIVATIONS[activation]
    for i, conv in enumerate(model.convs):
        x = _conv(x, conv, strides[i], padding)
        if len(model.norms):
            x = _bn_eval(x, model.norms[i])
        x = act(x)
        if pools[i] > 1:
            x = _pool(x, pools[i], pooling)
    x = x.mean(axis=(1, 2)) if global_pool else x.reshape(x.shape[0], -1)  # NHWC row-major flatten
    for layer in model.dense:
        x = act(_dense(x, layer))
    return _dense(x, model.head)


# Each configuration: (input shape, constructor options, per-block strides and pools). Non-square inputs, so that a
# height/width swap shows; every feature the plain-Flax comparison in test_models_cnn.py leaves at its default.
_CNN_CASES = {
    # VALID, strides (2, 1), kernels (3, 2), avg pool 2 then none: 13x11 -> 6x5 -> 3x2 -> 2x1, BN, tanh.
    "valid-strided-avg-bn-tanh": (
        (13, 11, 2),
        dict(
            channels=(3, 4),
            kernel_size=(3, 2),
            pool=(2, None),
            dense=(5,),
            strides=(2, 1),
            padding="VALID",
            pooling="avg",
            batch_norm=True,
            activation="tanh",
        ),
        (2, 1),
        (2, 1),
    ),
    # SAME with stride 2 on odd sizes (13x11 -> 7x6), a 3x3 max pool with a ragged border (-> 2x2), no hidden layer.
    "same-stride-ragged-max": (
        (13, 11, 3),
        dict(channels=(4,), kernel_size=3, pool=3, dense=(), strides=2, padding="SAME", pooling="max"),
        (2,),
        (3,),
    ),
    # Global average over space after two max-pooled blocks, sigmoid units, two hidden dense layers.
    "global-pool-sigmoid": (
        (10, 12, 1),
        dict(channels=(3, 5), kernel_size=3, pool=2, dense=(6, 4), global_pool=True, activation="sigmoid"),
        (1, 1),
        (2, 2),
    ),
}


@pytest.mark.parametrize("case", list(_CNN_CASES))
def test_cnn_forward_matches_xla_convolutions_and_numpy_pooling(case):
    shape, options, strides, pools = _CNN_CASES[case]
    model = _randomize(CNN(shape, num_classes=3, rngs=nnx.Rngs(0), **options), seed=1)
    model.eval()  # running statistics in BN: the oracle is per example
    x = np.random.default_rng(2).normal(size=(4, *shape)).astype(np.float32)
    expected = _cnn_oracle(
        model,
        x,
        strides=strides,
        padding=options.get("padding", "SAME"),
        pools=pools,
        pooling=options.get("pooling", "max"),
        activation=options.get("activation", "relu"),
        global_pool=options.get("global_pool", False),
    )
    got = nnx.jit(lambda m, x: m(x))(model, x)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "options, message",
    [
        # A 5x5 kernel on a 3x8 map: no VALID position fits in height (and SAME would mostly read padding).
        (dict(input_shape=(3, 8, 1), kernel_size=5, pool=None, padding="VALID"), r"5x5 kernel, larger than its 3x8"),
        # A 4x4 pool over an 8x3 map: its width would pool to 0 columns.
        (dict(input_shape=(8, 3, 1), kernel_size=1, pool=4), r"pools over 4x4 windows, larger than its 8x3"),
    ],
)
def test_cnn_rejects_a_kernel_or_pool_larger_than_the_short_side_of_a_non_square_map(options, message):
    # The check must compare with the smaller side: the existing test uses square maps, where min and max agree.
    with pytest.raises(ValueError, match=message):
        CNN(channels=(2,), rngs=nnx.Rngs(0), **options)


def test_cnn_dropout_sites_of_equal_width_get_different_keys(monkeypatch):
    # Two hidden dense layers of the same width plus the head: three dropout sites. One key shared by two sites
    # would drop the same units in both (the existing test's head has one hidden layer, where site i is always 0).
    model = CNN((6, 6, 1), (4,), pool=None, dense=(4, 4), num_classes=4, dropout=0.5, global_pool=True,
                rngs=nnx.Rngs(0))  # fmt: skip
    x = np.random.default_rng(8).normal(size=(3, 6, 6, 1)).astype(np.float32)
    keys = dropout_keys(monkeypatch, model, x, jax.random.key(1))
    assert len(keys) == 3 and len(set(keys)) == 3


def _block_oracle(block, x, stride):
    relu = _ACTIVATIONS["relu"]
    y = relu(_bn_eval(_conv(x, block.conv1, stride, "SAME"), block.bn1))
    y = _bn_eval(_conv(y, block.conv2, 1, "SAME"), block.bn2)
    shortcut = x if block.proj is None else _bn_eval(_conv(x, block.proj, stride, "SAME"), block.proj_bn)
    return relu(y + shortcut)  # the add comes before the last relu (He et al. 2016)


@pytest.mark.parametrize(
    "stage_channels, blocks_per_stage, strides",
    [
        # An identity block, a stride-2 block that changes the channels, then an identity block again.
        ((4, 6), (2, 2), (1, 1, 2, 1)),
        # A stride-2 block that keeps the channels: its shortcut must still project (to the halved size).
        ((4, 4), (1, 1), (1, 2)),
    ],
)
def test_resnet_forward_matches_a_textbook_basic_block_oracle(stage_channels, blocks_per_stage, strides):
    model = _randomize(ResNet((9, 7, 3), stage_channels, blocks_per_stage, 5, rngs=nnx.Rngs(0)), seed=3)
    model.eval()
    x = np.random.default_rng(4).normal(size=(3, 9, 7, 3)).astype(np.float32)
    h = _ACTIVATIONS["relu"](_bn_eval(_conv(x, model.stem, 1, "SAME"), model.stem_bn))
    assert len(model.blocks) == len(strides)
    for block, stride in zip(model.blocks, strides):
        h = _block_oracle(block, h, stride)
    assert h.shape == (3, 5, 4, stage_channels[-1])  # ceil(9 / 2) x ceil(7 / 2)
    expected = _dense(h.mean(axis=(1, 2)), model.head)
    got = nnx.jit(lambda m, x: m(x))(model, x)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_binary_cross_entropy_is_exact_and_finite_at_saturated_logits():
    # log(sigmoid(s)) is log(0) = -inf in float32 once s < -104 (and log(1 - sigmoid(s)) once s > 17): only the
    # logits form stays finite. The existing test's logits (|s| < 8) cannot tell the two forms apart.
    scores = np.array([-300.0, -120.0, -40.0, -18.0, -1.0, 0.0, 2.5, 18.0, 40.0, 120.0, 300.0], np.float32)
    labels = np.array([1, 0, 1, 1, 0, 1, 0, 0, 1, 0, 1], np.int32)
    s, y = scores.astype(np.float64), labels.astype(np.float64)
    exact = np.maximum(s, 0.0) - s * y + np.log1p(np.exp(-np.abs(s)))
    bce = losses.get("binary_cross_entropy")
    got = np.asarray(bce(jnp.asarray(scores)[:, None], jnp.asarray(labels)))
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, exact, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got, optax.sigmoid_binary_cross_entropy(scores, y.astype(np.float32)), rtol=1e-6)
    # d loss / d s = sigmoid(s) - y, finite everywhere (what training actually uses).
    grad = np.asarray(jax.grad(lambda s: bce(s, jnp.asarray(labels)).sum())(jnp.asarray(scores)))
    np.testing.assert_allclose(grad, 1.0 / (1.0 + np.exp(-s)) - y, atol=1e-6)


def test_label_smoothing_passed_at_call_time_overrides_the_losss_own_amount():
    # Losses that differ only in the amount share a compiled step; the step passes the run's amount (a traced value)
    # at call time. Using the loss's own amount instead would train every such run with the first run's smoothing.
    logits = jax.random.normal(jax.random.key(5), (6, 4)) * 2
    labels = jnp.array([0, 1, 2, 3, 3, 1])
    loss = losses.get("softmax_cross_entropy", label_smoothing=0.1)

    def optax_loss(amount):
        return optax.softmax_cross_entropy(logits, optax.smooth_labels(jax.nn.one_hot(labels, 4), amount))

    np.testing.assert_allclose(loss(logits, labels), optax_loss(0.1), rtol=1e-6)
    traced = jax.jit(lambda amount: loss(logits, labels, label_smoothing=amount))(jnp.float32(0.4))
    np.testing.assert_allclose(traced, optax_loss(0.4), rtol=1e-6)
    assert not np.allclose(traced, optax_loss(0.1), rtol=1e-3)


def test_softmax_cross_entropy_probabilities_normalize_each_example_over_its_classes():
    # A softmax over the batch axis instead would still give numbers in (0, 1): the oracle is NumPy's row softmax.
    logits = np.random.default_rng(7).normal(size=(5, 3)).astype(np.float64) * 2
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    got = losses.get("softmax_cross_entropy").probabilities(jnp.asarray(logits, jnp.float32))
    np.testing.assert_allclose(got, e / e.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-7)


def test_multinomial_logistic_regression_probabilities_are_a_row_softmax_of_x_w_plus_b():
    # The existing test only checks the shape (4, 5), which a softmax over the batch axis also has.
    model = LogisticRegression(3, 4, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(9)
    w, b = rng.normal(size=(3, 4)), rng.normal(size=4)
    model.linear.kernel[...] = jnp.asarray(w, jnp.float32)
    model.linear.bias[...] = jnp.asarray(b, jnp.float32)
    x = rng.normal(size=(5, 3)).astype(np.float32)
    logits = x.astype(np.float64) @ w.astype(np.float32).astype(np.float64) + b.astype(np.float32)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(model.predict_proba(x), e / e.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-6)


def test_binary_probabilities_put_the_positive_class_in_column_1():
    # Predictions say class 1 where the score is > 0; the probabilities must agree (column 1 = sigmoid(score)), or
    # calibration plots and ROC curves would read the negative class's probability as the positive one's.
    scores = np.array([-3.0, -0.5, 0.25, 2.0], np.float32)
    positive = 1.0 / (1.0 + np.exp(-scores.astype(np.float64)))
    expected = np.stack([1.0 - positive, positive], axis=-1)
    bce = losses.get("binary_cross_entropy")
    np.testing.assert_allclose(bce.probabilities(jnp.asarray(scores)[:, None]), expected, rtol=1e-6)
    np.testing.assert_array_equal(bce.predict(jnp.asarray(scores)), [0, 0, 1, 1])
