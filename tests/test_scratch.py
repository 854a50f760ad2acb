"""dlfund.scratch (the mechanics by hand, NumPy) against the library path: dlfund's activations, models and losses,
``jax.grad``, optax and ``flax.nnx.BatchNorm``.

Speed: each JAX oracle compiles once per input shape, about a second on a loaded 2-core machine. So hypothesis
draws values freely, while the shapes that reach an oracle come from short lists or are padded to one shape where
padding provably changes nothing (elementwise maps, independent rows, zero features, which add exact zeros).
Oracles that would otherwise compile per activation or per optimizer compute every case in one program.
"""

from __future__ import annotations

import functools
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import dlfund
import dlfund.scratch as scratch

RTOL = 1e-5


def assert_close(actual, expected, rtol: float = RTOL, err_msg: str = "", scale: float = 0.0) -> None:
    """|actual - expected| <= rtol |expected| + rtol max(max|expected|, scale), entry by entry, shapes equal;
    ``scale`` is a number or an array of expected's shape.

    Why the atol: float32 results summed in another order (XLA vs NumPy) differ by a few ulps of the *terms*. An
    entry that is a sum of cancelling terms (a gradient entry near 0 next to entries of order 1) can then be off by
    much more than rtol of itself while exact to rtol of the array's scale. ``scale`` is the size of those terms
    where the whole array can cancel: 1 for gradients of the O(1) test data, inv_std |gamma dout| for batch norm's
    dx, the updates for |g| for an optimizer (no sign changes, nothing cancels). The bugs guarded against here (a
    missing factor, term or bias correction) move entries by far more than that.
    """
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"shapes differ: {actual.shape} vs {expected.shape} {err_msg}"
    scale = np.maximum(max(float(np.abs(expected).max(initial=0.0)), 1e-6), np.abs(scale))
    excess = np.abs(actual - expected) - rtol * (np.abs(expected) + scale)
    bad = ~(excess <= 0)  # NaN counts as bad
    if bad.any():
        worst = np.unravel_index(np.argmax(np.where(bad, np.nan_to_num(excess, nan=np.inf), -np.inf)), bad.shape)
        raise AssertionError(
            f"{err_msg}: {bad.sum()} of {bad.size} entries differ by more than rtol * (|expected| + scale), "
            f"rtol={rtol}; worst at {worst}: actual {actual[worst]!r}, expected {expected[worst]!r}, scale "
            f"{np.broadcast_to(scale, expected.shape)[worst]!r}\nactual:\n{actual}\nexpected:\n{expected}"
        )


def floats(lo: float = -2.0, hi: float = 2.0):
    # No subnormals, and none from products either: XLA on CPU flushes them to zero, NumPy keeps them (a product
    # of two values near float32's smallest normal is subnormal, so magnitudes below 1e-6 become exact zeros).
    values = st.floats(lo, hi, width=32, allow_nan=False, allow_infinity=False, allow_subnormal=False)
    return values.map(lambda v: 0.0 if abs(v) < 1e-6 else v)


def arrays(shape, lo: float = -2.0, hi: float = 2.0):
    return hnp.arrays(np.float32, shape, elements=floats(lo, hi))


# Multiples of 1/4 in [-2, 2]: products and short sums of them are exact in float32, so the step function and the
# perceptron's mistake test see the same sign on both sides, whatever order XLA and NumPy add in.
quarters = st.integers(-8, 8).map(lambda k: k / 4)


# ---------------------------------------------------------------------------------------------------------------------
# Activations and the neuron

NAMES = ("sigmoid", "tanh", "relu", "step", "identity")
PAD = 64


@jax.jit
def library_activations(z):
    """Values and derivatives (vmap of jax.grad) of dlfund's activations, elementwise, all in one program."""
    return {
        name: (dlfund.activations.get(name)(z), jax.vmap(jax.grad(dlfund.activations.get(name)))(z)) for name in NAMES
    }


@settings(max_examples=25, deadline=None)
@given(z=hnp.arrays(np.float32, hnp.array_shapes(min_dims=0, max_dims=3, max_side=4), elements=floats(-20, 20)))
def test_activations_and_derivatives_match_dlfund_and_jax_grad(z):
    flat = np.zeros(PAD, np.float32)  # elementwise maps: padding to one shape changes no entry
    flat[: z.size] = z.ravel()
    expected = jax.device_get(library_activations(flat))
    for name in NAMES:
        value, grad = (e[: z.size].reshape(z.shape) for e in expected[name])
        assert_close(scratch.activate(z, name), value)
        # sigmoid' = s (1 - s) and tanh' = 1 - t^2 are differences of numbers of order 1: an ulp of difference
        # between XLA's and NumPy's tanh is 1e-7 absolute, 1e-4 relative where the derivative is 1e-3 (z = 4)
        assert_close(scratch.activation_grad(z, name), grad, scale=1.0)


def linear_model(model, w, b):
    """A dlfund linear model (kernel [D, 1], bias [1]) holding the neuron's weights."""
    model.linear.kernel[...] = w[:, None]
    model.linear.bias[...] = b[None]
    return model


@jax.jit
def library_neuron(x, w, b):
    """z from dlfund's LogisticRegression, its probability, Perceptron.predict, and dlfund's activations of z."""
    logistic = linear_model(dlfund.models.LogisticRegression(x.shape[1], 2, rngs=nnx.Rngs(0)), w, b)
    perceptron = linear_model(dlfund.models.Perceptron(x.shape[1], rngs=nnx.Rngs(0)), w, b)
    z = logistic(x)[:, 0]
    activations = {name: dlfund.activations.get(name)(z) for name in ("tanh", "relu", "identity")}
    return z, logistic.predict_proba(x)[:, 1], perceptron.predict(x), activations


