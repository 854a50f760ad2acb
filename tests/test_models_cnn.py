"""CNN and ResNet: shapes, parameter counts, batch norm, dropout, input checks, and training with dlfund.fit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from model_helpers import count, dropout_keys, randn

import dlfund
from dlfund.models import CNN, ResNet, build


def abstract(factory):
    """The model with abstract arrays (shapes only): counting and shape checks without computing anything."""
    return nnx.eval_shape(factory)


def output_shape(model, x_shape):
    return nnx.eval_shape(lambda m: m(jnp.zeros(x_shape)), model).shape


@nnx.jit
def forward(model, x, key=None):
    """``model(x, rngs=key)`` compiled once per model configuration: eager calls compile every op separately."""
    return model(x, rngs=key)


@pytest.mark.parametrize(
    "factory, x_shape, expected_params, expected_out",
    [
        pytest.param(
            lambda: CNN(rngs=nnx.Rngs(0)),  # the benchmark CNN on 28x28x1
            (2, 28, 28, 1),
            (3 * 3 * 1 * 32 + 32) + (3 * 3 * 32 * 64 + 64) + (7 * 7 * 64 * 128 + 128) + (128 * 10 + 10),
            (2, 10),
            id="default",
        ),
        pytest.param(
            # VALID 3x3: 8 -> 6, avg pool 2 -> 3; 1x1 conv keeps 3, no pool. BN replaces conv biases.
            lambda: CNN(
                (8, 8, 3),
                (4, 6),
                kernel_size=(3, 1),
                pool=(2, None),
                dense=(),
                num_classes=5,
                batch_norm=True,
                padding="VALID",
                pooling="avg",
                rngs=nnx.Rngs(0),
            ),
            (2, 8, 8, 3),
            (3 * 3 * 3 * 4 + 2 * 4) + (1 * 1 * 4 * 6 + 2 * 6) + (3 * 3 * 6 * 5 + 5),
            (2, 5),
            id="bn-valid-avg",
        ),
        pytest.param(
            # SAME with stride 2: 9 -> 5; global pooling leaves 4 features whatever the spatial size.
            lambda: CNN((9, 9, 2), (4,), 3, None, (7,), 3, strides=2, global_pool=True, rngs=nnx.Rngs(0)),
            (2, 9, 9, 2),
            (3 * 3 * 2 * 4 + 4) + (4 * 7 + 7) + (7 * 3 + 3),
            (2, 3),
            id="strided-global-pool",
        ),
    ],
)
def test_cnn_parameter_counts_and_output_shapes(factory, x_shape, expected_params, expected_out):
    model = abstract(factory)
    assert count(model) == expected_params
    assert output_shape(model, x_shape) == expected_out
    flat = (x_shape[0], int(np.prod(x_shape[1:])))
    assert output_shape(model, flat) == expected_out  # flat vectors of H*W*C are reshaped


def test_global_pool_accepts_other_image_sizes_and_flatten_does_not():
    pooled = abstract(lambda: CNN((9, 9, 2), (4,), pool=None, global_pool=True, rngs=nnx.Rngs(0)))
    pooled.check_input((12, 5, 2))
    assert output_shape(pooled, (2, 12, 5, 2)) == (2, 10)
    flat = abstract(lambda: CNN((9, 9, 2), (4,), pool=None, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"expects images of shape \(9, 9, 2\).*have shape \(12, 5, 2\)"):
        flat.check_input((12, 5, 2))


@pytest.fixture(scope="module")
def small_cnn_data():
    x = randn(0, (6, 8, 8, 2)) * 2 + 1
    return x


def test_cnn_flat_input_equals_image_input(small_cnn_data):
    model = CNN((8, 8, 2), (3,), dense=(5,), num_classes=4, rngs=nnx.Rngs(0))
    model.eval()
    x = small_cnn_data
    np.testing.assert_allclose(forward(model, x.reshape(6, -1)), forward(model, x), rtol=1e-6)


def test_cnn_batch_norm_statistics_move_in_training_only(small_cnn_data):
    model = CNN((8, 8, 2), (3, 4), dense=(5,), num_classes=4, batch_norm=True, rngs=nnx.Rngs(0))
    x = small_cnn_data
    before = [np.asarray(bn.mean[...]) for bn in model.norms]
    train_out = forward(model, x)  # a new module is in training mode
    after = [np.asarray(bn.mean[...]) for bn in model.norms]
    for b, a in zip(before, after):
        assert not np.allclose(b, a)
    model.eval()
    out = forward(model, x)
    for a, bn in zip(after, model.norms):
        np.testing.assert_array_equal(a, bn.mean[...])
    # In evaluation, an example's output does not depend on the rest of the batch; in training it does.
    np.testing.assert_allclose(out[:1], forward(model, x[:1]), rtol=1e-5, atol=1e-6)
    assert not np.allclose(train_out[:1], out[:1], atol=1e-4)


def test_cnn_dropout_is_active_in_training_only_with_one_key_per_site(small_cnn_data, monkeypatch):
    model = CNN((8, 8, 2), (4,), pool=None, dense=(4,), num_classes=3, dropout=0.5, global_pool=True, rngs=nnx.Rngs(0))
    x = small_cnn_data
    a, b = forward(model, x, jax.random.key(1)), forward(model, x, jax.random.key(2))
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(a, forward(model, x, jax.random.key(1)))
    # Two sites (pooled features and hidden layer, both 4 wide): the same key would drop the same units in both.
    keys = dropout_keys(monkeypatch, model, x, jax.random.key(1))
    assert len(keys) == 2 and len(set(keys)) == 2
    model.eval()
    np.testing.assert_array_equal(forward(model, x, jax.random.key(1)), forward(model, x, jax.random.key(3)))


def test_cnn_input_checks_name_expected_and_received_shapes():
    model = abstract(lambda: CNN((8, 8, 1), (4,), rngs=nnx.Rngs(0)))
    model.check_input((8, 8, 1))
    model.check_input((64,))
    with pytest.raises(ValueError, match=r"shape \(8, 8, 1\) or flat vectors of 64 .* flat vectors of 784 numbers"):
        model.check_input((784,))
    with pytest.raises(ValueError, match=r"expects images with 1 channels .* shape \(8, 8, 3\), i\.e\. 3 channels"):
        model.check_input((8, 8, 3))
    with pytest.raises(ValueError, match=r"expects images of shape \(8, 8, 1\) .* have shape \(8, 8\)"):
        model.check_input((8, 8))


def test_cnn_kernel_or_pool_larger_than_the_shrinking_map_is_rejected():
    # 4x4 -> conv -> 4x4 -> pool 2 -> 2x2: the second block's 3x3 kernel does not fit.
    with pytest.raises(ValueError, match=r"conv block 2 has a 3x3 kernel, larger than its 2x2 input map .* 4x4"):
        CNN((4, 4, 1), (2, 2), kernel_size=3, pool=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"conv block 1 pools over 4x4 windows, larger than its 3x3 feature map"):
        CNN((3, 3, 1), (2,), kernel_size=1, pool=4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"conv block 1 has a 5x5 kernel, larger than its 4x4 input map"):
        CNN((4, 4, 1), (2,), kernel_size=5, padding="VALID", rngs=nnx.Rngs(0))
    # A fully convolutional CNN checks the images it is given.
    model = abstract(lambda: CNN((8, 8, 1), (2,), kernel_size=3, pool=2, global_pool=True, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"3x3 kernel, larger than its 2x2 input map \(images of 2x2"):
        model.check_input((2, 2, 1))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"channels": ()}, r"at least one conv block"),
        ({"kernel_size": (3, 3, 3)}, r"kernel_size needs one value per block \(2\), got 3"),
        ({"strides": 0}, r"strides\[0\] must be a positive integer, got 0"),
        ({"padding": "full"}, r"padding must be 'SAME' or 'VALID', got 'full'"),
        ({"pooling": "min"}, r"pooling must be one of 'max', 'avg', got 'min'"),
        ({"dropout": 1.0}, r"dropout must be a probability in \[0, 1\)"),
        ({"input_shape": (28, 28)}, r"input_shape must be a tuple of 3 positive integers, got \(28, 28\)"),
        ({"activation": "rellu"}, r"Known activations"),
    ],
)
def test_cnn_constructor_errors(kwargs, message):
    args = {"input_shape": (8, 8, 1), "channels": (2, 3), **kwargs}
    with pytest.raises(ValueError, match=message):
        CNN(**args, rngs=nnx.Rngs(0))


def test_cnn_config_is_json_friendly_and_rebuilds_the_model():
    model = abstract(lambda: CNN((8, 8, 1), (4, 6), kernel_size=(3, 1), dense=(5,), rngs=nnx.Rngs(0)))
    config = model.config
    assert config["kernel_size"] == (3, 1) and config["pool"] == (2, 2) and config["strides"] == (1, 1)
    rebuilt = abstract(lambda: CNN(**config, rngs=nnx.Rngs(0)))
    assert count(rebuilt) == count(model)


def test_resnet_parameter_count_and_shapes():
    model = abstract(lambda: ResNet((8, 8, 3), (4, 8), (1, 1), 5, rngs=nnx.Rngs(0)))
    stem = 3 * 3 * 3 * 4 + 2 * 4  # conv without bias + BN scale and shift
    identity_block = 2 * (3 * 3 * 4 * 4 + 2 * 4)
    projecting_block = (3 * 3 * 4 * 8 + 2 * 8) + (3 * 3 * 8 * 8 + 2 * 8) + (1 * 1 * 4 * 8 + 2 * 8)
    assert count(model) == stem + identity_block + projecting_block + (8 * 5 + 5)
    assert model.blocks[0].proj is None and model.blocks[1].proj is not None
    assert nnx.eval_shape(lambda b: b(jnp.zeros((1, 8, 8, 4))), model.blocks[1]).shape == (1, 4, 4, 8)  # stride 2
    assert output_shape(model, (2, 8, 8, 3)) == (2, 5)
    assert output_shape(model, (2, 192)) == (2, 5)
    assert output_shape(model, (2, 16, 12, 3)) == (2, 5)  # global average pool: any image size
    with pytest.raises(ValueError, match=r"expects images with 3 channels .* \(8, 8, 1\), i\.e\. 1 channels"):
        model.check_input((8, 8, 1))
    with pytest.raises(ValueError, match=r"need one entry per stage"):
        ResNet((8, 8, 3), (4, 8), (1,), rngs=nnx.Rngs(0))


def test_resnet_block_adds_its_shortcut():
    block = ResNet((8, 8, 3), (4,), (1,), 2, rngs=nnx.Rngs(0)).blocks[0]
    block.eval()
    x = randn(0, (2, 8, 8, 4))
    # With the residual branch's last BN zeroed, an identity block is relu(x + 0).
    block.bn2.scale[...] = jnp.zeros_like(block.bn2.scale[...])
    np.testing.assert_allclose(nnx.jit(lambda b, x: b(x))(block, x), jax.nn.relu(x), atol=1e-6)


def test_resnet_batch_norm_and_eval_independence(small_cnn_data):
    model = ResNet((8, 8, 2), (3, 4), (1, 1), 3, rngs=nnx.Rngs(0))
    x = small_cnn_data
    before = np.asarray(model.blocks[1].proj_bn.mean[...])
    forward(model, x)
    assert not np.allclose(before, model.blocks[1].proj_bn.mean[...])
    model.eval()
    np.testing.assert_allclose(forward(model, x)[:2], forward(model, x[:2]), rtol=1e-5, atol=1e-6)


def _halves_task(n, seed):
    """Images whose class is which half (left or right) is brighter: learnable by any CNN in a few steps."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 2, n)
    x[y == 0, :, :4] += 1.5
    x[y == 1, :, 4:] += 1.5
    return x, y


