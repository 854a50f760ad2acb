"""Model forward passes checked against independent NumPy re-implementations (oracles).

Each oracle reads the model's own weights but recomputes the forward pass in float64 NumPy from the textbook
equations, with none of the library's code:

- recurrent models: the Elman, LSTM (gates i, f, g, o) and GRU cells stepped in a Python loop over each sequence's
  real steps only (padding is cut off, not masked); a backward direction reads the reversed sequence and its
  outputs are flipped back into time order before the next layer reads them; the head reads h (never the LSTM's
  cell state c).
- the Transformer: LayerNorm, multi-head attention with a key mask, the GELU MLP, pre-norm residual blocks, a CLS
  token every token may attend to, the final LayerNorm, and CLS or masked-mean pooling.
- the MLP's batch norm: batch statistics in training, and running statistics updated with Flax's convention
  ``running = 0.99 * running + 0.01 * batch`` (momentum is the old value's weight).

Parameters are first set to random values (biases, norm scales and the CLS token included), so that no term of the
forward pass hides behind a zero or a one from the initializers.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from model_helpers import randn

from dlfund.models import GRU, LSTM, MLP, RNN, Transformer

TOL = {"rtol": 1e-5, "atol": 1e-5}  # float32 model against a float64 oracle


def randomize_params(model: nnx.Module, seed: int, scale: float = 0.5) -> None:
    """Replaces every nnx.Param of ``model`` by N(0, scale^2) values (running statistics are left alone)."""
    rng = np.random.default_rng(seed)
    state = nnx.state(model, nnx.Param)
    nnx.update(model, jax.tree.map(lambda a: jnp.asarray(rng.normal(scale=scale, size=a.shape), a.dtype), state))


def value(variable) -> np.ndarray:
    return np.asarray(variable[...], np.float64)


def dense(linear: nnx.Linear, x: np.ndarray) -> np.ndarray:
    y = x @ value(linear.kernel)
    return y if linear.bias is None else y + value(linear.bias)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


# --- recurrent models ----------------------------------------------------------------------------------------------


def cell_step(cell: nnx.Module, carry, x: np.ndarray):
    """One step of a Flax cell from its equations: returns (new carry, output h)."""
    if isinstance(cell, nnx.OptimizedLSTMCell):
        c, h = carry
        i, f, g, o = np.split(dense(cell.dense_i, x) + dense(cell.dense_h, h), 4, axis=-1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        return (c, h), h
    if isinstance(cell, nnx.GRUCell):
        h = carry
        x_r, x_z, x_n = np.split(dense(cell.dense_i, x), 3, axis=-1)
        h_r, h_z, h_n = np.split(dense(cell.dense_h, h), 3, axis=-1)
        r, z = sigmoid(x_r + h_r), sigmoid(x_z + h_z)
        h = (1 - z) * np.tanh(x_n + r * h_n) + z * h
        return h, h
    assert isinstance(cell, nnx.SimpleCell)
    h = np.tanh(dense(cell.dense_i, x) + dense(cell.dense_h, carry))
    return h, h


def run_cell(cell: nnx.Module, steps: np.ndarray, hidden: int) -> tuple[np.ndarray, np.ndarray]:
    """Runs a cell over steps [T, F] from a zero state: outputs [T, hidden] and the final h [hidden]."""
    zeros = np.zeros(hidden)
    carry = (zeros, zeros) if isinstance(cell, nnx.OptimizedLSTMCell) else zeros
    outputs = []
    for x_t in steps:
        carry, h = cell_step(cell, carry, x_t)
        outputs.append(h)
    return np.stack(outputs), h


def recurrent_oracle(model, x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The head's input [B, directions * hidden], one sequence at a time, its padding cut off."""
    features = []
    for b, length in enumerate(lengths):
        seq = np.asarray(x[b, :length], np.float64)
        for layer in range(model.num_layers):
            outputs, final = run_cell(model.forward[layer], seq, model.hidden)
            sequences, finals = [outputs], [final]
            if model.bidirectional:
                outputs, final = run_cell(model.backward[layer], seq[::-1], model.hidden)
                sequences.append(outputs[::-1])  # back in time order: step t of the next layer sees step t
                finals.append(final)
            seq = np.concatenate(sequences, axis=-1)
        features.append(np.concatenate(finals))
    return np.stack(features)


@nnx.jit
def _features_and_logits(model, x, mask):
    return model.penultimate(x, mask=mask), model(x, mask=mask)


