"""Gradient accumulation: k micro-batches of B / k per optimizer step give the step on the whole batch of B."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import dlfund
from dlfund.train.state import create_train_state
from dlfund.train.step import train_step

rng = np.random.default_rng(0)
CENTERS = rng.normal(scale=2.0, size=(4, 12))
Y = rng.integers(0, 4, size=1024).astype(np.int32)
X = (CENTERS[Y] + rng.normal(size=(1024, 12))).astype(np.float32)
OPTIONS = dict(epochs=2, batch_size=128, learning_rate=3e-3, schedule="cosine", progress=False)


def mlp(**options):
    return dlfund.models.MLP(12, (64, 64), 4, rngs=nnx.Rngs(0), **options)


@pytest.mark.parametrize("execution", ["scan", "loop"])
def test_four_micro_batches_of_32_give_the_weights_of_one_batch_of_128(execution):
    whole = dlfund.fit(mlp(), (X, Y), execution=execution, **OPTIONS)
    accumulated = dlfund.fit(mlp(), (X, Y), execution=execution, accumulate_steps=4, **OPTIONS)
    assert int(accumulated.state.step) == int(whole.state.step) == 2 * (1024 // 128)  # optimizer steps
    assert accumulated.config["accumulate_steps"] == 4 and whole.config["accumulate_steps"] == 1
    # The cosine schedule counts optimizer steps: the same rate at the end of every epoch.
    np.testing.assert_allclose(accumulated.history["learning_rate"], whole.history["learning_rate"], rtol=1e-6)
    np.testing.assert_allclose(accumulated.history["loss"], whole.history["loss"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(accumulated.state.params), jax.tree.leaves(whole.state.params)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    for a, b in zip(jax.tree.leaves(accumulated.state.opt_state), jax.tree.leaves(whole.state.opt_state)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


def test_the_model_only_ever_sees_a_micro_batch():
    seen = []

    class Recording(nnx.Module):
        def __init__(self):
            self.mlp = mlp()

        def __call__(self, x):
            seen.append(x.shape[0])  # at trace time
            return self.mlp(x)

    dlfund.fit(Recording(), (X, Y), accumulate_steps=4, validation_data=(X[:100], Y[:100]), **OPTIONS)
    training = [b for b in seen if b not in (100, 2)]  # validation and the output-shape probe see their own
    assert training and set(training) == {32}, seen


def test_a_step_on_micro_batches_holds_less_in_memory():
    """The compiled step's scratch memory shrinks with the micro-batch: one micro-batch's activations live at a
    time (measured here: 65 MiB for 8192 x 512 x 2 activations in one batch, 11 MiB in 8 micro-batches)."""
    model = dlfund.models.MLP(12, (512, 512), 4, rngs=nnx.Rngs(0))
    x, y = jnp.zeros((8192, 12)), jnp.zeros((8192,), jnp.int32)

    def temp_bytes(k):
        state = create_train_state(model, key=jax.random.key(0), accumulate_steps=k)
        return train_step.lower(state, (x, y)).compile().memory_analysis().temp_size_in_bytes

    whole, micro = temp_bytes(1), temp_bytes(8)
    activations = 8192 * 512 * 4 * 2  # the two hidden layers' activations of the whole batch: 32 MiB
    assert whole > activations, (whole, activations)
    assert micro < activations / 2, (micro, whole)


def test_batch_norm_and_dropout_models_train_with_accumulation():
    result = dlfund.fit(mlp(batch_norm=True, dropout=0.2), (X, Y), accumulate_steps=2, **OPTIONS)
    assert result.history["accuracy"][-1] > 0.8
    plain = dlfund.fit(mlp(batch_norm=True, dropout=0.2), (X, Y), **OPTIONS)
    # Batch norm normalizes each micro-batch on its own statistics: not the whole batch's numbers (documented).
    assert not np.allclose(result.history["loss"], plain.history["loss"], rtol=1e-5)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(batch_size=30, accumulate_steps=4), r"batch_size=30 does not split into accumulate_steps=4 equal"),
        (dict(accumulate_steps=0), r"accumulate_steps must be"),
        (dict(accumulate_steps=1.5), r"accumulate_steps must be"),
    ],
)
def test_bad_accumulation_is_refused_before_anything_compiles(options, message):
    with pytest.raises(ValueError, match=message):
        dlfund.fit(mlp(), (X, Y), **{**OPTIONS, **options})


def test_train_step_refuses_a_batch_that_does_not_split():
    state = create_train_state(mlp(), key=jax.random.key(0), accumulate_steps=3)
    with pytest.raises(ValueError, match="a batch of 32 does not split into accumulate_steps=3"):
        train_step(state, (jnp.zeros((32, 12)), jnp.zeros((32,), jnp.int32)))
