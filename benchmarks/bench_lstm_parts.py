"""The benchmark LSTM's training step on XLA:CPU, taken apart: why it trails PyTorch, and what did not help.

The peer table's LSTM (128 hidden units over 28 steps of 28 numbers, batch 128) trains at ~0.8x PyTorch eager on
this CPU. Each row is milliseconds per call of a jitted function, median of ``--repeat`` timings of 20 calls:

* the recurrent matmul ([128, 128] x [128, 512]) 28 times inside a ``lax.scan``, against the same FLOPs as one
  [3584, 128] x [128, 512] matmul: a step's matmul is too small for XLA:CPU to run it at the big matmul's rate;
* the LSTM layer's forward pass and its gradient in three forms:
  - dlfund's: ``nnx.OptimizedLSTMCell`` in a ``lax.scan`` (both projections inside each step), JAX's autodiff;
  - the input projection hoisted out of the scan (one big matmul for all steps), autodiff;
  - a hand-written backward pass (``jax.custom_vjp``) whose scan does only the recurrent matmul of each step and
    takes both weight gradients after the loop as single big matmuls (the cuDNN layout); its gradients are checked
    against dlfund's before timing;
* PyTorch's ``nn.LSTM`` forward + backward on the same shapes, when PyTorch is installed.

Run: ``.venv/bin/python -m benchmarks.bench_lstm_parts`` (about 1 minute).
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.bench_conv_parts import timed
from dlfund.models.rnn import LSTM

BATCH, STEPS, FEATURES, HIDDEN = 128, 28, 28, 128


def _gates(z, c):
    """One LSTM step's elementwise part from the pre-activations z [B, 4H] (gates i, f, g, o) and the cell c."""
    i, f, g, o = jnp.split(z, 4, axis=-1)
    i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
    c = f * c + i * g
    tc = jnp.tanh(c)
    return c, o * tc, (i, f, g, o, tc)


def hoisted(wi, wh, b, x):
    """Hidden states [T, B, H] of an LSTM over x [T, B, F], the input projection computed for all steps at once."""
    xi = jnp.einsum("tbf,fg->tbg", x, wi) + b

    def step(carry, xi_t):
        c, h, _ = _gates(xi_t + carry[1] @ wh, carry[0])
        return (c, h), h

    zeros = jnp.zeros((x.shape[1], wh.shape[0]), x.dtype)
    return jax.lax.scan(step, (zeros, zeros), xi)[1]


@jax.custom_vjp
def by_hand(wi, wh, b, x):
    """``hoisted``'s values; the gradient below keeps the weight gradients out of the backward scan."""
    return _by_hand_forward(wi, wh, b, x)[0]


def _by_hand_forward(wi, wh, b, x):
    xi = jnp.einsum("tbf,fg->tbg", x, wi) + b

    def step(carry, xi_t):
        c_prev, h_prev = carry
        c, h, acts = _gates(xi_t + h_prev @ wh, c_prev)
        return (c, h), (h, (*acts, c_prev))

    zeros = jnp.zeros((x.shape[1], wh.shape[0]), x.dtype)
    hs, saved = jax.lax.scan(step, (zeros, zeros), xi)[1]
    return hs, (wi, wh, x, hs, saved)


def _by_hand_backward(residuals, d_hs):
    wi, wh, x, hs, saved = residuals

    def step(carry, inputs):
        dh_next, dc_next = carry
        dh_out, (i, f, g, o, tc, c_prev) = inputs
        dh = dh_out + dh_next
        dc = dc_next + dh * o * (1 - tc * tc)
        dz = jnp.concatenate(
            [dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - g * g), dh * tc * o * (1 - o)], axis=-1
        )
        return (dz @ wh.T, dc * f), dz

    zeros = jnp.zeros_like(d_hs[0])
    dz = jax.lax.scan(step, (zeros, zeros), (d_hs, saved), reverse=True)[1]  # [T, B, 4H]
    h_prev = jnp.concatenate([jnp.zeros_like(hs[:1]), hs[:-1]])
    flat = dz.reshape(-1, dz.shape[-1])
    d_wh = h_prev.reshape(-1, h_prev.shape[-1]).T @ flat
    d_wi = x.reshape(-1, x.shape[-1]).T @ flat
    return d_wi, d_wh, flat.sum(0), (flat @ wi.T).reshape(x.shape)


by_hand.defvjp(_by_hand_forward, _by_hand_backward)