@pytest.mark.parametrize("layers, bidirectional", [(1, False), (2, True)], ids=["1-layer", "2-layer-bidirectional"])
@pytest.mark.parametrize("cls", [RNN, LSTM, GRU], ids=lambda c: c.__name__)
def test_recurrent_final_states_and_logits_match_a_numpy_oracle_on_padded_batches(cls, layers, bidirectional):
    """Kills: backward outputs left reversed for the next layer (2-layer-bidirectional) and an LSTM head reading
    the cell state c instead of h (LSTM): both change the final states."""
    model = cls(3, 5, 4, num_layers=layers, bidirectional=bidirectional, rngs=nnx.Rngs(0))
    randomize_params(model, seed=1)
    lengths = np.array([6, 4, 2])
    mask = np.arange(6)[None, :] < lengths[:, None]
    x = randn(2, (3, 6, 3))  # the padding after each sequence's real steps is random too
    features, logits = _features_and_logits(model, x, mask)
    expected = recurrent_oracle(model, x, lengths)
    np.testing.assert_allclose(features, expected, **TOL, err_msg="penultimate (final hidden states) differs")
    np.testing.assert_allclose(logits, dense(model.head, expected), **TOL, err_msg="logits differ")


# --- Transformer ---------------------------------------------------------------------------------------------------


def layer_norm(norm: nnx.LayerNorm, x: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + norm.epsilon) * value(norm.scale) + value(norm.bias)


def gelu(x: np.ndarray) -> np.ndarray:
    """The tanh approximation (jax.nn.gelu's default)."""
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def self_attention(attn, x: np.ndarray, key_mask: np.ndarray) -> np.ndarray:
    b, t, width = x.shape
    heads = attn.num_heads
    d = width // heads
    q, k, v = (dense(layer, x).reshape(b, t, heads, d) for layer in (attn.query, attn.key, attn.value))
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d)
    logits = np.where(key_mask[:, None, None, :], logits, -np.inf)
    weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    return dense(attn.out, np.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, t, width))


def sinusoids(length: int, width: int) -> np.ndarray:
    """pe[t, 2i] = sin(t / 10000^(2i/width)), pe[t, 2i+1] = cos(t / 10000^(2i/width)) (even width)."""
    angles = np.arange(length)[:, None] / 10000.0 ** (np.arange(0, width, 2)[None, :] / width)
    return np.stack([np.sin(angles), np.cos(angles)], axis=-1).reshape(length, width)


