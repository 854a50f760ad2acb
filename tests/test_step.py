"""The compiled step: same numbers as an unfused reference, vmappable, reproducible."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import dlfund
from dlfund.models import MLP
from dlfund.train import execution
from dlfund.train import state as state_lib

X = jax.random.normal(jax.random.key(0), (16, 6))
Y = jax.random.randint(jax.random.key(1), (16,), 0, 3)


def make_state(seed=0, activation="relu", **kwargs):
    model = MLP(6, (8,), 3, activation=activation, rngs=nnx.Rngs(seed))
    options = {"optimizer": "adam", "learning_rate": 0.01, "key": jax.random.key(seed), **kwargs}
    return model, dlfund.create_train_state(model, **options)


def leaves_close(a, b, **tol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, **tol)


def test_fused_step_equals_unfused_reference():
    model, state = make_state(regularizers=("l2:1e-3",))
    new_state, measurements = dlfund.train_step(state, (X, Y))

    # Reference: separate, eager calls through the NNX API: forward, loss, grad, then the optax update.
    def objective(m):
        data = optax.softmax_cross_entropy_with_integer_labels(m(X), Y).mean()
        kernels = [p for p in jax.tree.leaves(nnx.state(m, nnx.Param)) if p.ndim >= 2]
        return data + 1e-3 * sum(jnp.sum(k**2) for k in kernels), data

    (_, data_loss), grads = nnx.value_and_grad(objective, has_aux=True)(model)
    params = nnx.state(model, nnx.Param)
    tx = optax.adam(0.01)
    updates, _ = tx.update(grads, tx.init(params), params)
    expected = optax.apply_updates(params, updates)

    leaves_close(new_state.params, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(measurements["loss"], data_loss, rtol=1e-6)
    np.testing.assert_allclose(measurements["grad_norm"], optax.tree.norm(grads), rtol=1e-5)
    assert int(new_state.step) == 1
    np.testing.assert_allclose(measurements["learning_rate"], 0.01)


def test_gradient_matches_finite_differences():
    # The loss the step differentiates, as a function of one kernel entry, against a central difference
    # (tanh: smooth, so the difference quotient has no kink to straddle).
    _, state = make_state(activation="tanh")

    leaves, treedef = jax.tree.flatten(state.params)
    which = next(i for i, leaf in enumerate(leaves) if leaf.shape == (6, 8))

    def loss_at(delta):
        moved = [leaf.at[2, 3].add(delta) if i == which else leaf for i, leaf in enumerate(leaves)]
        params = jax.tree.unflatten(treedef, moved)
        outputs, _ = state.replace(params=params).apply(X, train=True, key=jax.random.key(0))
        return state.objective.loss(outputs, Y).mean()

    analytic = jax.grad(loss_at)(0.0)
    eps = 1e-2
    numeric = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, rtol=2e-2, atol=1e-5)


def test_vmap_over_two_seeds_equals_two_separate_steps():
    _, a = make_state(0)
    _, b = make_state(1)
    stacked = jax.tree.map(lambda u, v: jnp.stack([u, v]), a, b)
    batched, batched_measurements = jax.vmap(dlfund.train_step, in_axes=(0, None))(stacked, (X, Y))
    for i, seed in enumerate((0, 1)):
        _, single = make_state(seed)  # fresh: the step donates its input
        expected, measurements = dlfund.train_step(single, (X, Y))
        leaves_close(jax.tree.map(lambda t, i=i: t[i], batched.params), expected.params, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(batched_measurements["loss"][i], measurements["loss"], rtol=1e-6)


def test_step_donates_its_input_state():
    _, state = make_state()
    dlfund.train_step(state, (X, Y))
    with pytest.raises(RuntimeError, match=r"deleted|donated"):
        np.asarray(jax.tree.leaves(state.params)[0])


def test_user_model_is_not_invalidated_by_donation():
    model, state = make_state()
    dlfund.train_step(state, (X, Y))
    assert model(X).shape == (16, 3)


def test_dropout_key_depends_on_step_and_eval_is_deterministic():
    model = MLP(6, (32,), 3, dropout=0.5, rngs=nnx.Rngs(0))
    state = dlfund.create_train_state(model, key=jax.random.key(0))
    first = state.apply(X, train=True, key=jax.random.fold_in(state.key, 0))[0]
    second = state.apply(X, train=True, key=jax.random.fold_in(state.key, 1))[0]
    assert not np.allclose(first, second)
    out = dlfund.eval_step(state, (X, Y))
    np.testing.assert_array_equal(out.outputs, dlfund.eval_step(state, (X, Y)).outputs)
    assert out.losses.shape == (16,)


def test_batch_norm_statistics_thread_through_the_step():
    model = MLP(6, (8,), 3, batch_norm=True, rngs=nnx.Rngs(0))
    state = dlfund.create_train_state(model, key=jax.random.key(0))
    before = jax.tree.map(np.asarray, state.model_state)
    state, _ = dlfund.train_step(state, (X * 4 + 2, Y))
    moved = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state.model_state))]
    assert any(moved)
    after_train = jax.tree.map(np.asarray, state.model_state)
    dlfund.eval_step(state, (X, Y))  # evaluation reads, never writes, the statistics
    leaves_close(after_train, state.model_state)


def test_scan_and_loop_strategies_compute_the_same_epoch():
    metrics = (dlfund.metrics.get_metric("loss", 3), dlfund.metrics.get_metric("accuracy", 3))
    results = {}
    for name, run in (("scan", execution.scan_epoch), ("loop", execution.loop_epoch), ("chunk", execution.chunk_epoch)):
        _, state = make_state()
        results[name] = run(state, (X, Y), jax.random.key(5), batch_size=4, metrics=metrics)
    scan, loop = results["scan"], results["loop"]
    leaves_close(scan.state.params, loop.state.params, rtol=1e-5, atol=1e-6)
    assert "grad_norm" not in scan.measurements  # the unguarded fast path skips the gradient norm
    assert set(loop.measurements) == set(scan.measurements)
    for name in scan.measurements:
        np.testing.assert_allclose(scan.measurements[name], loop.measurements[name], rtol=1e-5, atol=1e-6)
    leaves_close(scan.metrics, loop.metrics, rtol=1e-5, atol=1e-6)
    assert scan.measurements["loss"].shape == (4,)
    chunk = results["chunk"]  # 4 steps: with CHUNK_STEPS = 8, all run one by one; same numbers as the loop
    leaves_close(chunk.state.params, loop.state.params, rtol=0, atol=0)


def test_nonfinite_step_is_not_applied_and_halts_the_epoch():
    metrics = (dlfund.metrics.get_metric("loss", 3),)
    x = X.at[9].set(jnp.nan)  # batch 2 of 4 (in order) contains a NaN
    _, state = make_state()
    order = jnp.arange(16).reshape(4, 4)
    carry = execution._initial_carry(state, metrics)
    for i in range(4):
        carry, m = execution.guarded_step(metrics, carry, (x[order[i]], Y[order[i]]))
        assert np.isfinite(m["loss"]) == (i != 2)
    final, _, halted = carry
    assert bool(halted) and int(final.step) == 2  # steps 1 and 2 applied; the NaN step and the rest skipped
    assert all(np.isfinite(np.asarray(p)).all() for p in jax.tree.leaves(final.params))


def test_a_failed_scan_epoch_is_replayed_up_to_the_bad_step():
    metrics = (dlfund.metrics.get_metric("loss", 3), dlfund.metrics.get_metric("accuracy", 3))
    order = np.asarray(execution.epoch_order(jax.random.key(5), 16, 4))
    x = X.at[int(order[2, 1])].set(jnp.inf)  # in the 3rd batch: steps 1 and 2 apply, step 3 fails
    results = {}
    for name, run in (("scan", execution.scan_epoch), ("loop", execution.loop_epoch), ("chunk", execution.chunk_epoch)):
        _, state = make_state()
        results[name] = run(state, (x, Y), jax.random.key(5), batch_size=4, metrics=metrics)
    scan, loop = results["scan"], results["loop"]
    assert bool(scan.halted) and bool(loop.halted) and bool(results["chunk"].halted)
    assert int(scan.state.step) == int(loop.state.step) == int(results["chunk"].state.step) == 2
    assert "grad_norm" in scan.measurements  # the guarded replay measures it
    leaves_close(scan.state.params, loop.state.params, rtol=1e-5, atol=1e-6)
    leaves_close(scan.metrics, loop.metrics, rtol=1e-5, atol=1e-6)
    assert all(np.isfinite(np.asarray(p)).all() for p in jax.tree.leaves(scan.state.params))


def test_train_state_is_a_pytree_with_static_configuration():
    _, a = make_state(0)
    _, b = make_state(1)
    assert jax.tree.structure(a) == jax.tree.structure(b)  # equal configs -> one compiled program
    # The learning rate and weight decay are values in the optimizer state, not part of the program...
    _, c = make_state(0, learning_rate=0.02)
    assert jax.tree.structure(a) == jax.tree.structure(c)
    assert float(c.opt_state.hyperparams["learning_rate"]) == pytest.approx(0.02)
    assert float(a.opt_state.hyperparams["learning_rate"]) != pytest.approx(0.02)
    # ...other settings are: another optimizer option, schedule or clipping compiles another program.
    for changed in ({"b1": 0.5}, {"clip_norm": 1.0}, {"weight_decay": 1e-4}):
        _, d = make_state(0, **changed)
        assert jax.tree.structure(a) != jax.tree.structure(d), changed
    assert isinstance(a.objective, state_lib.Objective)


def test_fit_model_does_not_share_buffers_with_the_returned_state():
    """fit copies the trained weights into the model: a later step that donates result.state leaves it usable."""
    model = MLP(6, (8,), 3, rngs=nnx.Rngs(0))
    result = dlfund.fit(model, (np.asarray(X), np.asarray(Y)), epochs=2, batch_size=8, progress=False)
    before = model(X)
    dlfund.train_step(result.state, (X, Y))
    np.testing.assert_array_equal(model(X), before)
