"""dlfund.models.conv_ops against the operations it replaces: lax.conv_general_dilated and Flax's pools."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import example, given, settings
from hypothesis import strategies as st

from dlfund.models import conv_ops

_DIMS = ("NHWC", "HWIO", "NHWC")


def _conv_grads(conv, x, w, strides, padding, **kwargs):
    dims = jax.lax.conv_dimension_numbers(x.shape, w.shape, _DIMS)

    def loss(x, w):  # a nonlinear loss, so the cotangent differs per output position
        return jnp.sin(conv(x, w, strides, padding, dimension_numbers=dims, **kwargs)).sum()

    return jax.jit(jax.value_and_grad(loss, (0, 1)))(x, w)


@settings(deadline=None, max_examples=25)
# A padded input smaller than the kernel (an empty output): the tap slices once failed to reshape here.
@example(size=(3, 3), channels=1, out_channels=1, kernel=(5, 5), strides=(2, 2), padding=((1, 0), (2, 1)), seed=0)
@example(size=(10, 10), channels=7, out_channels=1, kernel=(5, 5), strides=(1, 1), padding="SAME", seed=1)
@given(
    size=st.tuples(st.integers(3, 11), st.integers(3, 11)),
    channels=st.sampled_from([1, 3, 7, 8, 16]),  # both sides of IM2COL_MAX_CHANNELS
    out_channels=st.integers(1, 6),
    kernel=st.sampled_from([(1, 1), (3, 3), (2, 3), (5, 5)]),
    strides=st.sampled_from([(1, 1), (2, 2), (1, 2)]),
    padding=st.sampled_from(["SAME", "VALID", ((1, 0), (2, 1))]),
    seed=st.integers(0, 2**16),
)
def test_conv_value_and_gradients_equal_lax(size, channels, out_channels, kernel, strides, padding, seed):
    if padding == "VALID" and (kernel[0] > size[0] or kernel[1] > size[1]):
        return
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(2, *size, channels)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(*kernel, channels, out_channels)), jnp.float32)
    expected_loss, (expected_dx, expected_dw) = _conv_grads(jax.lax.conv_general_dilated, x, w, strides, padding)
    loss, (dx, dw) = _conv_grads(conv_ops.conv_general_dilated, x, w, strides, padding)
    # A sum of sines of sums of kh*kw*C products, each summed in another order: float32 rounding scales with the
    # products' magnitudes (one CI draw differed by 2.9e-5 at 10x10x7, 5x5 kernel), a missing or wrong tap by O(1).
    dims = jax.lax.conv_dimension_numbers(x.shape, w.shape, _DIMS)
    magnitude = float(
        jax.lax.conv_general_dilated(jnp.abs(x), jnp.abs(w), strides, padding, dimension_numbers=dims).sum()
    )
    np.testing.assert_allclose(loss, expected_loss, rtol=0, atol=2**-23 * magnitude + 1e-6)
    # Sums of the same products in another order (on CPU the forward pass for < 8 input channels and the kernel
    # gradient are matmuls): equal to float32 rounding relative to the largest entry.
    for got, expected in ((dx, expected_dx), (dw, expected_dw)):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=2e-5 * float(np.abs(expected).max()))


@pytest.mark.parametrize("channels", [1, 16])
def test_kernel_gradient_is_matmuls_on_cpu_and_batches_under_vmap(channels):
    """On CPU the kernel gradient is computed without a convolution (the slow XLA:CPU path), and so is the forward
    pass below 8 input channels; vmap (sweeps) works."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(3, 2, 6, 6, channels)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 3, channels, 4)), jnp.float32)
    dims = jax.lax.conv_dimension_numbers(x.shape[1:], w.shape[1:], _DIMS)

    def kernel_grad(conv):
        def one(x, w):
            return jax.grad(lambda w: jnp.sin(conv(x, w, (1, 1), "SAME", dimension_numbers=dims)).sum())(w)

        return jax.jit(jax.vmap(one))

    ours, reference = kernel_grad(conv_ops.conv_general_dilated), kernel_grad(jax.lax.conv_general_dilated)
    np.testing.assert_allclose(ours(x, w), reference(x, w), rtol=1e-5, atol=1e-4)
    hlo = ours.lower(x, w).compile().as_text()
    forward_convolutions = 0 if channels < conv_ops.IM2COL_MAX_CHANNELS else 1
    assert hlo.count("convolution(") == forward_convolutions  # the reference has two: forward and kernel gradient
    assert reference.lower(x, w).compile().as_text().count("convolution(") == 2


