"""precision="bfloat16": the step computes in bfloat16; weights, moments, loss and batch-norm statistics: float32."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import dlfund
from dlfund.train import precision as precision_lib
from dlfund.train.state import create_train_state
from dlfund.train.step import train_step, train_step_with_outputs


@pytest.fixture(scope="module")
def digits():
    return dlfund.data.load("digits")


def lowered_text(model, precision):
    state = create_train_state(model, key=jax.random.key(0), precision=precision)
    return train_step.lower(state, (jnp.ones((32, 64)), jnp.zeros((32,), jnp.int32))).as_text()


def test_the_step_multiplies_in_bfloat16_only_when_asked():
    model = dlfund.models.MLP(64, (128,), 10, rngs=nnx.Rngs(0))
    dots = {
        p: [line for line in lowered_text(model, p).splitlines() if "dot_general" in line]
        for p in precision_lib.PRECISIONS
    }
    assert dots["float32"] and not any("bf16" in line for line in dots["float32"])
    forward = [line for line in dots["bfloat16"] if "tensor<32x64xbf16>, tensor<64x128xbf16>" in line]
    assert forward, dots["bfloat16"][:3]
    # The logits are float32 again before the loss (and the metrics) see them.
    state = create_train_state(model, key=jax.random.key(0), precision="bfloat16")
    batch = (jnp.ones((32, 64)), jnp.zeros((32,), jnp.int32))
    _, measurements, outputs = jax.eval_shape(train_step_with_outputs, state, batch)
    assert outputs.outputs.dtype == jnp.float32 and outputs.losses.dtype == jnp.float32
    assert measurements["loss"].dtype == jnp.float32


def test_bfloat16_keeps_float32_weights_moments_and_batch_norm_statistics(digits):
    model = dlfund.models.CNN((8, 8, 1), num_classes=10, batch_norm=True, rngs=nnx.Rngs(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the CPU note, tested below
        result = dlfund.fit(model, digits, epochs=2, precision="bfloat16", progress=False)
    state = result.state
    floating = [
        leaf
        for leaf in jax.tree.leaves((state.params, state.opt_state, state.model_state))
        if jnp.issubdtype(leaf.dtype, jnp.floating)
    ]
    assert floating and {leaf.dtype for leaf in floating} == {jnp.dtype(jnp.float32)}
    initial = nnx.state(dlfund.models.CNN((8, 8, 1), num_classes=10, batch_norm=True, rngs=nnx.Rngs(0)), nnx.BatchStat)
    moved = [
        not np.allclose(a, b)
        for a, b in zip(jax.tree.leaves(initial), jax.tree.leaves(nnx.state(result.model, nnx.BatchStat)))
    ]
    assert moved and all(moved)  # the running statistics were updated (in float32)
    assert all(np.isfinite(result.history["loss"])) and result.history["loss"][-1] < result.history["loss"][0]
    assert result.config["precision"] == "bfloat16"


def test_bfloat16_lands_within_a_point_and_a_half_of_float32_on_digits(digits):
    accuracy, final_loss = {}, {}
    for precision in precision_lib.PRECISIONS:
        scores, losses = [], []
        for seed in range(3):
            model = dlfund.models.MLP(64, (128,), 10, rngs=nnx.Rngs(seed))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                result = dlfund.fit(model, digits, epochs=20, seed=seed, precision=precision, progress=False)
            scores.append(dlfund.evaluate(result.model, digits)["accuracy"])
            losses.append(result.history["loss"][-1])
        accuracy[precision], final_loss[precision] = float(np.mean(scores)), losses
    assert accuracy["float32"] > 0.95
    assert abs(accuracy["bfloat16"] - accuracy["float32"]) <= 0.015, accuracy
    # Not float32 under another name: bfloat16's rounding shows in every run's training loss.
    assert all(abs(a - b) > 1e-6 * abs(b) for a, b in zip(final_loss["bfloat16"], final_loss["float32"])), final_loss


def test_on_cpu_bfloat16_warns_once_and_the_config_says_so(digits, monkeypatch):
    monkeypatch.setattr(precision_lib, "_warned", set())
    model = dlfund.models.MLP(64, (16,), 10, rngs=nnx.Rngs(0))
    with pytest.warns(UserWarning, match="precision='bfloat16' on the CPU backend"):
        first = dlfund.fit(model, digits, epochs=1, precision="bfloat16", progress=False)
    assert "CPU backend" in first.config["precision_note"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = dlfund.fit(model, digits, epochs=1, precision="bfloat16", progress=False)
    assert again.config["precision_note"] == first.config["precision_note"]
    plain = dlfund.fit(model, digits, epochs=1, progress=False)
    assert plain.config["precision"] == "float32" and "precision_note" not in plain.config


def test_an_unknown_precision_is_refused_with_the_known_ones(digits):
    model = dlfund.models.MLP(64, (16,), 10, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"Unknown precision 'float16'. Known: float32, bfloat16."):
        dlfund.fit(model, digits, epochs=1, precision="float16", progress=False)