def test_cnn_fit_loss_goes_down():
    x, y = _halves_task(96, 0)
    model = CNN((8, 8, 1), (4,), pool=2, dense=(8,), num_classes=2, batch_norm=True, dropout=0.1, rngs=nnx.Rngs(0))
    result = dlfund.fit(model, (x, y), epochs=4, batch_size=8, learning_rate=3e-3, progress=False)
    loss = result.history["loss"]
    assert result.execution == "chunk"  # conv models on CPU
    assert loss[-1] < 0.5 * loss[0]
    assert result.history["accuracy"][-1] > 0.9


def _brightness_task(n, seed):
    """Images whose class is their overall brightness: a task that survives ResNet's global average pooling."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 2, n).astype(np.int32)
    x[y == 1] += 1.0
    return x, y


def test_resnet_fit_loss_goes_down_and_registry_checks():
    x, y = _brightness_task(32, 1)
    model = build("resnet", (8, 8, 1), 2, rngs=nnx.Rngs(0), stage_channels=(2, 4), blocks_per_stage=(1, 1))
    result = dlfund.fit(model, (x, y), epochs=6, batch_size=8, learning_rate=3e-3, progress=False)
    loss = result.history["loss"]
    assert result.execution == "chunk" and loss[-1] < 0.7 * loss[0], loss
    with pytest.raises(ValueError, match=r"expects images with 1 channels"):
        dlfund.fit(model, (np.zeros((32, 8, 8, 3), np.float32), y), epochs=1, batch_size=8, progress=False)
    cnn = abstract(lambda: build("cnn", (8, 8, 3), 5, rngs=nnx.Rngs(0), channels=(2,), dense=()))
    assert cnn.config["input_shape"] == (8, 8, 3) and output_shape(cnn, (2, 8, 8, 3)) == (2, 5)
    with pytest.raises(ValueError, match=r"takes images: input_shape \(H, W, C\), got \(64,\)"):
        build("cnn", (64,), 2, rngs=nnx.Rngs(0))


class _PlainCNN(nnx.Module):
    """The issue's benchmark CNN (conv-relu-maxpool twice, dense-relu, dense) written with plain Flax layers and their
    default initializers, built in the same order as dlfund's CNN, so the same ``nnx.Rngs`` gives the same weights."""

    def __init__(self, rngs):
        self.conv1 = nnx.Conv(1, 4, (3, 3), padding="SAME", rngs=rngs)
        self.conv2 = nnx.Conv(4, 8, (3, 3), padding="SAME", rngs=rngs)
        self.dense1 = nnx.Linear(3 * 3 * 8, 16, rngs=rngs)
        self.dense2 = nnx.Linear(16, 3, rngs=rngs)

    def __call__(self, x):
        x = nnx.max_pool(jax.nn.relu(self.conv1(x)), (2, 2), (2, 2))
        x = nnx.max_pool(jax.nn.relu(self.conv2(x)), (2, 2), (2, 2))
        return self.dense2(jax.nn.relu(self.dense1(x.reshape(x.shape[0], -1))))


