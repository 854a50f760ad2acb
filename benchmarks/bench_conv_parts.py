"""The benchmark CNN's operations one by one on XLA:CPU: what `dlfund.models.conv_ops` replaces and what it keeps.

For each operation of one training step (batch 128, MNIST-shaped: conv 1->32 at 28x28, 2x2 max pool, conv 32->64
at 14x14, 2x2 max pool), milliseconds per call of a jitted function, median of ``--repeat`` timings of 20 calls:

* max pool forward + backward: ``nnx.max_pool`` (``reduce_window``; its gradient is ``select_and_scatter``)
  against ``conv_ops.pool`` (elementwise, the winner's position kept);
* the kernel gradient: XLA's (a convolution contracting over the batch) against ``conv_ops``' matmuls (one per
  kernel tap, or one im2col matmul for few input channels);
* the forward convolution: XLA's against dlfund's, and against forms conv_ops does not use for many channels:
  matmuls per tap (conv_ops' form below ``conv_ops.IM2COL_MAX_CHANNELS`` input channels, where it is faster),
  im2col, the taps accumulated in a ``fori_loop`` (one dot at a time), and Winograd F(2x2, 3x3);
* one whole training step's gradient (value_and_grad of the cross-entropy) with Flax's operations and with dlfund's.

Run: ``.venv/bin/python benchmarks/bench_conv_parts.py`` (about 1 minute). Set ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``
in the environment to see the page-fault effect on the forms that write large temporaries.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dlfund.models import conv_ops

BATCH = 128
DIMS = ("NHWC", "HWIO", "NHWC")


def timed(fn, *args, calls: int = 20, repeat: int = 5) -> float:
    """Median milliseconds per call over ``repeat`` timings of ``calls`` calls (after one warm-up call)."""
    jax.block_until_ready(fn(*args))
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(calls):
            out = fn(*args)
        jax.block_until_ready(out)
        runs.append((time.perf_counter() - start) / calls * 1e3)
    return statistics.median(runs)


def lax_conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=DIMS)


def dlfund_conv(x, w):
    dims = jax.lax.conv_dimension_numbers(x.shape, w.shape, DIMS)
    return conv_ops.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dims)


def _same_padding(x, w):
    return jax.lax.padtype_to_pads(x.shape[1:3], w.shape[:2], (1, 1), "SAME")


def _same_taps(x, w):
    """conv_ops' per-tap inputs of a SAME, stride-1 convolution: kh*kw arrays [N*H*W, C]."""
    return conv_ops._taps(x, x.shape[1:3], w.shape[:2], (1, 1), _same_padding(x, w))


def forward_by_taps(x, w):
    """conv_ops' own per-tap forward pass (which it uses below IM2COL_MAX_CHANNELS input channels), for any C."""
    return conv_ops._forward_by_matmul(x, w, (1, 1), _same_padding(x, w), None)


def forward_by_im2col(x, w):
    kh, kw, c, o = w.shape
    return (jnp.concatenate(_same_taps(x, w), axis=1) @ w.reshape(kh * kw * c, o)).reshape(*x.shape[:3], o)


def forward_by_taps_in_a_loop(x, w):
    """The per-tap sum with one dot at a time (a ``fori_loop`` over the stacked taps). Tried because XLA:CPU runs
    the unrolled form's 9 independent dots at once; one at a time is no faster (the stacked taps are written)."""
    kh, kw, c, o = w.shape
    taps = jnp.stack(_same_taps(x, w))
    kernels = w.reshape(kh * kw, c, o)

    def add_tap(k, total):
        return total + taps[k] @ kernels[k]

    return jax.lax.fori_loop(0, kh * kw, add_tap, jnp.zeros((taps.shape[1], o), x.dtype)).reshape(*x.shape[:3], o)


# Winograd F(2x2, 3x3) (Lavin & Gray 2015): 16 elementwise products per 2x2 output tile instead of 36.
_WINOGRAD_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32)
_WINOGRAD_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32)
_WINOGRAD_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)


def forward_by_winograd(x, w):
    """A 3x3 SAME convolution with stride 1 by Winograd F(2x2, 3x3): input tiles [4, 4] every 2 pixels transformed
    (B^T d B), one batched [16] x [tiles, C] x [C, O] matmul with the transformed kernel (G g G^T), output tiles
    transformed back (A^T m A)."""
    n, h, wd, c = x.shape
    o = w.shape[-1]
    th, tw = -(-h // 2), -(-wd // 2)
    xp = jnp.pad(x, ((0, 0), (1, 2 * th + 1 - h), (1, 2 * tw + 1 - wd), (0, 0)))
    tiles = [[xp[:, a : a + 2 * th - 1 : 2, b : b + 2 * tw - 1 : 2] for b in range(4)] for a in range(4)]
    bt = _WINOGRAD_BT
    v = jnp.stack(
        [
            sum(bt[i, a] * bt[j, b] * tiles[a][b] for a in range(4) for b in range(4) if bt[i, a] * bt[j, b])
            for i in range(4)
            for j in range(4)
        ]
    ).reshape(16, n * th * tw, c)
    u = jnp.einsum("ia,jb,abco->ijco", _WINOGRAD_G, _WINOGRAD_G, w).reshape(16, c, o)
    m = jax.lax.dot_general(v, u, (((2,), (1,)), ((0,), (0,)))).reshape(4, 4, n, th, tw, o)
    at = _WINOGRAD_AT

    def output(p, q):  # [N, th, tw, O]: the output pixel (p, q) of every tile
        return sum(at[p, i] * at[q, j] * m[i, j] for i in range(4) for j in range(4) if at[p, i] * at[q, j])

    rows = [jnp.stack([output(p, q) for q in (0, 1)], axis=3) for p in (0, 1)]  # 2 x [N, th, tw, 2, O]
    return jnp.stack(rows, axis=2).reshape(n, 2 * th, 2 * tw, o)[:, :h, :wd]


def kernel_grad(conv):
    return jax.jit(lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0])


