"""The training core against independent oracles, written to catch one-line bugs the other tests let through.

Each test recomputes what the core should produce by another route:

- a hand-written SGD loop over an NNX model (``nnx.grad`` and ``p - lr * g``), with the dropout key derived as the
  step documents it (``split(fold_in(key, step))[0]``, then one split per micro-batch), for the step's keys and
  gradient accumulation;
- NumPy for batch-norm running statistics (``m * mean + (1 - m) * batch_mean`` per micro-batch), the L2 penalty,
  the mean loss and the global gradient norm;
- the Optax schedule itself for the learning rate each step used;
- scikit-learn's ``accuracy_score``, ``log_loss`` and ``confusion_matrix`` on the model's own outputs for
  evaluation over splits whose last batch is padded;
- the input checks' documented contracts, called directly (a batch as large as the set is not warned about, a
  multi-label row is not one-hot, non-finite regression targets and streamed inputs are refused).
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from sklearn import metrics as sk_metrics

import dlfund
from dlfund.losses import get as get_loss
from dlfund.models import MLP
from dlfund.train import checks
from dlfund.train import evaluation as evaluation_lib
from dlfund.train.step import finite, train_step, train_step_with_outputs

RNG = np.random.default_rng(0)
X = RNG.normal(size=(16, 6)).astype(np.float32)
Y = RNG.integers(0, 3, size=16).astype(np.int32)
LR = 0.1


def mlp(seed=0, **options):
    return MLP(6, (8,), 3, rngs=nnx.Rngs(seed), **options)


def sgd_state(model, **options):
    return dlfund.create_train_state(model, optimizer="sgd", learning_rate=LR, key=jax.random.key(7), **options)


def cross_entropy(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def reference_sgd(model, batches, key, *, k=1):
    """Plain SGD on a copy of ``model``: for step s, dropout key ``split(fold_in(key, s))[0]``; with k
    micro-batches, ``split`` of that key gives micro-batch i its key and the gradients are averaged."""
    model = nnx.clone(model)
    model.train()
    for step, (x, y) in enumerate(batches):
        dropout_key = jax.random.split(jax.random.fold_in(key, step))[0]
        keys = jax.random.split(dropout_key, k) if k > 1 else [dropout_key]
        total = None
        for xi, yi, ki in zip(np.split(x, k), np.split(y, k), keys, strict=True):
            grads = nnx.grad(lambda m, xi=xi, yi=yi, ki=ki: cross_entropy(m(xi, rngs=ki), yi).mean())(model)
            total = grads if total is None else jax.tree.map(jnp.add, total, grads)
        params = nnx.state(model, nnx.Param)
        nnx.update(model, jax.tree.map(lambda p, g: p - LR * g / k, params, total))
    return nnx.state(model, nnx.Param)


def assert_params_close(state, expected):
    got = jax.tree.leaves(state.params)
    want = jax.tree.leaves(expected)
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_each_step_drops_out_with_the_key_folded_with_its_step_number():
    # Two steps with dropout: a key that ignored the step (or took the augmentation half of the split) would drop
    # other units than the reference, which derives each step's key as documented.
    model = mlp(dropout=0.5)
    state = sgd_state(model)
    batches = [(X, Y), (X[::-1].copy(), Y[::-1].copy())]
    expected = reference_sgd(model, batches, jax.random.key(7))
    for batch in batches:
        state, _ = train_step(state, batch)
    assert int(state.step) == 2
    assert_params_close(state, expected)


def test_micro_batches_each_get_their_own_dropout_key():
    # Gradient accumulation with dropout: micro-batch i uses split(dropout_key, k)[i]; one key for all would
    # reuse one dropout mask for every micro-batch.
    model = mlp(dropout=0.5)
    state = sgd_state(model, accumulate_steps=4)
    expected = reference_sgd(model, [(X, Y)], jax.random.key(7), k=4)
    state, _ = train_step(state, (X, Y))
    assert_params_close(state, expected)


def test_accumulated_step_measures_the_whole_batch():
    # k = 4 micro-batches, L2 penalty: the step's loss is the mean over all 16 examples (not one micro-batch's),
    # the penalty is counted once (not once per micro-batch), the gradient norm is the whole batch's, and the
    # per-example outputs and losses come back in batch order.
    model = mlp()
    state = sgd_state(model, accumulate_steps=4, regularizers=("l2:0.01",))
    kernels = [np.asarray(model.dense[0].kernel[...]), np.asarray(model.head.kernel[...])]
    logits = np.asarray(model(X))  # no dropout or batch norm: training and inference forward passes agree
    losses = np.asarray(cross_entropy(logits, Y))

    def objective(m):
        data = cross_entropy(m(X), Y).mean()
        return data + 0.01 * (jnp.sum(m.dense[0].kernel[...] ** 2) + jnp.sum(m.head.kernel[...] ** 2))

    grads = nnx.grad(objective)(model)
    grad_norm = np.sqrt(sum(np.sum(np.square(np.asarray(g))) for g in jax.tree.leaves(grads)))

    new_state, measurements, outputs = jax.jit(train_step_with_outputs)(state, (X, Y))
    np.testing.assert_allclose(measurements["loss"], losses.mean(), rtol=1e-5)
    np.testing.assert_allclose(measurements["penalty"], 0.01 * sum(np.sum(k**2) for k in kernels), rtol=1e-5)
    np.testing.assert_allclose(measurements["grad_norm"], grad_norm, rtol=1e-5)
    np.testing.assert_allclose(outputs.outputs, logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outputs.losses, losses, rtol=1e-5, atol=1e-6)
    expected = jax.tree.map(lambda p, g: p - LR * g, nnx.state(model, nnx.Param), grads)
    assert_params_close(new_state, expected)


@pytest.mark.parametrize("k", [1, 2])
def test_batch_norm_running_mean_moves_once_per_micro_batch(k):
    # NumPy oracle: the first batch-norm layer (after a bias-free dense layer) starts at mean 0 and moves as
    # mean <- m * mean + (1 - m) * batch_mean(x_i @ W) for each micro-batch x_i in order.
    model = mlp(batch_norm=True)
    momentum = float(model.norms[0].momentum)
    kernel = np.asarray(model.dense[0].kernel[...], np.float64)
    expected = np.zeros(8)
    for xi in np.split(X.astype(np.float64), k):
        expected = momentum * expected + (1 - momentum) * (xi @ kernel).mean(axis=0)
    state, _ = train_step(sgd_state(model, accumulate_steps=k), (X, Y))
    np.testing.assert_allclose(np.asarray(state.model().norms[0].mean[...]), expected, rtol=1e-4, atol=1e-6)


def test_each_step_reports_and_uses_its_scheduled_learning_rate():
    # Optax's cosine schedule is the oracle: step s (counting from 0) reports rate(s) and moves the weights by
    # rate(s) * gradient; the state's learning_rate is the rate of the step about to run.
    schedule = optax.cosine_decay_schedule(LR, 4)
    model = mlp()
    state = sgd_state(model, schedule="cosine", total_steps=4)
    reference = nnx.clone(model)
    for step in range(3):
        np.testing.assert_allclose(state.learning_rate, schedule(step), rtol=1e-6)
        grads = nnx.grad(lambda m: cross_entropy(m(X), Y).mean())(reference)
        params = nnx.state(reference, nnx.Param)
        nnx.update(reference, jax.tree.map(lambda p, g, s=step: p - schedule(s) * g, params, grads))
        state, measurements = train_step(state, (X, Y))
        np.testing.assert_allclose(measurements["learning_rate"], schedule(step), rtol=1e-6)
    assert_params_close(state, nnx.state(reference, nnx.Param))


def test_a_step_is_kept_only_when_both_loss_and_gradient_norm_are_finite():
    # The predicate on its own: either a non-finite loss or a non-finite gradient norm rejects the step.
    for loss, norm, ok in [(1.0, 2.0, True), (np.nan, 2.0, False), (1.0, np.inf, False), (np.inf, np.nan, False)]:
        assert bool(finite({"loss": jnp.float32(loss), "grad_norm": jnp.float32(norm)})) is ok, (loss, norm)


def softmax(logits):
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("batch_size", [8, 1024])
def test_evaluate_counts_each_example_once_when_the_last_batch_is_padded(batch_size):
    # 37 examples: the last batch is padded with copies of the last example, which must weigh nothing.
    # scikit-learn on the model's own outputs is the oracle.
    rng = np.random.default_rng(3)
    x = rng.normal(size=(37, 6)).astype(np.float32)
    y = rng.integers(0, 3, size=37)
    model = mlp(seed=1)
    logits = np.asarray(model(x), np.float64)
    predicted = logits.argmax(axis=1)
    result = dlfund.evaluate(model, (x, y), metrics=("loss", "accuracy", "confusion_matrix"), batch_size=batch_size)
    assert result["num_examples"] == 37
    assert result["accuracy"] == pytest.approx(sk_metrics.accuracy_score(y, predicted), abs=1e-6)
    assert result["loss"] == pytest.approx(sk_metrics.log_loss(y, softmax(logits), labels=[0, 1, 2]), rel=1e-5)
    assert result["confusion_matrix"] == sk_metrics.confusion_matrix(y, predicted, labels=[0, 1, 2]).tolist()
    np.testing.assert_allclose(dlfund.predict(model, x, batch_size=batch_size), logits, rtol=1e-5, atol=1e-6)


def test_evaluate_arrays_reads_a_ragged_last_batch_and_ignores_rows_past_num_examples():
    # 37 rows in batches of 16 (the last one ragged), of which the first 30 count: the metrics are those of x[:30].
    rng = np.random.default_rng(4)
    x = rng.normal(size=(37, 6)).astype(np.float32)
    y = rng.integers(0, 3, size=37).astype(np.int32)
    model = mlp(seed=2)
    state = sgd_state(model)
    metrics = (dlfund.metrics.get_metric("loss", 3), dlfund.metrics.get_metric("accuracy", 3))
    logits = np.asarray(model(x), np.float64)
    for count in (37, 30):
        loss, accuracy = evaluation_lib.evaluate_arrays(
            state, x, y, batch_size=16, metrics=metrics, num_examples=None if count == 37 else count
        )
        expected_loss = sk_metrics.log_loss(y[:count], softmax(logits[:count]), labels=[0, 1, 2])
        assert float(loss) == pytest.approx(expected_loss, rel=1e-5), count
        assert float(accuracy) == pytest.approx(sk_metrics.accuracy_score(y[:count], logits[:count].argmax(1)))


def blobs(n, seed):
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(0).normal(scale=2.0, size=(3, 6))
    y = rng.integers(0, 3, size=n).astype(np.int32)
    return (centers[y] + rng.normal(size=(n, 6))).astype(np.float32), y


def test_fit_history_reports_the_last_steps_rate_and_the_final_weights_validation():
    # Cosine decay over 3 epochs of 4 steps: epoch e's learning_rate column is the rate its last step used,
    # optax's schedule at step 4e - 1; the last epoch's validation metrics are those of the returned weights
    # (evaluated again, independently, with scikit-learn).
    train, val = blobs(64, 1), blobs(20, 2)
    result = dlfund.fit(mlp(), train, validation_data=val, epochs=3, batch_size=16, optimizer="sgd",
                        learning_rate=LR, schedule="cosine", progress=False)  # fmt: skip
    schedule = optax.cosine_decay_schedule(LR, 12)
    np.testing.assert_allclose(result.history["learning_rate"], [schedule(4 * e - 1) for e in (1, 2, 3)], rtol=1e-6)
    logits = np.asarray(result.model(val[0]), np.float64)
    expected = sk_metrics.log_loss(val[1], softmax(logits), labels=[0, 1, 2])
    assert result.history["val_loss"][-1] == pytest.approx(expected, rel=1e-5)
    assert result.history["val_accuracy"][-1] == pytest.approx(sk_metrics.accuracy_score(val[1], logits.argmax(1)))


def test_the_step_uses_the_label_smoothing_amount_held_in_the_state():
    # The smoothing amount is a value in state.hyper (so one program serves every amount): a state given another
    # amount computes optax's cross-entropy with labels smoothed by that amount, not by the loss's own.
    loss = dlfund.losses.get("softmax_cross_entropy", label_smoothing=0.1)
    model = mlp()
    state = dlfund.create_train_state(model, loss=loss, key=jax.random.key(0))
    state = state.replace(hyper={**state.hyper, "label_smoothing": jnp.float32(0.3)})
    logits = model(X)
    smoothed = optax.smooth_labels(jax.nn.one_hot(Y, 3), 0.3)
    np.testing.assert_allclose(
        dlfund.eval_step(state, (X, Y)).losses, optax.softmax_cross_entropy(logits, smoothed), rtol=1e-5
    )


def test_a_batch_exactly_the_size_of_the_training_set_is_used_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert checks.effective_batch_size(32, 32) == 32
    with pytest.warns(UserWarning, match="larger than the 32 training examples"):
        assert checks.effective_batch_size(33, 32) == 32


def test_input_checks_refuse_what_the_loss_cannot_take():
    softmax_ce, mse = get_loss("softmax_cross_entropy"), get_loss("mse")
    # Two 1s in a row is not one-hot (a multi-label row): the message is about the shape, not about one-hot.
    with pytest.raises(ValueError, match=r"must have shape \[N\]"):
        checks.check_targets("train", np.array([[1, 1], [0, 1]]), softmax_ce, 2)
    with pytest.raises(ValueError, match="look one-hot"):
        checks.check_targets("train", np.array([[1, 0], [0, 1]]), softmax_ce, 2)
    # A softmax over one output ([N, 1] as much as [N]) is always 1.
    for shape in ((4, 1), (4,)):
        with pytest.raises(ValueError, match="one output per example"):
            checks.check_loss_fits_outputs(softmax_ce, shape)
    checks.check_loss_fits_outputs(softmax_ce, (4, 2))
    # Regression targets must be finite; streamed inputs too.
    with pytest.raises(ValueError, match="targets contain NaN/Inf"):
        checks.check_targets("train", np.array([0.5, np.nan]), mse, None)
    with pytest.raises(ValueError, match="streamed batch"):
        checks.check_batch("train", mse, None, np.array([[np.inf, 0.0]]), np.array([1.0]))
    x, y = checks.check_batch("train", softmax_ce, 3, np.ones((2, 2), np.float64), np.array([0, 2]))
    assert x.dtype == np.float32 and y.dtype == np.int32
