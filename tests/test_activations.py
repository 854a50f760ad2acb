import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlfund import activations

X = jnp.linspace(-4.0, 4.0, 41).reshape(41, 1) * jnp.array([[1.0, 0.5, -2.0]])

REFERENCES = {
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "softmax": lambda x: jax.nn.softmax(x, axis=-1),
    "step": lambda x: jnp.heaviside(x, 1.0),
    "leaky_relu": lambda x: jax.nn.leaky_relu(x, negative_slope=0.01),
    "elu": jax.nn.elu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "silu": jax.nn.silu,
    "identity": lambda x: x,
}


def test_every_activation_has_a_reference():
    assert set(activations.ACTIVATIONS.names()) == set(REFERENCES)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_activation_matches_jax_reference(name):
    got = activations.get(name)(X)
    np.testing.assert_allclose(got, REFERENCES[name](X), rtol=1e-6, atol=1e-7)
    assert got.shape == X.shape and got.dtype == X.dtype


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
