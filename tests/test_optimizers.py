import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dlfund import optimizers

PARAMS = {"dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}}


def _grads(i):
    key = jax.random.key(i)
    return jax.tree.map(lambda p: jax.random.normal(key, p.shape) + 0.1 * i, PARAMS)


def _run(tx, steps=5):
    params, state, trace = PARAMS, tx.init(PARAMS), []
    for i in range(steps):
        updates, state = tx.update(_grads(i), state, params)
        params = optax.apply_updates(params, updates)
        trace.append(params)
    return trace


def assert_same_trajectory(ours, reference):
    for a, b in zip(_run(ours), _run(reference)):
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


CLAIMS = {
    "sgd": lambda lr: optax.sgd(lr),
    "momentum": lambda lr: optax.sgd(lr, momentum=0.9),
    "nesterov": lambda lr: optax.sgd(lr, momentum=0.9, nesterov=True),
    "rmsprop": lambda lr: optax.rmsprop(lr),
    "adam": lambda lr: optax.adam(lr),
    "adamw": lambda lr: optax.adamw(lr, weight_decay=0.0),
    "adagrad": lambda lr: optax.adagrad(lr),
}


def test_every_optimizer_name_is_claimed():
    assert set(optimizers.OPTIMIZERS.names()) == set(CLAIMS)


@pytest.mark.parametrize("name", sorted(CLAIMS))
def test_optimizer_builds_the_optax_transformation_it_claims(name):
    assert_same_trajectory(optimizers.get(name, learning_rate=0.05).tx, CLAIMS[name](0.05))


def test_optimizer_options_reach_optax():
    assert_same_trajectory(optimizers.get("adam", learning_rate=0.01, b1=0.5).tx, optax.adam(0.01, b1=0.5))
    assert_same_trajectory(
        optimizers.get("momentum", learning_rate=0.01, momentum=0.5).tx, optax.sgd(0.01, momentum=0.5)
    )


def test_adamw_weight_decay_is_optax_adamw_with_kernel_mask():
    mask = {"dense": {"kernel": True, "bias": False}}
    assert_same_trajectory(
        optimizers.get("adamw", learning_rate=0.01, weight_decay=0.1).tx,
        optax.adamw(0.01, weight_decay=0.1, mask=mask),
    )


def test_decoupled_weight_decay_for_adam_equals_adamw():
    assert_same_trajectory(
        optimizers.get("adam", learning_rate=0.01, weight_decay=0.1).tx,
        optimizers.get("adamw", learning_rate=0.01, weight_decay=0.1).tx,
    )


def test_decoupled_weight_decay_skips_biases_and_follows_the_schedule():
    tx = optimizers.get("sgd", learning_rate=0.1, weight_decay=0.5).tx
    zero = jax.tree.map(jnp.zeros_like, PARAMS)
    updates, _ = tx.update(zero, tx.init(PARAMS), PARAMS)
    np.testing.assert_allclose(updates["dense"]["kernel"], -0.1 * 0.5 * PARAMS["dense"]["kernel"])
    np.testing.assert_array_equal(updates["dense"]["bias"], 0.0)


def test_clipping_matches_optax_chain():
    assert_same_trajectory(
        optimizers.get("sgd", learning_rate=0.1, clip_norm=0.5).tx,
        optax.chain(optax.clip_by_global_norm(0.5), optax.sgd(0.1)),
    )


SCHEDULE_CLAIMS = {
    "constant": lambda: optax.constant_schedule(0.1),
    "cosine": lambda: optax.cosine_decay_schedule(0.1, 100),
    "warmup_cosine": lambda: optax.warmup_cosine_decay_schedule(0.0, 0.1, 5, 100),
    "exponential": lambda: optax.exponential_decay(0.1, 100, 0.1),
    "step": lambda: optax.piecewise_constant_schedule(0.1, {50: 0.1, 75: 0.1}),
}


@pytest.mark.parametrize("name", sorted(SCHEDULE_CLAIMS))
def test_schedules_match_optax(name):
    opt = optimizers.get("sgd", learning_rate=0.1, schedule=name, total_steps=100)
    reference = SCHEDULE_CLAIMS[name]()
    for step in (0, 1, 4, 5, 20, 49, 50, 74, 75, 99, 100):
        np.testing.assert_allclose(opt.learning_rate_at(step), reference(step), rtol=1e-6, err_msg=f"step {step}")


@pytest.mark.parametrize("name", sorted(SCHEDULE_CLAIMS))
def test_every_schedule_takes_its_peak_as_an_array_under_jit(name):
    """The peak rate lives in the optimizer state, so each schedule must take a traced peak (optax's own
    warmup_cosine does not: it compares the peak in Python)."""
    opt = optimizers.get("sgd", learning_rate=0.1, schedule=name, total_steps=100)
    rate = jax.jit(lambda state, step: opt.rate(state, step))
    state = opt.tx.init(PARAMS)
    for step in (0, 3, 5, 60, 99):
        np.testing.assert_allclose(rate(state, step), opt.learning_rate_at(step), rtol=1e-6)
    other = optimizers.get("sgd", learning_rate=0.3, schedule=name, total_steps=100)
    assert other == opt  # the same program...
    np.testing.assert_allclose(rate(other.tx.init(PARAMS), 60), 3 * opt.learning_rate_at(60), rtol=1e-6)  # ...x3


def test_warmup_cosine_with_an_end_value_matches_optax():
    opt = optimizers.get("adam", learning_rate=0.2, schedule="warmup_cosine", total_steps=50,
                         schedule_options={"warmup_steps": 7, "end_value": 0.01})  # fmt: skip
    reference = optax.warmup_cosine_decay_schedule(0.0, 0.2, 7, 50, 0.01)
    for step in range(0, 60, 3):
        np.testing.assert_allclose(opt.learning_rate_at(step), reference(step), rtol=1e-6, err_msg=f"step {step}")
    with pytest.raises(ValueError, match="warmup_steps < decay_steps"):
        optimizers.get("adam", schedule="warmup_cosine", total_steps=5, schedule_options={"warmup_steps": 5})


def test_schedule_drives_the_update():
    opt = optimizers.get("sgd", learning_rate=1.0, schedule="cosine", total_steps=10)
    ones = jax.tree.map(jnp.ones_like, PARAMS)
    state = opt.tx.init(PARAMS)
    for step in range(3):
        updates, state = opt.tx.update(ones, state, PARAMS)
        np.testing.assert_allclose(updates["dense"]["bias"], -opt.learning_rate_at(step), rtol=1e-6)


def test_schedule_options_and_missing_run_length():
    opt = optimizers.get("sgd", learning_rate=1.0, schedule="step", schedule_options={"boundaries": (2,)})
    assert float(opt.learning_rate_at(3)) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="total_steps"):
        optimizers.get("sgd", schedule="cosine")


