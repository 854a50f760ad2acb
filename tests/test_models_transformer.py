"""Transformer: attention against a reference, parameter counts, masks and padding, patches, checks, fit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from model_helpers import count, dropout_keys, randn

import dlfund
from dlfund.models import MultiHeadSelfAttention, Transformer, build
from dlfund.models.blocks import sinusoidal_positions
from dlfund.models.transformer import patches

F, W, HEADS, C = 3, 8, 2, 4  # features per token, width, heads, classes: few shapes, few compilations


def small(**kwargs):
    options = {"width": W, "depth": 2, "num_heads": HEADS, "max_len": 10, **kwargs}
    return Transformer(F, C, **options, rngs=nnx.Rngs(0))


def reference_attention(attn, x, mask):
    """Multi-head self-attention written out per example and per head in NumPy, over the real keys only."""
    x, mask = np.asarray(x, np.float64), np.asarray(mask)
    layers = {name: getattr(attn, name) for name in ("query", "key", "value", "out")}
    weights = {name: (np.asarray(layer.kernel[...]), np.asarray(layer.bias[...])) for name, layer in layers.items()}
    q, k, v = (x @ weights[n][0] + weights[n][1] for n in ("query", "key", "value"))
    d = x.shape[-1] // attn.num_heads
    heads = np.zeros_like(x)
    for b in range(x.shape[0]):
        keys = np.flatnonzero(mask[b])
        for h in range(attn.num_heads):
            cols = slice(h * d, (h + 1) * d)
            scores = q[b, :, cols] @ k[b, keys, cols].T / np.sqrt(d)
            p = np.exp(scores - scores.max(axis=1, keepdims=True))
            heads[b, :, cols] = (p / p.sum(axis=1, keepdims=True)) @ v[b, keys, cols]
    return heads @ weights["out"][0] + weights["out"][1]


def test_attention_matches_a_reference_implementation():
    attn = MultiHeadSelfAttention(W, HEADS, rngs=nnx.Rngs(0))
    x = randn(0, (2, 5, W))
    mask = jnp.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
    call = nnx.jit(lambda attn, x, mask: attn(x, mask))
    np.testing.assert_allclose(call(attn, x, mask), reference_attention(attn, x, mask), rtol=1e-4, atol=1e-5)
    everything = reference_attention(attn, x, np.ones((2, 5), bool))
    np.testing.assert_allclose(call(attn, x, None), everything, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"width must be divisible by num_heads.*width=8, num_heads=3"):
        MultiHeadSelfAttention(W, 3, rngs=nnx.Rngs(0))


def _block_params(width, mlp_width):
    norms = 2 * (2 * width)  # two LayerNorms, scale and bias each
    attention = 4 * (width * width + width)  # query, key, value, out
    mlp = (width * mlp_width + mlp_width) + (mlp_width * width + width)
    return norms + attention + mlp


@pytest.mark.parametrize(
    "kwargs, extra",
    [
        ({"positions": "learned", "pool": "cls"}, 10 * W + W),  # the [max_len, width] table and the CLS token
        ({"positions": "sinusoidal", "pool": "mean"}, 0),
    ],
)
def test_parameter_counts_and_shapes(kwargs, extra):
    model = nnx.eval_shape(lambda: small(**kwargs))
    expected = (F * W + W) + extra + 2 * _block_params(W, 2 * W) + 2 * W + (W * C + C)
    assert count(model) == expected
    assert nnx.eval_shape(lambda m: m(jnp.zeros((2, 10, F))), model).shape == (2, C)


def test_vit_patch_embedding_shapes_and_count():
    model = nnx.eval_shape(
        lambda: Transformer(4 * 4 * 3, 10, width=W, depth=1, num_heads=HEADS, max_len=4, patch_size=4,
                            image_shape=(8, 8, 3), positions="learned", rngs=nnx.Rngs(0))
    )  # fmt: skip
    assert count(model) == (48 * W + W) + (4 * W + W) + _block_params(W, 2 * W) + 2 * W + (W * 10 + 10)
    for shape in ((2, 8, 8, 3), (2, 192)):
        assert nnx.eval_shape(lambda m, s=shape: m(jnp.zeros(s)), model).shape == (2, 10)
    tokens, mask = nnx.eval_shape(lambda m: m.encode(jnp.zeros((2, 8, 8, 3))), model)
    assert tokens.shape == (2, 1 + 4, W) and mask.shape == (2, 5)  # CLS + (8/4)*(8/4) patches


def test_patches_are_flattened_squares_in_row_major_order():
    images = jnp.arange(2 * 4 * 6 * 3, dtype=jnp.float32).reshape(2, 4, 6, 3)
    out = patches(images, 2)
    assert out.shape == (2, 6, 12)
    for i in range(2):
        for j in range(3):
            expected = images[:, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].reshape(2, 12)
            np.testing.assert_array_equal(out[:, 3 * i + j], expected)


def test_sinusoidal_positions():
    pe = sinusoidal_positions(6, 8)
    t = np.arange(6)
    np.testing.assert_allclose(pe[:, 0], np.sin(t), rtol=1e-6)
    np.testing.assert_allclose(pe[:, 1], np.cos(t), rtol=1e-6)
    np.testing.assert_allclose(pe[:, 6], np.sin(t / 10000 ** (6 / 8)), rtol=1e-6)
    assert sinusoidal_positions(3, 5).shape == (3, 5)  # odd widths drop the last cosine


@nnx.jit
def _outputs(model, inputs):
    """Token states and logits for each (x, mask) pair, in one compiled program per model (eager calls would
    compile every op separately)."""
    return [(model.encode(x, mask=mask)[0], model(x, mask=mask)) for x, mask in inputs]


def outputs(model, inputs):
    return jax.tree.map(np.asarray, _outputs(model, inputs))  # NumPy: indexing jax arrays compiles slices


@nnx.jit
def _forward(model, x, key):
    return model(x, rngs=key)


@pytest.mark.parametrize(
    "positions, pool", [("learned", "cls"), ("sinusoidal", "mean")], ids=["learned-cls", "sinusoidal-mean"]
)
def test_padding_with_a_mask_changes_neither_real_tokens_nor_the_output(positions, pool):
    model = small(positions=positions, pool=pool)
    model.eval()
    x = randn(1, (2, 6, F))
    # Sequence 0 has 6 real tokens, sequence 1 only 3; the padding up to 10 tokens is random, not zeros.
    mask = np.arange(10)[None, :] < np.array([[6], [3]])
    padded = np.where(
        mask[..., None],
        np.pad(x, ((0, 0), (0, 4), (0, 0))),
        randn(2, (2, 10, F)),
    )
    (tokens, out), (_, unmasked), *alone = outputs(
        model, [(padded, mask), (padded, None), (x[:1], None), (x[1:, :3], None)]
    )
    for b, (tokens_alone, out_alone) in enumerate(alone):
        n = tokens_alone.shape[1]  # the real tokens (and CLS, first)
        np.testing.assert_allclose(tokens[b, :n], tokens_alone[0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(out[b], out_alone[0], rtol=1e-4, atol=1e-5)
    # The mask matters: read as real tokens, the padding changes the output.
    assert not np.allclose(out, unmasked, atol=1e-3)


def test_dropout_is_active_in_training_only_with_one_key_per_site(monkeypatch):
    model = small(dropout=0.5)
    x = randn(0, (2, 6, F))
    a, b = _forward(model, x, jax.random.key(1)), _forward(model, x, jax.random.key(2))
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(a, _forward(model, x, jax.random.key(1)))
    seen = dropout_keys(monkeypatch, model, x, jax.random.key(1))
    assert len(seen) == 1 + 2 * 2 and len(set(seen)) == len(seen)  # embedding, and 2 branches per block
    model.eval()
    np.testing.assert_array_equal(_forward(model, x, jax.random.key(1)), _forward(model, x, jax.random.key(3)))


def test_input_checks_name_expected_and_received_shapes():
    model = nnx.eval_shape(lambda: small())
    model.check_input((10, F))
    with pytest.raises(ValueError, match=r"at most max_len=10 steps .* shape \(11, 3\), i\.e\. 11 steps"):
        model.check_input((11, F))
    with pytest.raises(ValueError, match=r"at most max_len=10 tokens .* inputs of shape \(1, 11, 3\)"):
        nnx.eval_shape(lambda m: m(jnp.zeros((1, 11, F))), model)
    with pytest.raises(ValueError, match=r"sequences of shape \(T, 3\).*\(30,\); a flat \[B, T\*F\] vector is not"):
        model.check_input((30,))
    with pytest.raises(ValueError, match=r"expects 3 features per time step .* \(5, 2\) = 2 features"):
        model.check_input((5, 2))
    vit = nnx.eval_shape(lambda: Transformer(16, 2, width=W, num_heads=HEADS, patch_size=4,
                                             image_shape=(8, 8, 1), rngs=nnx.Rngs(0)))  # fmt: skip
    with pytest.raises(ValueError, match=r"expects images with 1 channels .* \(8, 8, 3\), i\.e\. 3 channels"):
        vit.check_input((8, 8, 3))
    with pytest.raises(ValueError, match=r"flat vectors of 64 .* flat vectors of 100 numbers"):
        vit.check_input((100,))
    with pytest.raises(ValueError, match=r"mask applies to sequence inputs"):
        nnx.eval_shape(lambda m: m(jnp.zeros((1, 8, 8, 1)), mask=jnp.ones((1, 4), bool)), vit)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_heads": 3}, r"width must be divisible by num_heads .*: width=8, num_heads=3"),
        ({"positions": "rotary"}, r"positions must be one of 'sinusoidal', 'learned', got 'rotary'"),
        ({"pool": "max"}, r"pool must be one of 'cls', 'mean', got 'max'"),
        ({"mlp_ratio": 0}, r"mlp_ratio must be a positive number, got 0"),
        ({"dropout": 1.0}, r"dropout must be a probability in \[0, 1\)"),
        ({"patch_size": 4}, r"needs both image_shape=\(H, W, C\) and patch_size, got image_shape=None"),
        ({"patch_size": 3, "image_shape": (8, 8, 1)}, r"patch_size=3 must divide .* image_shape=\(8, 8, 1\)"),
        ({"patch_size": 1, "image_shape": (4, 4, 3)}, r"gives 16 patches, more than max_len=10"),
        ({"patch_size": 2, "image_shape": (4, 4, 1)}, r"flattened 2x2x1 patch: in_features must be 4, got 3"),
    ],
)
def test_constructor_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        small(**kwargs)


def test_registry_uses_sequence_length_and_patches():
    seq = nnx.eval_shape(lambda: build("transformer", (7, F), 2, rngs=nnx.Rngs(0)))
    assert (seq.in_features, seq.max_len, seq.image_shape) == (F, 7, None)
    for shape, p, tokens in (((28, 28, 1), 4, 49), ((8, 8, 1), 2, 16), ((6, 6, 3), 1, 36)):
        vit = nnx.eval_shape(lambda s=shape: build("transformer", s, 10, rngs=nnx.Rngs(0)))
        assert (vit.patch_size, vit.max_len, vit.in_features) == (p, tokens, p * p * shape[2])
    given = nnx.eval_shape(lambda: build("transformer", (8, 8, 1), 10, rngs=nnx.Rngs(0), patch_size=4))
    assert (given.patch_size, given.max_len) == (4, 4)


def test_fit_sequences_and_images_loss_goes_down():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6, F)).astype(np.float32)
    y = (x[:, :, 0].mean(axis=1) > 0).astype(np.int32)
    options = dict(epochs=6, batch_size=8, learning_rate=3e-3, progress=False)
    result = dlfund.fit(small(dropout=0.1), (x, 2 * y + (x[:, 0, 1] > 0)), **options)
    loss = result.history["loss"]
    assert result.execution == "scan" and loss[-1] < 0.8 * loss[0], loss
    images = rng.normal(size=(64, 8, 8, 1)).astype(np.float32)
    side = rng.integers(0, 2, 64).astype(np.int32)  # which half of the image is brighter: labels the images hold
    images[side == 0, :, :4] += 1.5
    images[side == 1, :, 4:] += 1.5
    vit = build("transformer", (8, 8, 1), 2, rngs=nnx.Rngs(0), width=W, depth=1, num_heads=HEADS)
    loss = dlfund.fit(vit, (images, side), **{**options, "epochs": 10, "learning_rate": 1e-2}).history["loss"]
    assert loss[-1] < 0.7 * loss[0], loss
