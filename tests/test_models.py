import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from model_helpers import dropout_keys

import dlfund
from dlfund.models import MLP, LogisticRegression, Perceptron, perceptron_rule

X4 = jnp.array([[0, 0], [0, 1], [1, 0], [1, 1]], jnp.float32)
AND, OR, XOR = jnp.array([0, 0, 0, 1]), jnp.array([0, 1, 1, 1]), jnp.array([0, 1, 1, 0])


def count(model):
    return sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


@pytest.mark.parametrize(
    "hidden, batch_norm, expected",
    [
        ((), False, 64 * 10 + 10),
        ((128,), False, 64 * 128 + 128 + 128 * 10 + 10),
        ((32, 16), True, 64 * 32 + 2 * 32 + 32 * 16 + 2 * 16 + 16 * 10 + 10),
    ],
)
def test_mlp_parameter_counts_and_shapes(hidden, batch_norm, expected):
    model = MLP(64, hidden, 10, batch_norm=batch_norm, rngs=nnx.Rngs(0))
    assert count(model) == expected
    model.eval()
    assert model(jnp.zeros((5, 8, 8, 1))).shape == (5, 10)  # image-shaped inputs are flattened


def test_mlp_dropout_is_active_in_training_and_off_in_eval():
    model = MLP(16, (64,), 4, dropout=0.5, rngs=nnx.Rngs(0))
    x = jnp.ones((8, 16))
    a, b = model(x, rngs=jax.random.key(1)), model(x, rngs=jax.random.key(2))
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(a, model(x, rngs=jax.random.key(1)))  # same key, same mask
    model.eval()
    np.testing.assert_array_equal(model(x), model(x, rngs=jax.random.key(3)))


def test_mlp_layers_get_different_dropout_keys(monkeypatch):
    """One key per hidden layer, drawn by the model itself: the same key would drop the same units in every layer
    of equal width."""
    model = MLP(8, (8, 8, 8), 2, dropout=0.5, activation="identity", rngs=nnx.Rngs(0))
    keys = dropout_keys(monkeypatch, model, np.ones((4, 8), np.float32), jax.random.key(0))
    assert len(keys) == 3 and len(set(keys)) == 3


def test_batch_norm_statistics_move_in_training_only():
    model = MLP(4, (8,), 2, batch_norm=True, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (32, 4)) * 3 + 1
    before = np.asarray(model.norms[0].mean[...])
    model(x)
    after_train = np.asarray(model.norms[0].mean[...])
    assert not np.allclose(before, after_train)
    model.eval()
    model(x)
    np.testing.assert_array_equal(after_train, model.norms[0].mean[...])
    # In eval, one example's output does not depend on the rest of the batch.
    np.testing.assert_allclose(model(x)[:1], model(x[:1]), rtol=1e-6)


def test_mlp_activation_by_name_or_callable_and_errors():
    assert MLP(4, (3,), 2, activation="tanh", rngs=nnx.Rngs(0)).activation is jnp.tanh
    MLP(4, (3,), 2, activation=jax.nn.softplus, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="Known activations"):
        MLP(4, (3,), 2, activation="rellu", rngs=nnx.Rngs(0))
    for rate in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"dropout must be a probability in \[0, 1\)"):
            MLP(4, (3,), 2, dropout=rate, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="hidden"):
        MLP(4, (0,), 2, rngs=nnx.Rngs(0))


def test_input_check_names_expected_and_received_shapes():
    model = MLP(64, (8,), 10, rngs=nnx.Rngs(0))
    model.check_input((8, 8, 1))
    with pytest.raises(ValueError, match=r"expects 64 input features.*\(28, 28, 1\) = 784"):
        model.check_input((28, 28, 1))


@pytest.mark.parametrize("labels", [AND, OR], ids=["AND", "OR"])
def test_perceptron_rule_learns_linearly_separable_gates(labels):
    model = Perceptron(2, rngs=nnx.Rngs(0))
    mistakes = perceptron_rule(model, X4, labels, epochs=20, key=jax.random.key(0))
    assert int(mistakes[-1]) == 0
    np.testing.assert_array_equal(model.predict(X4), labels)


def test_perceptron_rule_fails_xor():
    model = Perceptron(2, rngs=nnx.Rngs(0))
    mistakes = perceptron_rule(model, X4, XOR, epochs=100, key=jax.random.key(0))
    assert int(mistakes.min()) > 0  # no line separates XOR: some example is always wrong
    assert not np.array_equal(model.predict(X4), XOR)


@pytest.mark.parametrize("labels", [AND, OR], ids=["AND", "OR"])
def test_perceptron_learns_gates_by_gradient_on_the_surrogate(labels):
    model = Perceptron(2, rngs=nnx.Rngs(0))
    x, y = np.tile(X4, (8, 1)), np.tile(labels, 8)
    dlfund.fit(model, (x, y), optimizer="sgd", learning_rate=0.1, epochs=30, batch_size=4, progress=False)
    np.testing.assert_array_equal(model.predict(X4), labels)


