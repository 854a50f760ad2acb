import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlfund import activations

X = jnp.linspace(-4.0, 4.0, 41).reshape(41, 1) * jnp.array([[1.0, 0.5, -2.0]])

# The textbook definitions in float64 NumPy: independent of the jax.nn functions dlfund registers.
REFERENCES = {
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "tanh": lambda x: (np.exp(x) - np.exp(-x)) / (np.exp(x) + np.exp(-x)),
    "relu": lambda x: np.where(x > 0, x, 0.0),
    "softmax": lambda x: np.exp(x) / np.exp(x).sum(-1, keepdims=True),
    "step": lambda x: (x >= 0).astype(np.float64),
    "leaky_relu": lambda x: np.where(x > 0, x, 0.01 * x),
    "elu": lambda x: np.where(x > 0, x, np.exp(x) - 1),
    "gelu": lambda x: 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2))),  # exact: x * Phi(x)
    "silu": lambda x: x / (1 + np.exp(-x)),
    "identity": lambda x: x,
}


def test_every_activation_has_a_reference():
    assert set(activations.ACTIVATIONS.names()) == set(REFERENCES)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_activation_matches_its_definition(name):
    got = activations.get(name)(X)
    expected = REFERENCES[name](np.asarray(X, np.float64))
    np.testing.assert_allclose(np.asarray(got, np.float64), expected, rtol=1e-5, atol=1e-6)
    assert got.shape == X.shape and got.dtype == X.dtype


@pytest.mark.parametrize(
    ("name", "x", "expected"),
    [
        ("sigmoid", [-math.log(3), 0.0, math.log(3)], [0.25, 0.5, 0.75]),
        ("tanh", [-math.log(2), 0.0, math.log(2)], [-0.6, 0.0, 0.6]),
        ("relu", [-1.0, 0.0, 2.0], [0.0, 0.0, 2.0]),
        ("step", [-1e-3, 0.0, 2.0], [0.0, 1.0, 1.0]),
        ("leaky_relu", [-2.0, 0.0, 3.0], [-0.02, 0.0, 3.0]),
        ("elu", [-math.log(2), 0.0, 2.0], [-0.5, 0.0, 2.0]),
        ("gelu", [-1.0, 0.0, 1.0], [-0.15865525393145707, 0.0, 0.8413447460685429]),  # the tanh form: 0.84119
        ("silu", [0.0, math.log(3)], [0.0, 0.75 * math.log(3)]),
        ("identity", [-1.5, 2.0], [-1.5, 2.0]),
    ],
)
def test_activation_known_values(name, x, expected):
    np.testing.assert_allclose(activations.get(name)(jnp.array(x, jnp.float32)), expected, rtol=1e-6, atol=1e-7)


def test_softmax_known_values():
    got = activations.get("softmax")(jnp.log(jnp.array([[1.0, 2.0, 5.0], [1.0, 1.0, 2.0]])))
    np.testing.assert_allclose(got, [[1 / 8, 2 / 8, 5 / 8], [0.25, 0.25, 0.5]], rtol=1e-6)


def test_softmax_rows_sum_to_one():
    np.testing.assert_allclose(activations.get("softmax")(X).sum(-1), 1.0, rtol=1e-6)


def test_step_has_zero_gradient():
    # Why the perceptron needs its own rule: no gradient flows through the step.
    grad = jax.grad(lambda x: activations.step(x).sum())(jnp.array([-1.0, 0.5, 2.0]))
    np.testing.assert_array_equal(grad, 0.0)


def test_callable_passes_through_and_names_are_case_insensitive():
    fn = lambda x: x * 2
    assert activations.get(fn) is fn
    assert activations.get("ReLU") is activations.get("relu")


def test_unknown_activation_lists_known_names():
    with pytest.raises(ValueError) as info:
        activations.get("rleu")
    message = str(info.value)
    assert "rleu" in message and "relu" in message and "sigmoid" in message and "Did you mean" in message