def input_grad(conv):
    return jax.jit(lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0])


def small_cnn(params, x, conv, pool):
    k1, k2, w1, w2 = params
    h = pool(jax.nn.relu(conv(x, k1)))
    h = pool(jax.nn.relu(conv(h, k2)))
    h = jax.nn.relu(h.reshape(h.shape[0], -1) @ w1)
    return h @ w2


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)

    def normal(*shape, scale=1.0):
        return jnp.asarray(rng.normal(size=shape) * scale, jnp.float32)

    def row(name, flax_ms, dlfund_ms):
        print(f"| {name} | {flax_ms:.2f} | {dlfund_ms:.2f} | {flax_ms / dlfund_ms:.1f}x |")

    print(
        f"jax {jax.__version__}, {jax.devices()[0].device_kind}, batch {BATCH}, ms per call (median of {args.repeat})"
    )
    print("\n| operation | XLA / Flax ms | dlfund conv_ops ms | speed-up |\n|---|---|---|---|")
    flax_pool = jax.jit(jax.grad(lambda h: (nnx.max_pool(h, (2, 2), strides=(2, 2)) ** 2).sum()))
    our_pool = jax.jit(jax.grad(lambda h: (conv_ops.pool(h, 2) ** 2).sum()))
    for shape in [(BATCH, 28, 28, 32), (BATCH, 14, 14, 64)]:
        h = normal(*shape)
        row(
            f"max pool 2x2 forward + backward, {shape[1]}x{shape[2]}x{shape[3]}",
            timed(flax_pool, h, repeat=args.repeat),
            timed(our_pool, h, repeat=args.repeat),
        )
    convs = [((BATCH, 28, 28, 1), (3, 3, 1, 32)), ((BATCH, 14, 14, 32), (3, 3, 32, 64))]
    for x_shape, w_shape in convs:
        x, w = normal(*x_shape), normal(*w_shape, scale=0.1)
        g = normal(*x_shape[:3], w_shape[-1])
        label = f"conv {w_shape[2]}->{w_shape[3]} at {x_shape[1]}x{x_shape[2]}"

        row(
            f"{label}: kernel gradient",
            timed(kernel_grad(lax_conv), x, w, g, repeat=args.repeat),
            timed(kernel_grad(dlfund_conv), x, w, g, repeat=args.repeat),
        )
        native = timed(jax.jit(lax_conv), x, w, repeat=args.repeat)
        few = w_shape[2] < conv_ops.IM2COL_MAX_CHANNELS  # conv_ops' forward is the per-tap form only then
        row(f"{label}: forward", native, timed(jax.jit(dlfund_conv), x, w, repeat=args.repeat))
        row(
            f"{label}: forward, one matmul per tap{'' if few else ' (not used here)'}",
            native,
            timed(jax.jit(forward_by_taps), x, w, repeat=args.repeat),
        )
        row(f"{label}: forward, im2col (not used)", native, timed(jax.jit(forward_by_im2col), x, w, repeat=args.repeat))
        if not few:
            expected = jax.jit(lax_conv)(x, w)
            for name, form in [("taps in a fori_loop", forward_by_taps_in_a_loop), ("Winograd", forward_by_winograd)]:
                error = float(jnp.max(jnp.abs(jax.jit(form)(x, w) - expected)))
                assert error < 1e-4 * float(jnp.max(jnp.abs(expected))), (name, error)
                row(f"{label}: forward, {name} (not used)", native, timed(jax.jit(form), x, w, repeat=args.repeat))
        row(
            f"{label}: input gradient (XLA's in both)",
            timed(input_grad(lax_conv), x, w, g, repeat=args.repeat),
            timed(input_grad(dlfund_conv), x, w, g, repeat=args.repeat),
        )

    params = [
        normal(3, 3, 1, 32, scale=0.3),
        normal(3, 3, 32, 64, scale=0.06),
        normal(7 * 7 * 64, 128, scale=0.02),
        normal(128, 10, scale=0.1),
    ]
    x, y = normal(BATCH, 28, 28, 1), jnp.asarray(rng.integers(0, 10, BATCH))

    def step(conv, pool):
        def loss(p):
            logits = small_cnn(p, x, conv, pool)
            return -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1).mean()

        return jax.jit(jax.value_and_grad(loss))

    flax_step = step(lax_conv, lambda h: nnx.max_pool(h, (2, 2), strides=(2, 2)))
    our_step = step(dlfund_conv, lambda h: conv_ops.pool(h, 2))
    row(
        "whole step: loss and gradient",
        timed(flax_step, params, repeat=args.repeat),
        timed(our_step, params, repeat=args.repeat),
    )


if __name__ == "__main__":
    main()