@settings(max_examples=15, deadline=None)
@given(data=st.data(), batch=st.integers(1, 8), features=st.integers(1, 4), b=quarters)
def test_neuron_matches_dlfund_linear_models_and_activations(data, batch, features, b):
    x = data.draw(hnp.arrays(np.float32, (batch, features), elements=quarters), label="x")
    w = data.draw(hnp.arrays(np.float32, (features,), elements=quarters), label="w")
    # Rows are independent and zero features add exact zeros to w . x: one padded shape serves every drawn one.
    xp, wp = np.zeros((8, 4), np.float32), np.zeros(4, np.float32)
    xp[:batch, :features], wp[:features] = x, w
    z, probability, predictions, activations = jax.device_get(library_neuron(xp, wp, np.float32(b)))
    assert_close(scratch.pre_activation(x, w, b), z[:batch])
    assert_close(scratch.neuron(x, w, b, "sigmoid"), probability[:batch])
    np.testing.assert_array_equal(scratch.neuron(x, w, b, "step"), predictions[:batch])
    np.testing.assert_array_equal(scratch.perceptron_predict(x, w, b), predictions[:batch])
    for name, expected in activations.items():
        assert_close(scratch.neuron(x, w, b, name), expected[:batch])
    assert_close(scratch.neuron(x[0], w, b, "relu"), activations["relu"][0])  # one example [D] -> a number


# ---------------------------------------------------------------------------------------------------------------------
# The perceptron rule

EPOCHS = 6


@settings(max_examples=10, deadline=None)
@given(data=st.data(), seed=st.integers(0, 2**32 - 1), learning_rate=st.sampled_from([0.25, 1.0, 2.0]))
def test_perceptron_rule_matches_dlfund_perceptron_rule(data, seed, learning_rate):
    # One shape: the library's rule and its shuffle compile once per (N, D); the values, labels, order and
    # learning rate are drawn.
    n, d = shape = (8, 2)
    x = data.draw(hnp.arrays(np.float32, shape, elements=quarters), label="x")
    y = data.draw(hnp.arrays(np.int32, (n,), elements=st.integers(0, 1)), label="y")
    key = jax.random.key(seed)
    model = dlfund.models.Perceptron(d, rngs=nnx.Rngs(0))
    mistakes = dlfund.models.perceptron_rule(model, x, y, epochs=EPOCHS, learning_rate=learning_rate, key=key)
    order = scratch.perceptron_order(key, n, EPOCHS)
    ours = scratch.perceptron_train(x, y, epochs=EPOCHS, learning_rate=learning_rate, order=order)
    # Exact: every number involved is a multiple of 1/64, so both sides compute the same floats.
    np.testing.assert_array_equal(ours.w, np.asarray(model.linear.kernel[...])[:, 0])
    np.testing.assert_array_equal(ours.b, np.asarray(model.linear.bias[...])[0])
    np.testing.assert_array_equal(ours.mistakes, mistakes)


GATE_INPUTS = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)


@pytest.mark.parametrize(("gate", "y"), [("AND", [0, 0, 0, 1]), ("OR", [0, 1, 1, 1]), ("XOR", [0, 1, 1, 0])])
def test_perceptron_converges_on_and_or_but_never_on_xor(gate, y):
    y = np.array(y)
    result = scratch.perceptron_train(
        GATE_INPUTS, y, epochs=30, order=np.random.default_rng(0).permuted(np.tile(np.arange(4), (30, 1)), axis=1)
    )
    if gate == "XOR":  # not linearly separable: some example is misclassified in every epoch
        assert result.mistakes.min() >= 1
    else:  # the convergence theorem: a separating line is found, then no more mistakes
        assert result.mistakes[-1] == 0 and result.mistakes[0] > 0
        np.testing.assert_array_equal(scratch.perceptron_predict(GATE_INPUTS, result.w, result.b), y)


# ---------------------------------------------------------------------------------------------------------------------
# A dense layer and the losses


# Tolerances of gradients: the size of the terms each entry sums ("backprop of absolute values", float64, from the
# test's data alone). An entry whose terms cancel keeps their rounding error; the ulps of tanh' = 1 - t^2 near
# saturation are absolute too, which the bound 1 for every activation's derivative covers.


def loss_gradient_sizes(outputs, targets, loss):
    """An upper bound of |d loss / d outputs| per entry ([B, K], float64)."""
    outputs = np.asarray(outputs, np.float64)
    batch, classes = outputs.shape
    if loss == "mse":
        return 2 * (np.abs(outputs) + np.abs(targets)) / (batch * classes)
    e = np.exp(outputs - outputs.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True) + np.eye(classes)[targets]) / batch  # |p - onehot| <= p + onehot


def dense_gradient_sizes(x, W, dz):
    """Per entry, the sum of |terms| of dx = dz W^T, dW = x^T dz and db = sum_b dz."""
    x, W, dz = np.abs(np.asarray(x, np.float64)), np.abs(np.asarray(W, np.float64)), np.abs(dz)
    return dz @ W.T, x.T @ dz, dz.sum(axis=0)


def library_linear(W, b):
    """An nnx.Linear (the library's dense layer: kernel [D, K], bias [K]) holding W and b."""
    layer = nnx.Linear(*W.shape, rngs=nnx.Rngs(0))
    layer.kernel[...] = W
    layer.bias[...] = b
    return layer


@jax.jit
def library_dense_grads(x, W, b, targets, labels):
    """Loss and jax.grad w.r.t. (x, W, b) of nnx.Linear followed by dlfund's MSE and softmax cross-entropy."""
    losses = {
        "mse": lambda x, W, b: dlfund.losses.mse(library_linear(W, b)(x), targets).mean(),
        "softmax_cross_entropy": lambda x, W, b: dlfund.losses.softmax_cross_entropy(
            library_linear(W, b)(x), labels
        ).mean(),
    }
    return {name: jax.value_and_grad(fn, argnums=(0, 1, 2))(x, W, b) for name, fn in losses.items()}


