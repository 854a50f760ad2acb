"""RNN, LSTM and GRU: shapes, parameter counts, masks and padding, bidirectional reading, dropout, checks, fit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from model_helpers import count, dropout_keys, randn

import dlfund
from dlfund.models import GRU, LSTM, RNN, build
from dlfund.models.rnn import reverse_valid, scan_cell

F, H, C = 3, 5, 4  # features per step, hidden size, outputs: one set of sizes, so shapes compile once


def cell_params(cls, fin):
    """Hand-computed parameters of one direction of one layer reading ``fin`` numbers per step."""
    if cls is RNN:  # h' = tanh(W_i x + b + W_h h)
        return fin * H + H + H * H
    if cls is LSTM:  # 4 gates; input kernel without bias, recurrent kernel with bias
        return fin * 4 * H + H * 4 * H + 4 * H
    return fin * 3 * H + 3 * H + H * 3 * H  # GRU: 3 blocks (r, z, n); the input kernel has the bias


@pytest.mark.parametrize("cls", [RNN, LSTM, GRU])
@pytest.mark.parametrize("layers, bidirectional", [(1, False), (2, True)])
def test_parameter_counts_and_output_shapes(cls, layers, bidirectional):
    model = nnx.eval_shape(lambda: cls(F, H, C, num_layers=layers, bidirectional=bidirectional, rngs=nnx.Rngs(0)))
    directions = 2 if bidirectional else 1
    expected = directions * cell_params(cls, F)
    expected += (layers - 1) * directions * cell_params(cls, directions * H)
    expected += directions * H * C + C
    assert count(model) == expected
    out = nnx.eval_shape(lambda m: m(jnp.zeros((2, 7, F)), mask=jnp.ones((2, 7), bool)), model)
    assert out.shape == (2, C)


def test_lstm_forget_gate_bias_starts_at_one():
    model = LSTM(F, H, C, rngs=nnx.Rngs(0))
    bias = np.asarray(model.forward[0].dense_h.bias[...])  # gates [i, f, g, o]
    np.testing.assert_array_equal(bias[H : 2 * H], 1.0)
    np.testing.assert_array_equal(np.delete(bias, np.s_[H : 2 * H]), 0.0)


def test_reverse_valid_reverses_only_the_real_steps():
    x = jnp.arange(2 * 5).reshape(2, 5, 1)
    out = reverse_valid(x, jnp.array([3, 5]))
    np.testing.assert_array_equal(out[..., 0], [[2, 1, 0, 3, 4], [9, 8, 7, 6, 5]])
    np.testing.assert_array_equal(reverse_valid(out, jnp.array([3, 5])), x)


def test_scan_cell_matches_flax_rnn_on_padded_sequences():
    cell = nnx.OptimizedLSTMCell(F, H, rngs=nnx.Rngs(0))
    x = randn(0, (2, 6, F))
    lengths = jnp.array([6, 3])
    mask = jnp.arange(6)[None, :] < lengths[:, None]
    zeros = jnp.zeros((2, H))
    (c, h), ys = scan_cell(cell, (zeros, zeros), x, mask)
    (c_ref, h_ref), ys_ref = nnx.RNN(cell, return_carry=True)(x, seq_lengths=lengths)
    np.testing.assert_allclose(h, h_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c, c_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ys[0], ys_ref[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ys[1, :3], ys_ref[1, :3], rtol=1e-5, atol=1e-6)


@nnx.jit
def _forward(model, x, mask=None, key=None):
    """The model compiled once per configuration: eager calls compile every op (and each scan) separately."""
    return model(x, mask=mask, rngs=key)


@nnx.jit
def _outputs(model, inputs):
    """The model's outputs for each (x, mask) pair, in one compiled program per model."""
    return [model(x, mask=mask) for x, mask in inputs]


def outputs(model, inputs):
    return jax.tree.map(np.asarray, _outputs(model, inputs))  # NumPy: indexing jax arrays compiles slices