def torch_row(x: np.ndarray, weight: np.ndarray, repeat: int) -> float | None:
    """PyTorch nn.LSTM forward + backward (ms per call) on the same shapes, or None without PyTorch."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    lstm = torch.nn.LSTM(FEATURES, HIDDEN)  # time-major input [T, B, F]
    xt, wt = torch.from_numpy(x), torch.from_numpy(weight)

    def call():  # synchronous on CPU: timed's block_until_ready(None) waits for nothing
        lstm.zero_grad()
        hs, _ = lstm(xt)
        (torch.sin(hs[-1]) * wt).sum().backward()

    return timed(call, repeat=repeat)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    x_np = rng.normal(size=(STEPS, BATCH, FEATURES)).astype(np.float32)
    weight_np = rng.normal(size=(BATCH, HIDDEN)).astype(np.float32)
    x, weight = jnp.asarray(x_np), jnp.asarray(weight_np)

    model = LSTM(FEATURES, hidden=HIDDEN, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    cell = model.forward[0]
    wi, wh, b = cell.dense_i.kernel[...], cell.dense_h.kernel[...], cell.dense_h.bias[...]

    def dlfund_final(params, x):  # dlfund's own layer: the last hidden state [B, H]
        return nnx.merge(graphdef, params).penultimate(jnp.swapaxes(x, 0, 1))

    def loss_of(final):
        return (jnp.sin(final) * weight).sum()

    def dlfund_grad(params, x):
        return jax.value_and_grad(lambda p: loss_of(dlfund_final(p, x)))(params)

    def pure_grad(form):
        return lambda wi, wh, b, x: jax.value_and_grad(lambda *w: loss_of(form(*w, x)[-1]), argnums=(0, 1, 2))(
            wi, wh, b
        )

    # The two rewrites must compute dlfund's gradient before their times mean anything.
    reference = jax.jit(dlfund_grad)(params, x)[1]["forward"][0]
    expected = (reference["dense_i"]["kernel"][...], reference["dense_h"]["kernel"][...])
    expected += (reference["dense_h"]["bias"][...],)
    for form in (hoisted, by_hand):
        got = jax.jit(pure_grad(form))(wi, wh, b, x)[1]
        for mine, theirs in zip(got, expected):
            error = float(jnp.max(jnp.abs(mine - theirs)))
            assert error < 1e-4 * (1 + float(jnp.max(jnp.abs(theirs)))), (form.__name__, error)

    def ms(fn, *inputs):
        return timed(jax.jit(fn), *inputs, repeat=args.repeat)

    print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}, ms per call (median of {args.repeat})")
    print("\n| what | ms | GFLOP/s |\n|---|---|---|")
    h, big = (
        jnp.asarray(rng.normal(size=(BATCH, HIDDEN)), jnp.float32),
        jnp.asarray(rng.normal(size=(HIDDEN, 4 * HIDDEN)) * 0.05, jnp.float32),
    )
    matmul_flop = 2 * STEPS * BATCH * HIDDEN * 4 * HIDDEN

    def recurrent(h, w):  # the step's matmul only (the slice keeps the carry's shape, the sum keeps every output)
        def step(h, _):
            z = h @ w
            return (
                z[:, :HIDDEN] + z[:, HIDDEN : 2 * HIDDEN] + z[:, 2 * HIDDEN : 3 * HIDDEN] + z[:, 3 * HIDDEN :]
            ) * 0.01, None

        return jax.lax.scan(step, h, None, length=STEPS)[0]

    stacked = jnp.tile(h, (STEPS, 1))
    for name, fn, inputs in [
        (
            f"{STEPS} recurrent matmuls [{BATCH}, {HIDDEN}] x [{HIDDEN}, {4 * HIDDEN}] in a lax.scan",
            recurrent,
            (h, big),
        ),
        (
            f"the same FLOPs as one [{STEPS * BATCH}, {HIDDEN}] x [{HIDDEN}, {4 * HIDDEN}] matmul",
            jnp.dot,
            (stacked, big),
        ),
    ]:
        t = ms(fn, *inputs)
        print(f"| {name} | {t:.2f} | {matmul_flop / t / 1e6:.0f} |")
    rows = [
        ("LSTM forward, dlfund (both projections in each step)", ms(dlfund_final, params, x)),
        ("LSTM forward, input projection hoisted out of the scan", ms(lambda *w: hoisted(*w)[-1], wi, wh, b, x)),
        ("LSTM gradient, dlfund (autodiff)", ms(dlfund_grad, params, x)),
        ("LSTM gradient, input projection hoisted (autodiff)", ms(pure_grad(hoisted), wi, wh, b, x)),
        ("LSTM gradient, by hand: weight gradients after the loop (custom_vjp)", ms(pure_grad(by_hand), wi, wh, b, x)),
    ]
    torch_ms = torch_row(x_np, weight_np, args.repeat)
    if torch_ms is not None:
        rows.append(("LSTM forward + gradient, PyTorch nn.LSTM", torch_ms))
    for name, t in rows:
        print(f"| {name} | {t:.2f} | |")


if __name__ == "__main__":
    main()