def test_equal_settings_are_equal_values():
    a = optimizers.get("adam", learning_rate=1e-3, total_steps=100)
    b = optimizers.get("adam", learning_rate=1e-3, total_steps=200)
    assert a == b and hash(a) == hash(b)  # a constant schedule does not depend on the run length
    assert optimizers.get("adam", schedule="cosine", total_steps=100) != optimizers.get(
        "adam", schedule="cosine", total_steps=200
    )


def test_custom_optax_transformation_is_wrapped():
    opt = optimizers.get(optax.sgd(0.3), learning_rate=0.3)
    assert float(opt.learning_rate_at(0)) == pytest.approx(0.3)
    assert_same_trajectory(opt.tx, optax.sgd(0.3))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"optimizer": "adma"}, "Known optimizers.*adam"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"schedule": "cosin"}, "Known schedules"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"clip_norm": 0.0}, "clip_norm"),
        ({"betas": 0.9}, "does not take"),
        # each error names the part at fault: both of these once blamed "schedule 'constant'"
        ({"mu_dtype": "float33"}, "^optimizer 'adam': data type 'float33'"),
        ({"optimizer": "nesterov", "nesterov": False}, "'nesterov' does not take \\['nesterov'\\]"),
        ({"schedule": "cosine", "total_steps": 9, "schedule_options": {"floor": 0.1}}, "^schedule 'cosine': .*floor"),
    ],
)
def test_bad_settings_give_clear_errors(kwargs, match):
    kwargs = {"optimizer": "adam", **kwargs}
    with pytest.raises(ValueError, match=match):
        optimizers.get(kwargs.pop("optimizer"), **kwargs)


def test_numpy_numbers_are_numbers():
    # np.float32 values (a sweep's np.arange, say) were refused as "must be a positive number"
    opt = optimizers.get("adam", learning_rate=np.float64(0.01), clip_norm=np.float32(1.0))
    assert (opt.learning_rate, opt.clip_norm) == (0.01, 1.0)
    assert type(opt.learning_rate) is float and type(opt.clip_norm) is float


def test_a_step_boundary_given_twice_multiplies_twice():
    opt = optimizers.get("sgd", learning_rate=1.0, schedule="step", schedule_options={"boundaries": (2, 2, 4)})
    rates = [float(opt.learning_rate_at(s)) for s in (1, 2, 4)]
    np.testing.assert_allclose(rates, [1.0, 0.01, 0.001], rtol=1e-6)  # the repeat at 2 once counted once: 0.1


def test_list_options_from_config_files_are_accepted():
    opt = optimizers.get("sgd", learning_rate=1.0, schedule="step", schedule_options={"boundaries": [2, 4]})
    assert hash(opt) and float(opt.learning_rate_at(5)) == pytest.approx(0.01)
