"""The recompile watch: a run's training calls after the first must not compile, and the warning says what changed."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import dlfund
from dlfund.train.compiles import CompileWatch, RecompileWarning, describe_changes, signature


@jax.jit
def run_epochs(x):  # named like the epoch program: the watch knows programs by name
    return x * 2


def test_a_later_call_that_compiles_warns_once_naming_the_changed_input():
    watch = CompileWatch("test")
    first = {"x": jnp.zeros((3,), jnp.float32)}
    for epoch in (1, 2):  # the first call compiles, the second reuses the program
        with warnings.catch_warnings():
            warnings.simplefilter("error", RecompileWarning)
            with watch.call(first, epoch):
                run_epochs(first["x"])
    changed = {"x": jnp.zeros((4,), jnp.float32)}
    with (
        pytest.warns(
            RecompileWarning,
            match=r"run_epochs\) compiled again in call 3 \(epoch 3\).*\['x'\]: shape "
            r"\(3,\) -> \(4,\)",
        ),
        watch.call(changed, 3),
    ):
        run_epochs(changed["x"])
    with warnings.catch_warnings():  # once per run
        warnings.simplefilter("error", RecompileWarning)
        other = {"x": jnp.zeros((5,), jnp.int32)}
        with watch.call(other, 4):
            run_epochs(other["x"])


def test_describe_changes_names_dtype_weak_type_and_static_changes():
    a = signature({"w": jnp.zeros((2,), jnp.float32), "n": jnp.asarray(1, jnp.int32)})
    b = signature({"w": jnp.zeros((2,), jnp.bfloat16), "n": jnp.asarray(1)})
    text = describe_changes(a, b)
    assert "['w']: dtype float32 -> bfloat16" in text
    assert "['n']: weak type False -> True" in text
    c = signature({"w": jnp.zeros((2,), jnp.float32)})
    assert "static part" in describe_changes(a, c)
    assert "the batches did" in describe_changes(a, a)


@pytest.mark.parametrize("execution", ["scan", "loop", "chunk"])
def test_a_fit_compiles_its_programs_once(execution):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(256, 6)).astype(np.float32), rng.integers(0, 3, 256).astype(np.int32)
    model = dlfund.models.MLP(6, (8,), 3, rngs=nnx.Rngs(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RecompileWarning)
        dlfund.fit(
            model,
            (x, y),
            validation_data=(x[:50], y[:50]),
            epochs=4,
            epochs_per_call=1 if execution == "scan" else "auto",
            execution=execution,
            batch_size=32,
            progress=False,
        )