def transformer_oracle(model, x: np.ndarray, mask: np.ndarray):
    """(token states after the final LayerNorm, their mask, the pooled features, the logits)."""
    b, t, _ = x.shape
    positions = value(model.position_table)[:t] if model.positions == "learned" else sinusoids(t, model.width)
    h = dense(model.embed, np.asarray(x, np.float64)) + positions
    if model.pool == "cls":
        h = np.concatenate([np.broadcast_to(value(model.cls_token), (b, 1, model.width)), h], axis=1)
        mask = np.concatenate([np.ones((b, 1), bool), mask], axis=1)  # every token may attend to CLS
    for block in model.blocks:
        h = h + self_attention(block.attention, layer_norm(block.attention_norm, h), mask)
        h = h + dense(block.mlp_out, gelu(dense(block.mlp_in, layer_norm(block.mlp_norm, h))))
    h = layer_norm(model.norm, h)
    mean_pool = (h * mask[..., None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)  # over the real tokens
    pooled = h[:, 0] if model.pool == "cls" else mean_pool
    return h, mask, pooled, dense(model.head, pooled)


def small_transformer(**kwargs) -> Transformer:
    return Transformer(3, 4, width=8, num_heads=2, max_len=10, rngs=nnx.Rngs(0), **kwargs)


@nnx.jit
def _encode_pool_logits(model, x, mask):
    return *model.encode(x, mask=mask), model.penultimate(x, mask=mask), model(x, mask=mask)


@pytest.mark.parametrize(
    "positions, pool", [("learned", "cls"), ("sinusoidal", "mean")], ids=["learned-cls", "sinusoidal-mean"]
)
def test_transformer_tokens_pool_and_logits_match_a_numpy_encoder(positions, pool):
    """Kills: CLS masked out of attention (learned-cls) and a missing final LayerNorm (both)."""
    model = small_transformer(depth=2, positions=positions, pool=pool)
    randomize_params(model, seed=3)
    x = randn(4, (2, 6, 3))
    mask = np.arange(6)[None, :] < np.array([[6], [3]])
    tokens, token_mask, pooled, logits = _encode_pool_logits(model, x, mask)
    expected_tokens, expected_mask, expected_pooled, expected_logits = transformer_oracle(model, x, mask)
    np.testing.assert_allclose(tokens, expected_tokens, **TOL, err_msg="encoded token states differ")
    np.testing.assert_array_equal(token_mask, expected_mask, err_msg="encode's mask differs")
    np.testing.assert_allclose(pooled, expected_pooled, **TOL, err_msg="pooled features differ")
    np.testing.assert_allclose(logits, expected_logits, **TOL, err_msg="logits differ")


@nnx.jit
def _encode_with_cls(model, x, cls_token):
    model.cls_token[...] = cls_token
    return model.encode(x)[0]


def test_every_real_token_attends_to_the_cls_token():
    """With one block, a real token's state depends on the CLS token only through attention to it: changing the
    CLS token must change every real token's state."""
    model = small_transformer(depth=1, pool="cls")
    randomize_params(model, seed=5)
    x = randn(6, (2, 4, 3))
    cls_a, cls_b = randn(7, (2, 1, 1, 8))
    change = np.abs(np.asarray(_encode_with_cls(model, x, cls_a) - _encode_with_cls(model, x, cls_b)))
    moved = change[:, 1:].max(axis=-1)  # [B, T]: the real tokens (position 0 is CLS)
    assert np.all(moved > 1e-3), f"real tokens ignore the CLS token; largest change per token: {moved}"


def test_encoded_tokens_are_layer_normalized_with_the_final_norms_scale_and_bias():
    """Each token state after the final LayerNorm has mean = bias and standard deviation = scale per feature."""
    model = small_transformer(depth=2, pool="mean")
    randomize_params(model, seed=8)
    model.norm.scale[...] = jnp.full((8,), 2.0)
    model.norm.bias[...] = jnp.full((8,), 3.0)
    tokens = np.asarray(_encode_pool_logits(model, randn(9, (2, 5, 3)), np.ones((2, 5), bool))[0], np.float64)
    np.testing.assert_allclose(tokens.mean(axis=-1), 3.0, atol=1e-5, err_msg="token means are not the norm's bias")
    np.testing.assert_allclose(tokens.std(axis=-1), 2.0, rtol=1e-4, err_msg="token stds are not the norm's scale")


# --- MLP batch norm ------------------------------------------------------------------------------------------------

FLAX_MOMENTUM = 0.99  # weight of the old running value in Flax's BatchNorm (nnx.BatchNorm's default)


@nnx.jit
def _penultimate(model, x):
    return model.penultimate(x)


def batch_norm_mlp_oracle(model, x: np.ndarray, running: list, *, training: bool):
    """The MLP's hidden activations with batch norm; in training also the updated running (mean, var) per layer."""
    a, updated = np.asarray(x, np.float64), []
    for dense_layer, norm, (old_mean, old_var) in zip(model.dense, model.norms, running):
        z = dense(dense_layer, a)  # no bias: BN's shift replaces it
        if training:
            mean, var = z.mean(axis=0), z.var(axis=0)  # the batch's, biased variance
            new_mean = FLAX_MOMENTUM * old_mean + (1 - FLAX_MOMENTUM) * mean
            new_var = FLAX_MOMENTUM * old_var + (1 - FLAX_MOMENTUM) * var
            updated.append((new_mean, new_var))
        else:
            mean, var = old_mean, old_var
        a = np.maximum((z - mean) / np.sqrt(var + norm.epsilon) * value(norm.scale) + value(norm.bias), 0.0)
    return a, updated


def test_batch_norm_uses_batch_statistics_and_updates_running_stats_with_momentum_0_99():
    """Two training calls, then an evaluation call: outputs and running statistics against the oracle. A momentum
    other than Flax's 0.99 (e.g. PyTorch's 0.1 read the Flax way) gives different running statistics."""
    model = MLP(5, (6, 4), 3, batch_norm=True, rngs=nnx.Rngs(0))
    randomize_params(model, seed=10)
    running = [(value(norm.mean), value(norm.var)) for norm in model.norms]
    np.testing.assert_array_equal(running[0][0], 0.0)  # Flax starts the averages at 0 and 1
    np.testing.assert_array_equal(running[0][1], 1.0)
    model.train()
    for step in range(2):
        x = randn(11 + step, (16, 5)) * 2 + 1
        expected, running = batch_norm_mlp_oracle(model, x, running, training=True)
        np.testing.assert_allclose(_penultimate(model, x), expected, **TOL, err_msg=f"step {step}: outputs differ")
        for i, (norm, (mean, var)) in enumerate(zip(model.norms, running)):
            np.testing.assert_allclose(norm.mean[...], mean, **TOL, err_msg=f"step {step}: layer {i} running mean")
            np.testing.assert_allclose(norm.var[...], var, **TOL, err_msg=f"step {step}: layer {i} running var")
    model.eval()
    x = randn(13, (4, 5))
    expected, _ = batch_norm_mlp_oracle(model, x, running, training=False)
    np.testing.assert_allclose(_penultimate(model, x), expected, **TOL, err_msg="evaluation outputs differ")
