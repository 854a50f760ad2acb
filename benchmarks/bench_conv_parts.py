"""The benchmark CNN's operations one by one on XLA:CPU: what `dlfund.models.conv_ops` replaces and what it keeps.

For each operation of one training step (batch 128, MNIST-shaped: conv 1->32 at 28x28, 2x2 max pool, conv 32->64
at 14x14, 2x2 max pool), milliseconds per call of a jitted function, median of ``--repeat`` timings of 20 calls:

* max pool forward + backward: ``nnx.max_pool`` (``reduce_window``; its gradient is ``select_and_scatter``)
  against ``conv_ops.pool`` (elementwise, the winner's position kept);
* the kernel gradient: XLA's (a convolution contracting over the batch) against ``conv_ops``' matmuls (one per
  kernel tap, or one im2col matmul for few input channels);
* the forward convolution: XLA's against dlfund's, and against the two matmul forms (conv_ops uses the per-tap
  form below ``conv_ops.IM2COL_MAX_CHANNELS`` input channels, where it is faster, and XLA's above);
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


def forward_by_taps(x, w):
    """conv_ops' own per-tap forward pass (which it uses below IM2COL_MAX_CHANNELS input channels), for any C."""
    return conv_ops._forward_by_matmul(x, w, (1, 1), _same_padding(x, w), None)


def forward_by_im2col(x, w):
    kh, kw, c, o = w.shape
    taps = conv_ops._taps(x, x.shape[1:3], (kh, kw), (1, 1), _same_padding(x, w))
    return (jnp.concatenate(taps, axis=1) @ w.reshape(kh * kw * c, o)).reshape(*x.shape[:3], o)


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
