import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dlfund import regularizers
from dlfund.models import MLP


@pytest.fixture
def params():
    model = MLP(4, (8,), 3, batch_norm=True, rngs=nnx.Rngs(0))
    return nnx.state(model, nnx.Param)


def test_l2_penalizes_kernels_only(params):
    kernels = [p for p in jax.tree.leaves(params) if p.ndim >= 2]
    assert len(kernels) == 2 and len(jax.tree.leaves(params)) > 2  # biases and BN scales exist
    expected = 1e-3 * sum(float(jnp.sum(k**2)) for k in kernels)
    assert float(regularizers.get("l2:1e-3")(params)) == pytest.approx(expected, rel=1e-6)


def test_l1_and_all_parameter_mask(params):
    expected = 0.5 * sum(float(jnp.sum(jnp.abs(p))) for p in jax.tree.leaves(params))
    penalty = regularizers.L1(0.5, mask=regularizers.all_parameters)
    assert float(penalty(params)) == pytest.approx(expected, rel=1e-6)


def test_l2_gradient_is_2_lambda_w(params):
    grads = jax.grad(regularizers.L2(0.1))(params)
    for g, p in zip(jax.tree.leaves(grads), jax.tree.leaves(params)):
        np.testing.assert_allclose(g, 0.2 * p if p.ndim >= 2 else 0.0, rtol=1e-6)


def test_callable_penalty_and_total(params):
    custom = regularizers.get(lambda p: 3.0)
    total = regularizers.total_penalty((custom, regularizers.get("l2:0")), params)
    assert float(total) == pytest.approx(3.0)
    assert float(regularizers.total_penalty((), params)) == 0.0


def test_bad_regularizers():
    with pytest.raises(ValueError, match="Known regularizers: l1, l2"):
        regularizers.get("l3:0.1")
    with pytest.raises(ValueError, match=">= 0"):
        regularizers.get("l2:-1")
    with pytest.raises(ValueError, match="number"):
        regularizers.get("l2:abc")