@pytest.mark.parametrize("cls", [RNN, LSTM, GRU])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_padding_with_a_mask_does_not_change_the_output(cls, bidirectional):
    model = cls(F, H, C, num_layers=2, bidirectional=bidirectional, rngs=nnx.Rngs(0))
    model.eval()
    x = randn(1, (2, 4, F))
    # Sequence 0 has 4 real steps, sequence 1 only 2; the padding up to 7 steps is random, not zeros.
    mask = np.array([[1, 1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0]], bool)
    padded = np.where(
        mask[..., None],
        np.pad(x, ((0, 0), (0, 3), (0, 0))),
        randn(2, (2, 7, F)),
    )
    out, unmasked, first, second = outputs(model, [(padded, mask), (padded, None), (x[:1], None), (x[1:, :2], None)])
    np.testing.assert_allclose(out[0], first[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[1], second[0], rtol=1e-5, atol=1e-6)
    # The mask matters: read as real steps, the padding changes the output.
    assert not np.allclose(out, unmasked, atol=1e-4)


def test_dropout_between_layers_and_before_the_head(monkeypatch):
    model = LSTM(F, H, C, num_layers=2, bidirectional=True, dropout=0.5, rngs=nnx.Rngs(0))
    x = randn(0, (4, 5, F))
    a, b = _forward(model, x, key=jax.random.key(1)), _forward(model, x, key=jax.random.key(2))
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(a, _forward(model, x, key=jax.random.key(1)))
    seen = dropout_keys(monkeypatch, model, x, jax.random.key(1))
    assert len(seen) == 2 and len(set(seen)) == 2  # between the layers, before the head: one key each
    model.eval()
    np.testing.assert_array_equal(_forward(model, x, key=jax.random.key(1)), _forward(model, x, key=jax.random.key(3)))


def test_input_checks_reject_flat_vectors_and_wrong_features():
    model = nnx.eval_shape(lambda: LSTM(F, H, C, rngs=nnx.Rngs(0)))
    model.check_input((7, F))
    model.check_input((7, 1, F))  # trailing dimensions holding F numbers per step
    with pytest.raises(
        ValueError,
        match=r"LSTM expects sequences of shape \(T, 3\).*have shape \(12,\); a flat \[B, T\*F\] vector is not "
        r"accepted.*reshape the data to \[N, 4, 3\]",
    ):
        model.check_input((12,))
    with pytest.raises(ValueError, match=r"expects 3 features per time step .* shape \(7, 4\) = 4 features per step"):
        model.check_input((7, 4))
    with pytest.raises(ValueError, match=r"GRU expects sequences of shape \(T, 3\)"):
        nnx.eval_shape(lambda: GRU(F, rngs=nnx.Rngs(0))).check_input((12,))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"hidden": 0}, r"hidden must be a positive integer, got 0"),
        ({"num_layers": 0}, r"num_layers must be a positive integer, got 0"),
        ({"dropout": -0.1}, r"dropout must be a probability in \[0, 1\)"),
        ({"output": "sequence"}, r"output must be one of 'classify', 'regress', got 'sequence'"),
    ],
)
def test_constructor_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RNN(F, **kwargs, rngs=nnx.Rngs(0))


def test_regression_output_defaults_to_mse():
    assert RNN(F, H, 1, output="regress", rngs=nnx.Rngs(0)).default_loss == "mse"
    assert RNN(F, H, 1, rngs=nnx.Rngs(0)).default_loss == "softmax_cross_entropy"


def test_registry_reads_sequences_and_images_row_by_row():
    assert nnx.eval_shape(lambda: build("lstm", (7, F), 2, rngs=nnx.Rngs(0))).in_features == F
    gru = nnx.eval_shape(lambda: build("gru", (8, 8, 1), 10, rngs=nnx.Rngs(0), hidden=H))
    assert gru.in_features == 8 and gru.hidden == H
    with pytest.raises(ValueError, match=r"input_shape \(T, F\).*got \(30,\)"):
        build("rnn", (30,), 2, rngs=nnx.Rngs(0))


def _sign_task(n, seed, t=5):
    """Class 1 when the first feature sums to more than 0 over time: learnable by a recurrent model."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, t, 2)).astype(np.float32)
    return x, (x[:, :, 0].sum(axis=1) > 0).astype(np.int32)


def test_lstm_fit_loss_goes_down():
    x, y = _sign_task(128, 0)
    model = LSTM(2, 8, 2, bidirectional=True, dropout=0.1, rngs=nnx.Rngs(0))
    result = dlfund.fit(model, (x, y), epochs=5, batch_size=8, learning_rate=1e-2, progress=False)
    loss = result.history["loss"]
    assert loss[-1] < 0.6 * loss[0]
    with pytest.raises(ValueError, match=r"a flat \[B, T\*F\] vector is not accepted"):
        dlfund.fit(model, (x.reshape(128, -1), y), epochs=1, batch_size=8, progress=False)


def test_gru_regression_fit_loss_goes_down():
    x, _ = _sign_task(64, 1)
    gru = GRU(2, 8, 1, output="regress", rngs=nnx.Rngs(0))
    result = dlfund.fit(gru, (x, x[:, :, 0].sum(axis=1)), epochs=8, batch_size=8, learning_rate=2e-2, progress=False)
    loss = result.history["loss"]
    assert result.state.objective.loss.name == "mse" and "accuracy" not in result.history
    assert loss[-1] < 0.5 * loss[0], loss  # the target's variance is 5: a GRU that ignores x stays near it
