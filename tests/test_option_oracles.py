"""Option-level oracles for optimizers and regularizers: each setting that can be silently dropped is checked
against an independent reference, not against the library itself.

Oracles:
  * schedules: optax's own ``cosine_decay_schedule(..., alpha=...)`` and ``exponential_decay(..., staircase=True)``;
  * decoupled weight decay under a decaying schedule: ``optax.adamw`` (for ``adam`` + ``weight_decay``),
    ``optax.chain(optax.add_decayed_weights, optax.sgd)`` (for ``sgd`` + ``weight_decay``), and the hand formula
    "with zero gradients and SGD, step k changes a kernel by ``-lr_k * wd * W_k``", stepped over several steps;
  * penalties: ``jax.grad`` of the penalty against its hand-written gradient (``2 * c * W`` for L2, ``c * sign(W)``
    for L1, 0 on parameters with fewer than 2 dimensions), and the ``describe()`` -> ``get()`` round trip compared
    by value (``Penalty`` equality ignores the coefficient, so ``==`` alone would prove nothing);
  * ``optimizers.get(Optimizer, total_steps=...)``: the run length reaches a schedule that has none, and never
    overwrites one that has it (rates compared with optax's cosine over the expected length).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from dlfund import optimizers, regularizers
from dlfund.models import MLP

# Kernels (a dense matrix and a 4-D conv kernel) next to 1-D biases and a normalization scale; random, so no entry
# is 0 (where |w| has no unique gradient) and a decayed bias would show.
_KEYS = jax.random.split(jax.random.key(0), 4)
PARAMS = {
    "conv": {"kernel": jax.random.normal(_KEYS[0], (3, 3, 2, 4)), "bias": jax.random.normal(_KEYS[1], (4,))},
    "dense": {"kernel": jax.random.normal(_KEYS[2], (4, 3)), "bias": jnp.full((3,), 0.7)},
    "norm": {"scale": jax.random.uniform(_KEYS[3], (3,), minval=0.5, maxval=1.5)},
}
# The library's default masks (optimizers.kernels_only): kernels only, i.e. ndim >= 2.
KERNEL_MASK = jax.tree.map(lambda p: p.ndim >= 2, PARAMS)


def _grads(i):
    key = jax.random.key(100 + i)
    return jax.tree.map(lambda p: jax.random.normal(key, p.shape) + 0.1 * i, PARAMS)


def _trajectory(tx, grads, steps):
    params, state, trace = PARAMS, tx.init(PARAMS), []
    for i in range(steps):
        updates, state = tx.update(grads(i), state, params)
        params = optax.apply_updates(params, updates)
        trace.append(params)
    return trace


def _assert_same_trajectory(ours, reference, grads=_grads, steps=6):
    for step, (a, b) in enumerate(zip(_trajectory(ours, grads, steps), _trajectory(reference, grads, steps))):
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=f"after step {step}")


# --- schedule options ---------------------------------------------------------------------------------------------


def test_cosine_alpha_option_sets_the_floor_like_optax():
    opt = optimizers.get("sgd", learning_rate=0.1, schedule="cosine", total_steps=100, schedule_options={"alpha": 0.1})
    reference = optax.cosine_decay_schedule(0.1, 100, alpha=0.1)
    # Past the end the rate must stay at alpha * peak = 0.01, not drop to 0 (alpha ignored).
    for step in (0, 1, 25, 50, 75, 99, 100, 150):
        np.testing.assert_allclose(opt.learning_rate_at(step), reference(step), rtol=1e-6, err_msg=f"step {step}")
    np.testing.assert_allclose(opt.learning_rate_at(100), 0.01, rtol=1e-6)


def test_cosine_alpha_reaches_the_update():
    """The floor is not only reported: with unit gradients SGD's bias update is -rate(step) of optax's schedule."""
    opt = optimizers.get("sgd", learning_rate=0.1, schedule="cosine", total_steps=4, schedule_options={"alpha": 0.5})
    reference = optax.cosine_decay_schedule(0.1, 4, alpha=0.5)
    ones = jax.tree.map(jnp.ones_like, PARAMS)
    state = opt.tx.init(PARAMS)
    for step in range(6):
        updates, state = opt.tx.update(ones, state, PARAMS)
        np.testing.assert_allclose(updates["dense"]["bias"], -reference(step), rtol=1e-6, err_msg=f"step {step}")


def test_exponential_staircase_option_decays_in_steps_like_optax():
    opt = optimizers.get(
        "sgd",
        learning_rate=0.1,
        schedule="exponential",
        schedule_options={"transition_steps": 10, "decay_rate": 0.1, "staircase": True},
    )
    reference = optax.exponential_decay(0.1, 10, 0.1, staircase=True)
    for step in (0, 1, 5, 9, 10, 15, 19, 20, 25):
        np.testing.assert_allclose(opt.learning_rate_at(step), reference(step), rtol=1e-6, err_msg=f"step {step}")
    # Within a stair the rate is flat (a smooth decay would already be lower at step 5).
    np.testing.assert_allclose(opt.learning_rate_at(5), 0.1, rtol=1e-6)
    np.testing.assert_allclose(opt.learning_rate_at(15), 0.01, rtol=1e-6)


# --- decoupled weight decay follows the schedule --------------------------------------------------------------------
# Convention pinned (dlfund.optimizers): decay is decoupled, ``update -= lr(step) * weight_decay * w`` after the
# optimizer's own update, with lr(step) the *scheduled* rate at the same step as the gradient update (step 0 first),
# and kernels only (ndim >= 2; biases and norm scales never decay).


def test_sgd_weight_decay_with_zero_gradients_shrinks_kernels_by_the_scheduled_rate():
    lr, wd, total = 0.1, 0.5, 8
    opt = optimizers.get("sgd", learning_rate=lr, schedule="cosine", total_steps=total, weight_decay=wd)
    schedule = optax.cosine_decay_schedule(lr, total)
    zero = jax.tree.map(jnp.zeros_like, PARAMS)
    params, state = PARAMS, opt.tx.init(PARAMS)
    for k in range(6):
        updates, state = opt.tx.update(zero, state, params)
        for layer in ("conv", "dense"):
            kernel = params[layer]["kernel"]
            np.testing.assert_allclose(
                updates[layer]["kernel"], -schedule(k) * wd * kernel, rtol=1e-5, err_msg=f"{layer} step {k}"
            )
            np.testing.assert_array_equal(updates[layer]["bias"], 0.0)
        np.testing.assert_array_equal(updates["norm"]["scale"], 0.0)
        params = optax.apply_updates(params, updates)
    # The decay must have slowed with the rate: step 5's rate is well below step 0's (guards a too-short run).
    assert float(schedule(5)) < 0.5 * float(schedule(0))


def test_sgd_weight_decay_with_a_schedule_matches_optax_add_decayed_weights_chain():
    lr, wd, total = 0.2, 0.3, 10
    schedule = optax.exponential_decay(lr, 3, 0.5)
    opt = optimizers.get(
        "sgd",
        learning_rate=lr,
        schedule="exponential",
        total_steps=total,
        weight_decay=wd,
        schedule_options={"transition_steps": 3, "decay_rate": 0.5},
    )
    # SGD: -lr_k * (g + wd * w) == -lr_k * g - lr_k * wd * w, the decoupled form.
    reference = optax.chain(optax.add_decayed_weights(wd, mask=KERNEL_MASK), optax.sgd(schedule))
    _assert_same_trajectory(opt.tx, reference)


def test_adam_weight_decay_with_a_cosine_schedule_matches_optax_adamw():
    lr, wd, total = 0.05, 0.2, 8
    opt = optimizers.get("adam", learning_rate=lr, schedule="cosine", total_steps=total, weight_decay=wd)
    reference = optax.adamw(optax.cosine_decay_schedule(lr, total), weight_decay=wd, mask=KERNEL_MASK)
    _assert_same_trajectory(opt.tx, reference)


def test_adam_weight_decay_during_warmup_starts_at_zero():
    """warmup_cosine's rate is 0 at step 0, so with zero gradients step 0 decays nothing and step 3 decays by the
    warm-up rate (a schedule frozen at step 0 would never decay)."""
    wd = 0.5
    opt = optimizers.get(
        "adam", learning_rate=0.1, schedule="warmup_cosine", total_steps=20, weight_decay=wd,
        schedule_options={"warmup_steps": 4},
    )  # fmt: skip
    schedule = optax.warmup_cosine_decay_schedule(0.0, 0.1, 4, 20)
    zero = jax.tree.map(jnp.zeros_like, PARAMS)
    params, state = PARAMS, opt.tx.init(PARAMS)
    for k in range(5):
        updates, state = opt.tx.update(zero, state, params)
        # Adam's own update of a zero gradient is 0, so only the decay moves the kernel.
        expected = -schedule(k) * wd * params["dense"]["kernel"]
        np.testing.assert_allclose(updates["dense"]["kernel"], expected, rtol=1e-5, atol=1e-8, err_msg=f"step {k}")
        params = optax.apply_updates(params, updates)
    assert float(schedule(3)) > 0.0


# --- get(Optimizer, total_steps=...) --------------------------------------------------------------------------------


def test_get_gives_an_optimizer_without_a_run_length_the_one_passed():
    bare = optimizers.Optimizer(name="sgd", learning_rate=0.1, schedule="cosine")
    filled = optimizers.get(bare, total_steps=100)
    assert filled.total_steps == 100
    reference = optax.cosine_decay_schedule(0.1, 100)
    for step in (0, 30, 60, 100):
        np.testing.assert_allclose(filled.learning_rate_at(step), reference(step), rtol=1e-6, err_msg=f"step {step}")


def test_get_keeps_the_run_length_an_optimizer_already_has():
    sized = optimizers.Optimizer(name="sgd", learning_rate=0.1, schedule="cosine", total_steps=20)
    kept = optimizers.get(sized, total_steps=100)
    assert kept.total_steps == 20
    reference = optax.cosine_decay_schedule(0.1, 20)
    for step in (0, 10, 20):
        np.testing.assert_allclose(kept.learning_rate_at(step), reference(step), rtol=1e-6, atol=1e-9)


# --- penalty defaults -----------------------------------------------------------------------------------------------
# Convention pinned (dlfund.regularizers): L2 is ``c * sum(w ** 2)`` (no 1/2), so its gradient is ``2 * c * w``;
# L1 is ``c * sum(|w|)``, gradient ``c * sign(w)``; both only on kernels (ndim >= 2) by default.


@pytest.fixture(scope="module")
def model_params():
    """A real MLP's parameters with batch norm (kernels, biases, BN scales and offsets), shifted off 0."""
    state = nnx.state(MLP(4, (8,), 3, batch_norm=True, rngs=nnx.Rngs(0)), nnx.Param)
    return jax.tree.map(lambda p: p + 0.25, state)