@pytest.mark.parametrize(
    "kwargs",
    [{"rhs_dilation": (2, 2)}, {"feature_group_count": 2}, {"lhs_dilation": (2, 1)}],
    ids=["dilated", "grouped", "input-dilated"],
)
def test_other_convolutions_are_passed_to_lax(kwargs):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(2, 7, 7, 4)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 4 // kwargs.get("feature_group_count", 1), 6)), jnp.float32)
    padding = ((1, 1), (1, 1))  # lax refuses string padding with lhs_dilation
    expected = _conv_grads(jax.lax.conv_general_dilated, x, w, (1, 1), padding, **kwargs)
    got = _conv_grads(conv_ops.conv_general_dilated, x, w, (1, 1), padding, **kwargs)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(a, b)


def test_nnx_conv_with_it_keeps_its_parameters_and_outputs():
    """A drop-in for nnx.Conv: same parameter tree and initial values (checkpoints and pretrained weights load)."""
    ours = nnx.Conv(3, 5, (3, 3), conv_general_dilated=conv_ops.conv_general_dilated, rngs=nnx.Rngs(0))
    flax = nnx.Conv(3, 5, (3, 3), rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 8, 8, 3)), jnp.float32)
    assert jax.tree.structure(nnx.state(ours)) == jax.tree.structure(nnx.state(flax))
    np.testing.assert_allclose(ours(x), flax(x), rtol=1e-5, atol=1e-6)


_FLAX_POOLS = {"max": nnx.max_pool, "avg": nnx.avg_pool}


@settings(deadline=None, max_examples=30)
@given(
    size=st.tuples(st.integers(2, 9), st.integers(2, 9)),
    window=st.integers(1, 3),
    kind=st.sampled_from(["max", "avg"]),
    ties=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_pool_values_and_gradients_equal_flax(size, window, kind, ties, seed):
    """Ragged sizes drop the border like VALID pooling; with ties (small integers) the gradient goes to each
    window's first maximum, as select_and_scatter does."""
    if window > min(size):
        return
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 3, size=(2, *size, 3)) if ties else rng.normal(size=(2, *size, 3))
    x = jnp.asarray(x, jnp.float32)
    cotangent = jnp.asarray(rng.normal(size=(2, size[0] // window, size[1] // window, 3)), jnp.float32)

    def value_and_grad(pool):
        out, vjp = jax.vjp(pool, x)
        return out, vjp(cotangent)[0]

    flax_out, flax_grad = value_and_grad(lambda x: _FLAX_POOLS[kind](x, (window, window), strides=(window, window)))
    out, grad = jax.jit(lambda: value_and_grad(lambda x: conv_ops.pool(x, window, kind)))()
    np.testing.assert_allclose(out, flax_out, rtol=1e-6, atol=1e-7)  # an average's summation order
    np.testing.assert_allclose(grad, flax_grad, rtol=1e-6, atol=1e-7)


def test_max_pool_propagates_nan_like_flax():
    x = jnp.zeros((1, 4, 4, 1)).at[0, 1, 2, 0].set(jnp.nan).at[0, 3, 0, 0].set(5.0)
    np.testing.assert_array_equal(conv_ops.pool(x, 2), nnx.max_pool(x, (2, 2), strides=(2, 2)))
