"""Convolution and pooling that are faster on XLA:CPU, with Flax's values (to rounding) and parameters.

Three of a small CNN's operations are slow on XLA:CPU (2-core AMD EPYC, batch 128, 28x28 MNIST-shaped;
``benchmarks/bench_conv_parts.py`` measures them, ``benchmarks/README.md`` has the numbers):

* the gradient of ``lax.reduce_window`` max pooling (``nnx.max_pool``) is a ``select_and_scatter``, about 50 ms
  per step for a 2x2 pool over 28x28x32 maps, more than all the convolutions' forward passes together. A
  non-overlapping pool (window == stride, the usual 2x2/2) is elementwise instead: the forward pass keeps each
  window's maximum and where it was, the backward pass puts the gradient there: ~2 ms.
* the kernel gradient of a convolution (a convolution contracting over the batch) runs at 9-30 GFLOP/s, a fifth of
  the machine's matmul rate. Written as one matmul per kernel tap (the input window shifted by the tap, [N*H*W, C]
  transposed, times the output gradient [N*H*W, O]), or for few input channels as one im2col matmul, it is 2-4x
  faster.
* the forward pass of a convolution over few input channels (a first layer reading 1- or 3-channel images) is
  3x faster as one [N*H*W, C] x [C, O] matmul per tap than as XLA:CPU's convolution; over many channels it is
  3x slower, so only convolutions with fewer than ``IM2COL_MAX_CHANNELS`` input channels take it.

:func:`conv_general_dilated` is a drop-in ``conv_general_dilated`` for ``nnx.Conv`` (same signature, same kernel
and bias, so checkpoints and pretrained weights are unchanged): the input gradient is XLA's own; the kernel
gradient and a few-channel forward pass are rewritten, and only on CPU (``lax.platform_dependent``: on GPU/TPU
XLA's own run). :func:`pool` is a non-overlapping max or average pool with Flax's values and gradients
(a tie's gradient goes to the window's first maximum, as ``select_and_scatter`` does).

Numerics: the rewritten operations sum the same products in another order (differences of float32 rounding).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

#: Below this many input channels the kernel gradient is one im2col matmul (the [N*H*W, kh*kw*C] patch matrix is
#: small), and the forward pass one matmul per tap; from it on the kernel gradient is one matmul per tap, which
#: avoids writing the patch matrix, and the forward pass XLA's (measured: C=1 and C=3 faster with im2col, C=32 and
#: C=64 with taps; the forward by taps 3x faster at C=1, 3x slower at C=32).
IM2COL_MAX_CHANNELS = 8

_NHWC = lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1), out_spec=(0, 3, 1, 2))


def pool(x: jax.Array, window: int, kind: str = "max") -> jax.Array:
    """``kind`` ("max" or "avg") pooling of NHWC maps [B, H, W, C] over ``window`` x ``window`` windows with stride
    ``window``, VALID padding (a ragged border row/column is dropped, as ``nnx.max_pool`` does): [B, H//w, W//w, C].
    Values and gradients equal ``nnx.max_pool``'s / ``nnx.avg_pool``'s."""
    if kind == "max":
        return _max_pool(x, window)
    return _windows(x, window).mean(axis=(2, 4))


def _windows(x: jax.Array, window: int) -> jax.Array:
    """x [B, H, W, C] cut into non-overlapping windows, a ragged border dropped: [B, Ho, window, Wo, window, C]."""
    b, h, w, c = x.shape
    ho, wo = h // window, w // window
    return x[:, : ho * window, : wo * window].reshape(b, ho, window, wo, window, c)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_pool(x: jax.Array, window: int) -> jax.Array:
    return _max_and_position(x, window)[0]


def _max_and_position(x: jax.Array, window: int) -> tuple[jax.Array, jax.Array]:
    """Each window's maximum [B, Ho, Wo, C] and the position in the window (row-major) of its first occurrence.

    The gradient is routed by that stored position, not by comparing the input with the maximum again, as
    ``jnp.max``'s gradient does (dividing by the number of matches): with that, a batch-norm CNN compiled at XLA's
    optimization level 0 got NaN kernel gradients, most likely from a window where the comparison, made on an input
    recomputed with other rounding, matched nothing (0/0). A stored position cannot fail that way."""
    blocks = _windows(x, window)
    best = blocks[:, :, 0, :, 0, :]
    position = jnp.zeros(best.shape, jnp.int8 if window * window <= 127 else jnp.int32)
    for k in range(1, window * window):
        value = blocks[:, :, k // window, :, k % window, :]
        take = (value > best) | jnp.isnan(value)  # a NaN wins, as in lax.max
        best = jnp.where(take, value, best)
        position = jnp.where(take, jnp.asarray(k, position.dtype), position)
    return best, position


def _max_pool_forward(x, window):
    best, position = _max_and_position(x, window)
    return best, (position, x.shape)


def _max_pool_backward(window, residuals, g):
    position, (b, h, w, c) = residuals
    _, ho, wo, _ = g.shape
    zero = jnp.zeros_like(g)
    rows = [
        jnp.stack([jnp.where(position == i * window + j, g, zero) for j in range(window)], axis=3)
        for i in range(window)
    ]  # window x [B, Ho, Wo, window, C]
    dx = jnp.stack(rows, axis=2).reshape(b, ho * window, wo * window, c)
    return (jnp.pad(dx, ((0, 0), (0, h - ho * window), (0, w - wo * window), (0, 0))),)


_max_pool.defvjp(_max_pool_forward, _max_pool_backward)


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: lax.ConvDimensionNumbers | None = None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision: lax.PrecisionLike = None,
    preferred_element_type=None,
    out_sharding=None,
) -> jax.Array:
    """``lax.conv_general_dilated`` with a faster kernel gradient on CPU for the common case (2D NHWC input, HWIO
    kernel, no dilation, no groups); anything else is passed to ``lax.conv_general_dilated`` unchanged."""
    native = functools.partial(
        lax.conv_general_dilated,
        window_strides=window_strides,
        padding=padding,
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count,
        batch_group_count=batch_group_count,
        precision=precision,
        preferred_element_type=preferred_element_type,
    )
    plain = (
        lhs.ndim == 4
        and dimension_numbers == _NHWC
        and feature_group_count == 1
        and batch_group_count == 1
        and all(d == 1 for d in (lhs_dilation or (1, 1)))
        and all(d == 1 for d in (rhs_dilation or (1, 1)))
        and preferred_element_type is None
        and out_sharding is None
        and lhs.dtype == rhs.dtype
    )
    if not plain:
        return native(lhs, rhs, out_sharding=out_sharding) if out_sharding is not None else native(lhs, rhs)
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
    padded = [size + low + high for size, (low, high) in zip(lhs.shape[1:3], padding)]
    if any(size < k for size, k in zip(padded, rhs.shape[:2])):  # an empty output: no taps to take (lax's, empty)
        return native(lhs, rhs)
    return _conv(tuple(window_strides), tuple(tuple(p) for p in padding), precision)(lhs, rhs)


@functools.cache
def _conv(strides: tuple[int, int], padding: tuple[tuple[int, int], ...], precision):
    def native(lhs, rhs):
        return lax.conv_general_dilated(
            lhs, rhs, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=precision
        )

    def primal(lhs, rhs):
        if rhs.shape[2] >= IM2COL_MAX_CHANNELS:
            return native(lhs, rhs)

        def by_taps(lhs, rhs):
            return _forward_by_matmul(lhs, rhs, strides, padding, precision)

        return lax.platform_dependent(lhs, rhs, cpu=by_taps, default=native)

    @jax.custom_vjp
    def conv(lhs, rhs):
        return primal(lhs, rhs)

    def forward(lhs, rhs):
        return primal(lhs, rhs), (lhs, rhs)

    def backward(residuals, g):
        lhs, rhs = residuals
        _, lhs_vjp = jax.vjp(lambda a: native(a, rhs), lhs)
        (d_lhs,) = lhs_vjp(g)

        def xla_kernel_grad(lhs, g):
            _, rhs_vjp = jax.vjp(lambda w: native(lhs, w), rhs)
            return rhs_vjp(g)[0]

        def cpu_kernel_grad(lhs, g):
            return _kernel_grad_by_matmul(lhs, g, rhs.shape, strides, padding, precision)

        d_rhs = lax.platform_dependent(lhs, g, cpu=cpu_kernel_grad, default=xla_kernel_grad)
        return d_lhs, d_rhs

    conv.defvjp(forward, backward)
    return conv


def _taps(lhs, out_hw, kernel_hw, strides, padding):
    """For each kernel tap (i, j), row-major, the inputs it multiplies, one row per output position: kh*kw arrays
    [N*Ho*Wo, C]."""
    n, _, _, c = lhs.shape
    (ho, wo), (kh, kw), (sh, sw), ((ph0, ph1), (pw0, pw1)) = out_hw, kernel_hw, strides, padding
    padded = jnp.pad(lhs, ((0, 0), (ph0, ph1), (pw0, pw1), (0, 0)))
    return [
        padded[:, i : i + (ho - 1) * sh + 1 : sh, j : j + (wo - 1) * sw + 1 : sw, :].reshape(n * ho * wo, c)
        for i in range(kh)
        for j in range(kw)
    ]


def _forward_by_matmul(lhs, rhs, strides, padding, precision):
    """The convolution [N, Ho, Wo, O] as a sum of one [N*Ho*Wo, C] x [C, O] matmul per tap: for few input
    channels (the first layer) 3x faster than XLA:CPU's convolution; for many, 3x slower (bench_conv_parts.py)."""
    kh, kw, _, o = rhs.shape
    n, h, w, _ = lhs.shape
    (sh, sw), ((ph0, ph1), (pw0, pw1)) = strides, padding
    ho, wo = (h + ph0 + ph1 - kh) // sh + 1, (w + pw0 + pw1 - kw) // sw + 1
    taps = _taps(lhs, (ho, wo), (kh, kw), strides, padding)
    out = sum(jnp.matmul(t, rhs[k // kw, k % kw], precision=precision) for k, t in enumerate(taps))
    return out.reshape(n, ho, wo, o).astype(lhs.dtype)


def _kernel_grad_by_matmul(lhs, g, kernel_shape, strides, padding, precision):
    """d loss / d kernel [kh, kw, C, O] of an NHWC/HWIO convolution as matmuls: for tap (i, j), the input
    positions that tap read, [N*Ho*Wo, C], transposed, times the output gradient g [N*Ho*Wo, O]."""
    kh, kw, c, o = kernel_shape
    n, ho, wo, _ = g.shape
    grads = g.reshape(n * ho * wo, o)
    taps = _taps(lhs, (ho, wo), (kh, kw), strides, padding)
    if c < IM2COL_MAX_CHANNELS:
        patches = jnp.concatenate(taps, axis=1)  # [N*Ho*Wo, kh*kw*C]
        d_kernel = _contract_rows(patches, grads, precision)
    else:
        d_kernel = jnp.stack([_contract_rows(t, grads, precision) for t in taps])
    return d_kernel.reshape(kh, kw, c, o).astype(lhs.dtype)


def _contract_rows(a: jax.Array, b: jax.Array, precision) -> jax.Array:
    """a.T @ b for a [M, K], b [M, O]: [K, O], contracting the long row axis without materializing a.T."""
    return lax.dot_general(a, b, (((0,), (0,)), ((), ())), precision=precision)