def _assert_gradient(penalty, params, kernel_gradient):
    grads = jax.grad(penalty)(params)
    leaves = jax.tree.leaves(params)
    assert any(p.ndim < 2 for p in leaves) and any(p.ndim >= 2 for p in leaves)
    for g, p in zip(jax.tree.leaves(grads), leaves):
        np.testing.assert_allclose(g, kernel_gradient(p) if p.ndim >= 2 else 0.0, rtol=1e-6, atol=0)


@pytest.mark.parametrize("make", [regularizers.L2, lambda: regularizers.get("l2")], ids=["L2()", "get('l2')"])
@pytest.mark.parametrize("params", ["dict", "mlp"])
def test_default_l2_gradient_is_2e_4_w_on_kernels_and_0_elsewhere(make, params, model_params):
    penalty = make()
    assert penalty.coefficient == 1e-4
    tree = PARAMS if params == "dict" else model_params
    _assert_gradient(penalty, tree, lambda w: 2 * 1e-4 * w)
    kernels = [p for p in jax.tree.leaves(tree) if p.ndim >= 2]
    expected = 1e-4 * sum(float(jnp.sum(k**2)) for k in kernels)
    assert float(penalty(tree)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("make", [regularizers.L1, lambda: regularizers.get("l1")], ids=["L1()", "get('l1')"])
@pytest.mark.parametrize("params", ["dict", "mlp"])
def test_default_l1_gradient_is_c_sign_w_on_kernels_and_spares_biases_and_scales(make, params, model_params):
    penalty = make()
    assert penalty.coefficient == 1e-5
    tree = PARAMS if params == "dict" else model_params
    _assert_gradient(penalty, tree, lambda w: 1e-5 * jnp.sign(w))


# --- describe() round trip ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [regularizers.L2, regularizers.L1])
@pytest.mark.parametrize("coefficient", [0.0, 3e-4, 0.37, 2.5, 1.5e-7, 1.2345678e-4])
def test_penalty_describe_round_trips_its_coefficient(make, coefficient):
    penalty = make(coefficient)
    again = regularizers.get(penalty.describe())
    # Penalty.__eq__ ignores the coefficient, so compare it and the penalty's value explicitly; exactly, since the
    # description is what config.json records and a resumed run rebuilds its penalty from.
    assert again == penalty and again.coefficient == coefficient
    np.testing.assert_allclose(again(PARAMS), penalty(PARAMS), rtol=1e-6)
    assert penalty.describe() != penalty.name  # a bare name would re-parse as the default strength