def test_perceptron_fails_xor_by_gradient_while_an_mlp_solves_it():
    x, y = np.tile(X4, (16, 1)), np.tile(XOR, 16)
    perceptron = Perceptron(2, rngs=nnx.Rngs(0))
    dlfund.fit(perceptron, (x, y), optimizer="sgd", learning_rate=0.1, epochs=30, batch_size=4, progress=False)
    assert np.mean(np.asarray(perceptron.predict(X4)) == XOR) <= 0.75
    mlp = MLP(2, (8,), 2, activation="tanh", rngs=nnx.Rngs(0))
    dlfund.fit(mlp, (x, y), learning_rate=0.05, epochs=60, batch_size=8, progress=False)
    np.testing.assert_array_equal(jnp.argmax(mlp(X4), -1), XOR)


def test_logistic_regression_binary_and_multinomial():
    binary = LogisticRegression(3, 2, rngs=nnx.Rngs(0))
    assert binary.default_loss == "binary_cross_entropy"
    assert binary(jnp.ones((4, 3))).shape == (4, 1)
    np.testing.assert_allclose(binary.predict_proba(jnp.ones((4, 3))).sum(-1), 1.0)
    multi = LogisticRegression(3, 5, rngs=nnx.Rngs(0))
    assert multi.default_loss == "softmax_cross_entropy"
    assert multi.predict_proba(jnp.ones((4, 3))).shape == (4, 5)
    with pytest.raises(ValueError, match="num_classes >= 2"):
        LogisticRegression(3, 1, rngs=nnx.Rngs(0))


def test_model_registry_builds_by_name():
    model = dlfund.models.build("mlp", (8, 8, 1), 10, rngs=nnx.Rngs(0), hidden=(16,))
    assert isinstance(model, MLP) and model.in_features == 64
    assert model.config["hidden"] == (16,)
    with pytest.raises(ValueError, match="Known models"):
        dlfund.models.build("mpl", (4,), 2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="binary"):
        dlfund.models.build("perceptron", (4,), 3, rngs=nnx.Rngs(0))


def test_every_registered_model_is_one_load_model_may_rebuild():
    """load_model rebuilds only MODEL_CLASSES; a model the registry builds must be among them."""
    from dlfund.models import MODEL_CLASSES, MODELS, build

    shapes = {"cnn": (8, 8, 1), "resnet": (8, 8, 1), "rnn": (6, 3), "lstm": (6, 3), "gru": (6, 3)}
    shapes["transformer"] = (6, 3)
    for name in MODELS.names():
        model = nnx.eval_shape(lambda n=name: build(n, shapes.get(n, (4,)), 2, rngs=nnx.Rngs(0)))
        assert MODEL_CLASSES.get(type(model).__name__) is type(model), name


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.5, 0.9])
def test_dropout_with_its_rate_in_the_state_is_nnx_dropout(rate):
    """The oracle: nnx.Dropout with the same key; the rate here is a value of the state, so it can be traced."""
    from dlfund.models.blocks import Dropout

    x = jax.random.normal(jax.random.key(1), (64, 33))
    key = jax.random.key(7)
    ours = Dropout(rate)
    expected = np.asarray(nnx.Dropout(rate, deterministic=False)(x, rngs=key))
    graphdef, state = nnx.split(ours)
    traced = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x, rngs=key))(state, x)  # the rate as a traced value
    for got in (np.asarray(ours(x, rngs=key)), np.asarray(traced)):
        np.testing.assert_array_equal(got == 0, expected == 0)  # the same units dropped
        # The same scale up to a few roundings (XLA turns a division by a constant into a multiplication).
        np.testing.assert_allclose(got, expected, rtol=5e-7, atol=0)
    assert 0 < (expected == 0).mean() < 1 if rate else (expected == 0).mean() == 0
    ours.eval()
    np.testing.assert_array_equal(ours(x), x)


def test_models_that_differ_only_in_dropout_rate_share_compiled_programs_and_record_their_rate(tmp_path):
    from dlfund.train import loop

    x = np.random.default_rng(0).normal(size=(64, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    options = dict(epochs=2, batch_size=16, progress=False)
    first = dlfund.fit(MLP(6, (8,), 2, dropout=0.2, rngs=nnx.Rngs(0)), (x, y), **options)
    size = loop.run_epochs._cache_size()
    second = dlfund.fit(MLP(6, (8,), 2, dropout=0.7, rngs=nnx.Rngs(0)), (x, y), **options)
    assert loop.run_epochs._cache_size() == size
    assert first.history["loss"][-1] != second.history["loss"][-1]  # the other rate was used
    assert second.model.config["dropout"] == 0.7
    dlfund.save_weights(tmp_path / "w.safetensors", second.model)
    assert dlfund.load_model(tmp_path / "w.safetensors").config["dropout"] == 0.7
    assert dlfund.models.set_dropout(first.model, 0.4).config["dropout"] == 0.4
    with pytest.raises(ValueError, match="has no dropout layers"):
        dlfund.models.set_dropout(MLP(6, (8,), 2, rngs=nnx.Rngs(0)), 0.1)