@settings(max_examples=15, deadline=None)
@given(data=st.data(), shape=st.sampled_from([(1, 3, 2), (5, 2, 4)]))
def test_dense_backward_matches_jax_grad_of_dlfund_losses(data, shape):
    batch, features, outputs = shape
    x = data.draw(arrays((batch, features)), label="x")
    W = data.draw(arrays((features, outputs)), label="W")
    b = data.draw(arrays((outputs,)), label="b")
    targets = data.draw(arrays((batch, outputs)), label="targets")
    labels = data.draw(hnp.arrays(np.int32, (batch,), elements=st.integers(0, outputs - 1)), label="labels")
    expected = jax.device_get(library_dense_grads(x, W, b, targets, labels))
    for loss, target in (("mse", targets), ("softmax_cross_entropy", labels)):
        value, grads = scratch.dense_loss_and_grads(x, W, b, target, loss=loss)
        expected_value, (dx, dW, db) = expected[loss]
        outputs = np.asarray(x, np.float64) @ W + b
        assert_close(value, expected_value, scale=np.abs(outputs).max())  # -log p = logsumexp(z) - z_y cancels
        # e.g. softmax - onehot sums to 0 across classes, so with equal columns of W, dx is 0 up to rounding
        sizes = dense_gradient_sizes(x, W, loss_gradient_sizes(outputs, target, loss))
        for name, ours, theirs, size in zip(("x", "W", "b"), grads, (dx, dW, db), sizes):
            assert_close(ours, theirs, scale=size, err_msg=f"{loss}, d{name}")


# ---------------------------------------------------------------------------------------------------------------------
# The two-layer MLP

B, D, H, K = 4, 3, 5, 4
ACTIVATIONS = ("relu", "tanh", "sigmoid")


def library_layout(params):
    """The scratch {"W1", "b1", "W2", "b2"} laid out as ``nnx.state(MLP(D, (H,), K), nnx.Param)``: the hidden
    layer is ``dense/0``, the output layer ``head``."""
    return {
        "dense": {0: {"kernel": params["W1"], "bias": params["b1"]}},
        "head": {"kernel": params["W2"], "bias": params["b2"]},
    }


def scratch_layout(tree):
    return {
        "W1": tree["dense"][0]["kernel"],
        "b1": tree["dense"][0]["bias"],
        "W2": tree["head"]["kernel"],
        "b2": tree["head"]["bias"],
    }


def library_mlp(params, activation):
    """A dlfund.models.MLP(D, (H,), K) holding ``params``, split into (graphdef, weights, other state)."""
    graphdef, weights, rest = nnx.split(
        dlfund.models.MLP(D, (H,), K, activation=activation, rngs=nnx.Rngs(0)), nnx.Param, ...
    )
    assert jax.tree.structure(nnx.to_pure_dict(weights)) == jax.tree.structure(library_layout(params))
    nnx.replace_by_pure_dict(weights, library_layout(params))
    return graphdef, weights, rest


def library_loss(loss, graphdef, rest):
    fn = {"mse": dlfund.losses.mse, "softmax_cross_entropy": dlfund.losses.softmax_cross_entropy}[loss]
    return lambda weights, x, t: fn(nnx.merge(graphdef, weights, rest)(x), t).mean()


@jax.jit
def library_mlp_grads(params, x, labels, targets):
    """jax.grad of dlfund's loss of dlfund.models.MLP, for every activation and both losses, in one program."""
    out = {}
    for activation in ACTIVATIONS:
        graphdef, weights, rest = library_mlp(params, activation)
        for loss, t in (("mse", targets), ("softmax_cross_entropy", labels)):
            value, grads = jax.value_and_grad(library_loss(loss, graphdef, rest))(weights, x, t)
            out[activation, loss] = value, scratch_layout(nnx.to_pure_dict(grads))
    return out


ACTIVATIONS_64 = {"relu": lambda z: np.maximum(z, 0), "tanh": np.tanh, "sigmoid": lambda z: 1 / (1 + np.exp(-z))}


def mlp_gradient_sizes(params, x, targets, activation, loss):
    """The MLP's outputs (float64) and, per entry, the sum of |terms| of each gradient, with every activation
    derivative bounded by 1 (a saturated tanh' = 1 - t^2 is exact to ~1e-7 of 1 only, not of itself)."""
    p = {name: np.asarray(value, np.float64) for name, value in params.items()}
    h = ACTIVATIONS_64[activation](np.asarray(x, np.float64) @ p["W1"] + p["b1"])
    outputs = h @ p["W2"] + p["b2"]
    dh, dW2, db2 = dense_gradient_sizes(h, p["W2"], loss_gradient_sizes(outputs, targets, loss))
    _, dW1, db1 = dense_gradient_sizes(x, p["W1"], dh)
    return outputs, {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}


def mlp_params(data):
    return {
        name: data.draw(arrays(shape), label=name)
        for name, shape in (("W1", (D, H)), ("b1", (H,)), ("W2", (H, K)), ("b2", (K,)))
    }


@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_mlp_backward_matches_jax_grad_of_dlfund_mlp(data):
    params = mlp_params(data)
    x = data.draw(arrays((B, D)), label="x")
    labels = data.draw(hnp.arrays(np.int32, (B,), elements=st.integers(0, K - 1)), label="labels")
    targets = data.draw(arrays((B, K)), label="targets")
    expected = jax.device_get(library_mlp_grads(params, x, labels, targets))
    # ReLU's derivative jumps at 0: a pre-activation within rounding of 0 (but not exactly 0 from all-zero terms),
    # or below float32's smallest normal number (XLA flushes those to 0, NumPy does not), may land on either side
    # in XLA and in NumPy. Gradient checks stay away from kinks (TEACHING.md).
    z1 = np.asarray(x, np.float64) @ params["W1"] + params["b1"]
    size = np.abs(x).astype(np.float64) @ np.abs(params["W1"]) + np.abs(params["b1"])
    close = (np.abs(z1) <= 1e-5 * size) | (np.abs(z1) < np.finfo(np.float32).tiny)
    near_kink = bool(np.any(close & (size > 0)))
    for (activation, loss), (expected_value, expected_grads) in expected.items():
        if activation == "relu" and near_kink:
            continue
        target = labels if loss == "softmax_cross_entropy" else targets
        value, grads = scratch.mlp_loss_and_grads(params, x, target, activation=activation, loss=loss)
        outputs, sizes = mlp_gradient_sizes(params, x, target, activation, loss)
        assert_close(value, expected_value, scale=np.abs(outputs).max())
        for name in ("W1", "b1", "W2", "b2"):
            assert_close(grads[name], expected_grads[name], scale=sizes[name], err_msg=f"{activation}, {loss}, {name}")