@pytest.mark.parametrize("execution", ["auto", "loop"])
def test_cnn_fit_equals_a_plain_flax_adam_loop_over_the_same_batches(execution):
    """Issue 12 (dlfund's 1-epoch CNN accuracy below a plain Flax loop's): fit adds nothing to the textbook loop.
    Same weights at init, one Adam(1e-3) step per batch of the epoch's order, the ragged remainder skipped, the
    mean cross-entropy; the history's loss is the mean of the step losses. The chunked epoch ("auto" on CPU: 8
    steps unrolled per call, then single steps) and the per-step loop give the hand loop's weights."""
    from dlfund.train.execution import epoch_order
    from dlfund.train.fit import order_root

    rng = np.random.default_rng(0)
    x = rng.normal(size=(16 * 20 + 5, 12, 12, 1)).astype(np.float32)  # 20 batches of 16 and a remainder of 5
    y = rng.integers(0, 3, len(x)).astype(np.int32)
    x[np.arange(len(x)), y * 4, y * 4] += 3.0  # a learnable mark
    model = CNN((12, 12, 1), (4, 8), kernel_size=3, pool=2, dense=(16,), num_classes=3, rngs=nnx.Rngs(0))
    plain = _PlainCNN(nnx.Rngs(0))
    for a, b in zip(jax.tree.leaves(nnx.state(model, nnx.Param)), jax.tree.leaves(nnx.state(plain, nnx.Param))):
        np.testing.assert_array_equal(a, b)  # same initializers, drawn in the same order

    result = dlfund.fit(
        model, (x, y), epochs=1, batch_size=16, seed=3, optimizer="adam", learning_rate=1e-3, execution=execution,
        metrics=(), progress=False,
    )  # fmt: skip

    graphdef, params = nnx.split(plain)
    tx = optax.adam(1e-3)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, xb, yb):
        def loss_fn(p):
            return optax.softmax_cross_entropy_with_integer_labels(nnx.merge(graphdef, p)(xb), yb).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    losses = []
    for idx in np.asarray(epoch_order(jax.random.fold_in(order_root(3), 1), len(x), 16)):
        params, opt_state, loss = step(params, opt_state, x[idx], y[idx])
        losses.append(float(loss))
    assert result.execution == ("chunk" if execution == "auto" else "loop")
    assert int(result.state.step) == len(losses) == 20
    trained = [np.asarray(a) for a in jax.tree.leaves(nnx.state(model, nnx.Param))]
    for a, b in zip(trained, jax.tree.leaves(params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.history["loss"][0], np.mean(losses), rtol=1e-5)