@nnx.jit
def library_mlp_and_logits(x):
    """A freshly initialized dlfund.models.MLP(D, (H,), K) and its logits for x, in one compiled program."""
    model = dlfund.models.MLP(D, (H,), K, activation="tanh", rngs=nnx.Rngs(3))
    return model, model(x)


def test_init_mlp_draws_lecun_normal_weights_and_zero_biases():
    """The docstring's promise, variance 1/fan_in, against jax.nn.initializers.lecun_normal's own statistic (an
    untruncated normal's std would be 1/sqrt(fan_in) too; a 1/fan_in scale would be 20x off at fan_in 400)."""
    params = scratch.init_mlp(400, 300, 10, rng=0)
    reference = jax.nn.initializers.variance_scaling(1.0, "fan_in", "normal")(jax.random.key(0), (400, 300))
    assert np.std(params["W1"]) == pytest.approx(float(np.std(reference)), rel=0.03)
    assert np.std(params["W1"]) == pytest.approx(1 / math.sqrt(400), rel=0.03)
    assert np.std(params["W2"]) == pytest.approx(1 / math.sqrt(300), rel=0.1)
    assert not params["b1"].any() and not params["b2"].any()


@settings(max_examples=25, deadline=None)
@given(hnp.arrays(np.float32, st.tuples(st.integers(1, 5), st.integers(1, 6)), elements=st.floats(-30, 30, width=32)))
def test_softmax_matches_jax_over_the_last_axis(logits):
    np.testing.assert_allclose(scratch.softmax(logits), jax.nn.softmax(logits, axis=-1), rtol=1e-5, atol=1e-7)


def test_mlp_forward_with_the_weights_of_a_dlfund_mlp_matches_it():
    x = np.random.default_rng(0).standard_normal((B, D)).astype(np.float32)
    model, expected = library_mlp_and_logits(x)
    logits, cache = scratch.mlp_forward(scratch.params_from_mlp(model), x, "tanh")
    assert_close(logits, expected)
    assert cache.h.shape == (B, H)
    with pytest.raises(ValueError, match="one hidden layer"):  # the attributes of an MLP(D, (H, H), K)
        scratch.params_from_mlp(types.SimpleNamespace(dense=[None, None], norms=[]))


STEPS = 4


@functools.partial(jax.jit, static_argnames="activation")
def library_sgd(params, x_batches, y_batches, learning_rate, activation):
    """optax.sgd on jax.grad of dlfund.models.MLP's softmax cross-entropy, one batch per step: final weights and
    the loss of each step before its update."""
    graphdef, weights, rest = library_mlp(params, activation)
    loss = library_loss("softmax_cross_entropy", graphdef, rest)
    tx = optax.sgd(learning_rate)

    def step(carry, batch):
        weights, opt_state = carry
        value, grads = jax.value_and_grad(loss)(weights, *batch)
        updates, opt_state = tx.update(grads, opt_state)
        return (optax.apply_updates(weights, updates), opt_state), value

    (weights, _), losses = jax.lax.scan(step, (weights, tx.init(weights)), (x_batches, y_batches))
    return scratch_layout(nnx.to_pure_dict(weights)), losses


@settings(max_examples=8, deadline=None)
@given(
    data=st.data(),
    minibatches=st.booleans(),
    learning_rate=st.floats(0.01, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_train_mlp_matches_optax_sgd_on_dlfund_mlp(data, minibatches, learning_rate, seed):
    n = 2 * B if minibatches else B
    params = mlp_params(data)
    x = data.draw(arrays((n, D)), label="x")
    y = data.draw(hnp.arrays(np.int32, (n,), elements=st.integers(0, K - 1)), label="y")
    if minibatches:  # train_mlp's documented order: a fresh shuffle of the N examples each pass, batches in turn
        rng = np.random.default_rng(seed)
        batches = np.concatenate([rng.permutation(n) for _ in range(STEPS * B // n)]).reshape(STEPS, B)
    else:  # full batch: the whole set every step
        batches = np.tile(np.arange(n), (STEPS, 1))
    expected, expected_losses = jax.device_get(library_sgd(params, x[batches], y[batches], learning_rate, "tanh"))
    trained, losses = scratch.train_mlp(
        params,
        x,
        y,
        steps=STEPS,
        learning_rate=learning_rate,
        batch_size=B if minibatches else None,
        activation="tanh",
        rng=seed,
    )

    # Tolerances: the weights are the start plus lr times every step's gradient; the sizes of those terms, taken at
    # the first and at the last weights (4 steps move them little), bound what rounding can leave.
    def step_sizes(p):
        steps = [mlp_gradient_sizes(p, x[batch], y[batch], "tanh", "softmax_cross_entropy") for batch in batches]
        return max(np.abs(outputs).max() for outputs, _ in steps), {n: sum(s[n] for _, s in steps) for n in params}

    (first_outputs, first), (last_outputs, last) = step_sizes(params), step_sizes(expected)
    assert_close(losses, expected_losses, scale=max(first_outputs, last_outputs))
    for name in ("W1", "b1", "W2", "b2"):
        scale = np.abs(params[name]) + learning_rate * np.maximum(first[name], last[name])
        assert_close(trained[name], expected[name], scale=scale, err_msg=name)


def test_train_mlp_solves_xor():
    x, y = GATE_INPUTS, np.array([0, 1, 1, 0])
    params, losses = scratch.train_mlp(
        scratch.init_mlp(2, 8, 2, rng=0), x, y, steps=500, learning_rate=0.5, activation="tanh"
    )
    logits, _ = scratch.mlp_forward(params, x, "tanh")
    np.testing.assert_array_equal(logits.argmax(-1), y)
    assert losses[-1] < 0.05 < 0.5 < losses[0]  # from about ln 2 to near 0


# ---------------------------------------------------------------------------------------------------------------------
# Optimizers against optax

OPT_STEPS = 6
OPT_PAD = 48


def optimizers(h, library):
    """The five optimizers with hyperparameters ``h``: optax's (``library=True``) or the scratch ones."""
    if library:
        return {
            "sgd": optax.sgd(h["lr"]),
            "momentum": optax.sgd(h["lr"], momentum=h["beta"]),
            "rmsprop": optax.rmsprop(h["lr"], decay=h["decay"], eps=h["eps"]),
            "rmsprop_eps_outside": optax.rmsprop(h["lr"], decay=h["decay"], eps=h["eps"], eps_in_sqrt=False),
            "adam": optax.adam(h["lr"], b1=h["b1"], b2=h["b2"], eps=h["eps"]),
        }
    return {
        "sgd": scratch.sgd(h["lr"]),
        "momentum": scratch.momentum(h["lr"], h["beta"]),
        "rmsprop": scratch.rmsprop(h["lr"], h["decay"], h["eps"]),
        "rmsprop_eps_outside": scratch.rmsprop(h["lr"], h["decay"], h["eps"], eps_in_sqrt=False),
        "adam": scratch.adam(h["lr"], h["b1"], h["b2"], h["eps"]),
    }


def optax_run(tx, params, grads):
    def step(carry, g):
        p, state = carry
        updates, state = tx.update(g, state, p)
        return (optax.apply_updates(p, updates), state), updates

    (params, _), updates = jax.lax.scan(step, (params, tx.init(params)), grads)
    return updates, params


@jax.jit
def library_optimizers(params, grads, hyper):
    """Each optax optimizer's updates at every step [OPT_STEPS, OPT_PAD] and its final params, on one flat vector,
    the hyperparameters as arrays: one program for all five and every value. Also the updates for |grads|: the
    size the updates would have if no gradient ever changed sign (momentum and Adam's first moment add up signed
    gradients, which can cancel to near 0; their rounding error is relative to these sizes)."""
    return {
        name: (*optax_run(tx, params, grads), optax_run(tx, params, jnp.abs(grads))[0])
        for name, tx in optimizers(hyper, library=True).items()
    }


def dyadic(lo: float, hi: float):
    """k / 2^16 in [lo, hi]: b and 1 - b are both exact in float32. optax forms 1 - b from a float32 array here
    and from a Python float (rounded once) in normal use; on these values the two agree, as the scratch version
    (which follows normal use) must agree with both."""
    return st.integers(math.ceil(lo * 2**16), math.floor(hi * 2**16)).map(lambda k: k / 2**16)


tree_shapes = st.dictionaries(
    st.sampled_from(["w", "b", "kernel"]), hnp.array_shapes(min_dims=0, max_dims=2, max_side=4), min_size=1
)


@settings(max_examples=15, deadline=None)
@given(
    data=st.data(),
    shapes=tree_shapes,
    hyper=st.fixed_dictionaries(
        {
            "lr": floats(2**-13, 1.0),
            "beta": dyadic(0.0, 0.99),
            "decay": dyadic(0.5, 0.999),
            "b1": dyadic(0.5, 0.99),
            "b2": dyadic(0.9, 0.9999),
            "eps": st.sampled_from([1e-8, 1e-6, 1e-3]),
        }
    ),
)
def test_optimizers_match_optax_step_by_step(data, shapes, hyper):
    params = {name: data.draw(arrays(shape), label=name) for name, shape in shapes.items()}
    grads = [{name: data.draw(arrays(shape, -10, 10)) for name, shape in shapes.items()} for _ in range(OPT_STEPS)]
    names = sorted(params)
    sizes = [params[n].size for n in names]

    def flat(tree):  # optax runs on one padded vector: these optimizers act entry by entry
        v = np.zeros(OPT_PAD, np.float32)
        v[: sum(sizes)] = np.concatenate([np.ravel(tree[n]) for n in names])
        return v

    def unflat(v):
        parts = np.split(np.asarray(v)[: sum(sizes)], np.cumsum(sizes)[:-1])
        return {n: p.reshape(params[n].shape) for n, p in zip(names, parts)}

    h = {k: np.float32(v) for k, v in hyper.items()}
    expected = jax.device_get(library_optimizers(flat(params), np.stack([flat(g) for g in grads]), h))
    for name, opt in optimizers(hyper, library=False).items():
        p, state = params, opt.init(params)
        for t, g in enumerate(grads):
            updates, state = opt.update(g, state)
            p = scratch.apply_updates(p, updates)
            expected_updates, sizes_without_cancelling = unflat(expected[name][0][t]), unflat(expected[name][2][t])
            rtol = RTOL
            if name == "adam":
                # 1 - b2**t in float32: NumPy's and XLA's pow may differ by an ulp of b2**t (6e-8), which is
                # 6e-8 / (1 - b2**t) of the correction: 2e-4 at b2 = 0.99989, t = 3 (a case hypothesis found).
                # A missing or shifted correction moves the update by a factor of 1.4 or more.
                rtol = max(RTOL, 2 * 2.0**-24 / (1 - float(h["b2"]) ** (t + 1)))
            for leaf in names:
                message = f"{name}, update {t + 1}, {leaf}"
                assert_close(
                    updates[leaf],
                    expected_updates[leaf],
                    rtol=rtol,
                    err_msg=message,
                    scale=sizes_without_cancelling[leaf],
                )
        expected_params = unflat(expected[name][1])
        # the params are sums of the initial values and every update, which may cancel: scale is their sizes
        scale = np.abs(flat(params)).max() + np.abs(expected[name][0]).max(axis=1).sum()
        for leaf in names:
            message = f"{name}, params after {OPT_STEPS} steps, {leaf}"
            assert_close(p[leaf], expected_params[leaf], err_msg=message, scale=scale)


def test_momentum_is_undamped_like_optax():
    # 200 steps of a constant gradient 1 at lr 0.1: the velocity after t steps is (1 - 0.9^t) / 0.1, so undamped
    # momentum moves 191 in all; plain SGD moves 20, a damped v <- 0.9 v + 0.1 g only 19.1.
    opt = scratch.momentum(0.1, 0.9)
    p, s = np.zeros((), np.float32), opt.init(np.zeros((), np.float32))
    for _ in range(200):
        u, s = opt.update(np.ones((), np.float32), s)
        p = scratch.apply_updates(p, u)
    assert p == pytest.approx(-0.1 * sum((1 - 0.9**t) / 0.1 for t in range(1, 201)), rel=1e-4)


# ---------------------------------------------------------------------------------------------------------------------
# Dropout


@jax.jit
def library_dropout(x, key, rate, dout):
    """dlfund.models.Dropout in training mode, and the gradient of sum(dout * out) w.r.t. x."""
    layer = dlfund.models.Dropout(rate)
    out, vjp = jax.vjp(lambda x: layer(x, rngs=key), x)
    return out, vjp(dout)[0]


@settings(max_examples=10, deadline=None)
@given(data=st.data(), rate=st.floats(0.0, 0.9), seed=st.integers(0, 2**32 - 1))
def test_dropout_with_a_jax_key_matches_dlfund_dropout_and_its_gradient(data, rate, seed):
    shape = (2, 3, 5)  # one shape: the library's layer and the mask draw compile once per shape
    x = data.draw(arrays(shape), label="x")
    dout = data.draw(arrays(shape), label="dout")
    key = jax.random.key(seed)
    expected_out, expected_dx = jax.device_get(library_dropout(x, key, np.float32(rate), dout))
    out, mask = scratch.dropout_forward(x, rate, key)
    assert_close(out, expected_out)
    assert_close(scratch.dropout_backward(dout, mask, rate), expected_dx)
    # the mask is the library's: kept units where x != 0 are exactly the nonzero outputs
    np.testing.assert_array_equal((expected_out != 0), mask & (x != 0))


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.8])
def test_inverted_dropout_keeps_the_expected_value(rate):
    x = np.full(200_000, 3.0, np.float32)
    out, mask = scratch.dropout_forward(x, rate, np.random.default_rng(0))
    keep = np.float32(1) - np.float32(rate)  # in float32, as the library
    assert set(np.unique(out)) <= {0.0, np.float32(3.0) / keep}  # kept units scaled by 1/(1-p), the others 0
    standard_error = 3.0 * np.sqrt(rate / keep / x.size)  # of the mean of Bernoulli(keep) * 3 / keep
    assert abs(out.mean() - 3.0) < 5 * standard_error
    assert abs(mask.mean() - keep) < 5 * np.sqrt(rate * keep / x.size)
    dx = scratch.dropout_backward(np.ones_like(x), mask, rate)
    np.testing.assert_allclose(dx, mask / keep, rtol=1e-6)


def test_dropout_rate_zero_and_evaluation_are_the_identity():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(scratch.dropout_forward(x, 0.0, np.random.default_rng(0))[0], x)
    out, mask = scratch.dropout_forward(x, 0.5, training=False)
    np.testing.assert_array_equal(out, x)
    assert mask.all()


# ---------------------------------------------------------------------------------------------------------------------
# Batch norm against flax.nnx.BatchNorm

BN_MOMENTUM = 0.9  # not flax's default 0.99, so a swapped momentum / (1 - momentum) is seen


def library_batch_norm_layer(scale, bias, mean, var, **options):
    layer = nnx.BatchNorm(scale.shape[0], momentum=BN_MOMENTUM, rngs=nnx.Rngs(0), **options)  # epsilon 1e-5
    layer.scale[...], layer.bias[...], layer.mean[...], layer.var[...] = scale, bias, mean, var
    return layer


@jax.jit
def library_batch_norm(x, scale, bias, mean, var, dout):
    """nnx.BatchNorm in training mode (output, running statistics after the call, jax.grad of sum(dout * out)
    w.r.t. x, scale and bias) and in evaluation mode (output with the given running statistics).

    Both of flax's variance forms, in one program: the default one-pass E[x^2] - E[x]^2 (clipped at 0), and
    ``use_fast_variance=False``, the two-pass mean((x - mean)^2) of the scratch version; they differ only where
    the variance is near 0."""

    def forward(x, scale, bias, fast):
        layer = library_batch_norm_layer(scale, bias, mean, var, use_fast_variance=fast)
        out = layer(x)
        return jnp.sum(dout * out), (out, layer.mean[...], layer.var[...])

    results = {}
    for fast in (True, False):
        (_, (out, new_mean, new_var)), grads = jax.value_and_grad(forward, argnums=(0, 1, 2), has_aux=True)(
            x, scale, bias, fast
        )
        results[fast] = out, new_mean, new_var, grads
    evaluation = library_batch_norm_layer(scale, bias, mean, var, use_running_average=True)(x)
    return results, evaluation


def check_batch_norm(x, gamma, beta, running_mean, running_var, dout, use_fast_variance=True):
    results, eval_ref = jax.device_get(library_batch_norm(x, gamma, beta, running_mean, running_var, dout))
    out_ref, mean_ref, var_ref, (dx_ref, dgamma_ref, dbeta_ref) = results[use_fast_variance]
    # Sizes of the terms that may cancel (computed here in float64, only to set the tolerances): e.g. dgamma =
    # sum(dout * xhat) is 0 up to rounding when dout is constant, since xhat sums to 0; so is dx, whose terms are
    # inv_std * gamma * dout.
    axes = tuple(range(x.ndim - 1))
    xhat = (x - x.mean(axis=axes)) / np.sqrt(x.var(axis=axes, dtype=np.float64) + 1e-5)
    inv_std = 1 / np.sqrt(x.var(axis=axes, dtype=np.float64) + 1e-5)
    out, cache = scratch.batch_norm_forward(x, gamma, beta)
    assert_close(out, out_ref, scale=np.abs(gamma).max() * np.abs(xhat).max() + np.abs(beta).max())
    new_mean, new_var = scratch.update_running_stats(running_mean, running_var, cache.mean, cache.var, BN_MOMENTUM)
    assert_close(new_mean, mean_ref)
    assert_close(new_var, var_ref)
    dx, dgamma, dbeta = scratch.batch_norm_backward(dout, cache)
    assert_close(dx, dx_ref, scale=(inv_std * np.abs(gamma)).max() * np.abs(dout).max())
    assert_close(dgamma, dgamma_ref, scale=np.abs(dout).max() * np.abs(xhat).max())
    assert_close(dbeta, dbeta_ref, scale=np.abs(dout).max())
    evaluation = scratch.batch_norm_inference(x, gamma, beta, running_mean, running_var)
    terms = np.abs(gamma * (x - running_mean) / np.sqrt(running_var + 1e-5)).max() + np.abs(beta).max()
    assert_close(evaluation, eval_ref, scale=terms)


@settings(max_examples=12, deadline=None)
@given(
    data=st.data(),
    shape=st.sampled_from([(6, 3), (2, 3, 2, 4)]),
    seed=st.integers(0, 2**32 - 1),
    spread=st.floats(0.1, 10.0),
    offset=st.floats(-2.0, 2.0),
)
def test_batch_norm_matches_flax_forward_running_stats_and_jax_grad(data, shape, seed, spread, offset):
    # x = spread * (offset + N(0, 1)), drawn from a seed: drawn entry by entry, hypothesis shrinks towards constant
    # features (variance 0, tested below). A mean within 2 spreads keeps flax's one-pass variance E[x^2] - E[x]^2
    # accurate to float32 rounding.
    x = (spread * (offset + np.random.default_rng(seed).standard_normal(shape))).astype(np.float32)
    features = shape[-1]
    check_batch_norm(
        x,
        data.draw(arrays((features,)), label="gamma"),
        data.draw(arrays((features,)), label="beta"),
        data.draw(arrays((features,)), label="running_mean"),
        data.draw(arrays((features,), 0.125, 4.0), label="running_var"),
        data.draw(arrays(shape), label="dout"),
    )


def test_batch_norm_of_a_constant_feature():
    # Variance 0: the feature normalizes to 0 (out = beta), and eps alone keeps the division finite. Against
    # flax's two-pass variance: its default one-pass E[x^2] - E[x]^2 leaves a rounding residue of ~1e-8 here, next
    # to eps = 1e-5, which changes 1/sqrt(var + eps) by 0.1%.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 3)).astype(np.float32)
    x[:, 1] = 0.75
    ones = np.ones(3, np.float32)
    dout = rng.standard_normal((6, 3)).astype(np.float32)
    check_batch_norm(x, ones * 1.5, ones * 0.25, ones * 0.5, ones * 2.0, dout, use_fast_variance=False)
    out, _ = scratch.batch_norm_forward(x, ones * 1.5, ones * 0.25)
    np.testing.assert_allclose(out[:, 1], 0.25)


def test_batch_norm_gradient_sums():
    # the two batch terms of dx make it orthogonal to 1 and to xhat, for each feature (exactly so as eps -> 0:
    # with eps, xhat's variance is var / (var + eps) and sum(dx * xhat) = eps / (var + eps) * sum(dxhat * xhat))
    rng = np.random.default_rng(1)
    x, dout = rng.standard_normal((2, 16, 5)).astype(np.float32)
    gamma, beta = rng.standard_normal((2, 5)).astype(np.float32)
    _, cache = scratch.batch_norm_forward(x, gamma, beta, eps=1e-12)
    dx, _, _ = scratch.batch_norm_backward(dout, cache)
    np.testing.assert_allclose(dx.sum(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose((dx * cache.xhat).sum(axis=0), 0, atol=1e-5)


def test_running_stats_default_momentum_is_flax_default():
    layer = nnx.BatchNorm(3, rngs=nnx.Rngs(0))
    mean, var = scratch.update_running_stats(np.zeros(3), np.ones(3), np.full(3, 2.0), np.full(3, 5.0))
    np.testing.assert_allclose(mean, (1 - layer.momentum) * 2.0, rtol=1e-6)
    np.testing.assert_allclose(var, layer.momentum + (1 - layer.momentum) * 5.0, rtol=1e-6)


# ---------------------------------------------------------------------------------------------------------------------
# Bad input and the figures


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: scratch.dense_forward(np.ones((4, 3)), np.ones((5, 2)), np.ones(2)),
            r"3 features.*\(4, 3\).*\(5, 2\)",
        ),
        (lambda: scratch.dense_forward(np.ones((4, 3)), np.ones((3, 2)), np.ones(3)), r"b must have shape \(2,\)"),
        (lambda: scratch.dense_backward(np.ones((4, 3)), np.ones((4, 3)), np.ones((3, 2))), r"dz.*\(4, 2\)"),
        (lambda: scratch.neuron(np.ones((2, 3)), np.ones(2), 0.0), r"3 features.*w has 2"),
        (lambda: scratch.activate(np.ones(2), "rleu"), "unknown activation 'rleu'.*relu"),
        (lambda: scratch.softmax_cross_entropy(np.ones((2, 3)), np.array([0, 3])), r"labels must be in \[0, 3\)"),
        (lambda: scratch.softmax_cross_entropy(np.ones((2, 3)), np.array([0.0, 1.0])), "labels must be integers"),
        (lambda: scratch.mse(np.ones((2, 3)), np.ones((2, 2))), r"\(2, 3\) and targets \(2, 2\)"),
        (lambda: scratch.perceptron_train(GATE_INPUTS, np.array([0, 1, 2, 0])), r"labels in \{0, 1\}"),
        (lambda: scratch.perceptron_train(GATE_INPUTS, np.zeros(4), epochs=2, order=np.zeros((2, 4))), "permutation"),
        (lambda: scratch.dropout_forward(np.ones(3), 1.0, np.random.default_rng(0)), r"rate.*\[0, 1\)"),
        (lambda: scratch.dropout_forward(np.ones(3), 0.5), "needs rng"),
        (lambda: scratch.batch_norm_forward(np.ones((4, 3)), np.ones(2), np.ones(3)), r"gamma must have shape \(3,\)"),
        (
            lambda: scratch.batch_norm_backward(
                np.ones((4, 2)), scratch.batch_norm_forward(np.ones((4, 3)), np.ones(3), np.ones(3))[1]
            ),
            r"\(4, 3\)",
        ),
        (lambda: scratch.adam(-1e-3), "learning_rate must be a positive number"),
        (lambda: scratch.momentum(0.1, beta=1.0), r"beta must be a probability"),
        (lambda: scratch.mlp_forward({"W1": np.ones((2, 3))}, np.ones((1, 2))), "missing b1, W2, b2"),
        (
            lambda: scratch.train_mlp(
                scratch.init_mlp(2, 3, 2), np.ones((4, 2)), np.zeros(3, int), steps=1, learning_rate=0.1
            ),
            "4 examples but targets has 3",
        ),
        (lambda: scratch.perceptron_update(np.zeros(2), 0.0, np.ones(2), 2), "y must be 0 or 1"),
        (lambda: scratch.perceptron_update(np.zeros(2), 0.0, np.ones(2), 1, 0.0), "learning_rate must be a positive"),
        (lambda: scratch.perceptron_update(np.zeros(3), 0.0, np.ones(2), 1), r"one weight per feature.*\(2,\)"),
        (lambda: scratch.perceptron_train(np.ones((0, 2)), np.zeros(0, int)), "at least one example"),
        (lambda: scratch.mse(np.ones((0, 2)), np.ones((0, 2))), "at least one example"),
        (lambda: scratch.softmax_cross_entropy(np.ones((0, 3)), np.zeros(0, int)), "at least one example"),
        (lambda: scratch.batch_norm_forward(np.ones((0, 3)), np.ones(3), np.ones(3)), "at least one example"),
        (lambda: scratch.update_running_stats(np.zeros(2), -np.ones(2), np.zeros(2), np.ones(2)), "running_var must"),
        (lambda: scratch.update_running_stats(np.zeros(2), np.ones(2), np.zeros(2), -np.ones(2)), "batch_var must"),
        (
            lambda: scratch.adam(0.1).update(np.ones(3), scratch.adam(0.1).init(np.ones(1))),
            r"grads leaf 0 has shape \(3,\) but the Adam state has \(1,\)",
        ),
        (
            lambda: scratch.momentum(0.1).update({"w": np.ones((2, 2))}, scratch.momentum(0.1).init({"w": np.ones(2)})),
            r"shape \(2, 2\) but the momentum state has \(2,\)",
        ),
        (
            lambda: scratch.rmsprop(0.1).update([np.ones(2)], scratch.rmsprop(0.1).init({"w": np.ones(2)})),
            "grads must have the structure of the RMSprop state",
        ),
        (lambda: scratch.apply_updates(np.ones(1), np.ones(4)), r"updates leaf 0 has shape \(4,\) but params"),
        (lambda: scratch.sgd(np.ones(2)), "learning_rate must be a positive number"),
        (lambda: scratch.adam(0.1, b1=True), "b1 must be a probability"),
    ],
)
def test_bad_input_says_what_is_wrong(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_hyperparameters_may_be_numpy_or_jax_scalars():
    # A learning rate read from a config or computed by a schedule is often np.float32(0.1), np.int64(1) or a 0-d
    # array; each must give the same update as the Python number.
    grads = np.array([0.5, -2.0], np.float32)
    expected = scratch.adam(0.1, b1=0.9).update(grads, scratch.adam(0.1).init(grads))[0]
    for lr, b1 in ((np.float32(0.1), np.float64(0.9)), (jnp.asarray(0.1), np.asarray(0.9)), (0.1, jnp.float32(0.9))):
        opt = scratch.adam(lr, b1=b1)
        np.testing.assert_allclose(opt.update(grads, opt.init(grads))[0], expected, rtol=1e-6)
    w, b, mistake = scratch.perceptron_update(np.zeros(2, np.float32), 0.0, np.ones(2, np.float32), np.int64(1))
    assert mistake is False and np.all(w == 0)  # step(0) = 1: already right
    w, b, mistake = scratch.perceptron_update(np.zeros(2, np.float32), 0.0, np.ones(2, np.float32), 0, np.int32(2))
    assert mistake is True and np.all(w == -2) and b == -2


def test_figures_draw_the_library_activations_and_the_regions():
    fig = scratch.activations_figure(("sigmoid", "relu"))
    values, derivatives = fig.axes
    for line, name in zip(values.get_lines(), ("sigmoid", "relu")):
        assert line.get_label() == name
        every_8th = slice(0, 8 * PAD, 8)  # 64 of the 501 points, the compiled oracle's shape
        expected = library_activations(np.asarray(line.get_xdata()[every_8th], np.float32))[name][0]
        assert_close(line.get_ydata()[every_8th], expected)
    assert [line.get_label() for line in derivatives.get_lines() if not line.get_label().startswith("_")] == [
        "sigmoid",
        "relu",
    ]
    _, (ax,) = scratch.plots.figure(1)
    predict = lambda p: (p[:, 0] > 0.5).astype(int)
    scratch.plot_decision_regions(predict, GATE_INPUTS, [0, 0, 1, 1], ax=ax, title="t", resolution=20)
    assert ax.get_title() == "t" and ax.collections  # the shaded regions and the examples
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        scratch.plot_decision_regions(lambda p: p[:, 0], np.ones((3, 3)), [0, 1, 0], ax=ax)
