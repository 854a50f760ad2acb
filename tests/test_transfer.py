"""Transfer learning: freezing, discriminative learning rates, head replacement, features and normalization."""

import dataclasses
import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import dlfund
from dlfund.train.step import train_step_with_outputs

X = np.random.default_rng(0).normal(size=(64, 8, 8, 1)).astype(np.float32)
Y = (np.arange(64) % 3).astype(np.int32)


def small_cnn(num_classes=3, seed=0, **options):
    return dlfund.models.CNN(
        (8, 8, 1),
        channels=(4, 8),
        dense=(16,),
        num_classes=num_classes,
        batch_norm=True,
        rngs=nnx.Rngs(seed),
        **options,
    )


def weights(model):
    return dlfund.weights.flat_arrays(model)


def changed(before, after):
    """The sorted names of the weights that differ between two ``weights(model)`` snapshots."""
    return sorted(name for name in before if not np.array_equal(before[name], after[name]))


def count_ops(jaxpr, primitive):
    """Equations of ``primitive`` in a jaxpr and every jaxpr nested in it (jit, scan, custom_vjp, ...)."""
    total = 0
    for eqn in jaxpr.eqns:
        total += eqn.primitive.name == primitive
        for value in eqn.params.values():
            for inner in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(inner, "jaxpr", inner)
                if hasattr(inner, "eqns"):
                    total += count_ops(inner, primitive)
    return total


# --- freezing ---------------------------------------------------------------------------------------------------


def test_param_paths_name_every_parameter_as_weights_files_do():
    model = dlfund.models.MLP(4, (8,), 3, rngs=nnx.Rngs(0))
    assert dlfund.param_paths(model) == ["dense/0/bias", "dense/0/kernel", "head/bias", "head/kernel"]
    # Batch statistics are weights but not parameters.
    cnn = small_cnn()
    assert "norms/0/mean" in weights(cnn) and "norms/0/mean" not in dlfund.param_paths(cnn)


def test_a_frozen_backbone_and_its_batch_norm_statistics_stay_bit_identical_under_adamw_and_l2():
    model = small_cnn()
    before = weights(model)
    result = dlfund.fit(
        model,
        (X, Y),
        epochs=3,
        batch_size=16,
        optimizer="adamw",
        weight_decay=0.5,
        regularizers=("l2:0.1",),
        learning_rate=1e-2,
        freeze="backbone",
        progress=False,
    )
    after = weights(model)
    assert changed(before, after) == ["head/bias", "head/kernel"]
    assert result.config["frozen"] == [p for p in dlfund.param_paths(model) if not p.startswith("head")]
    assert result.config["held_batch_norms"] == ["norms/0", "norms/1"]


def test_the_l2_penalty_covers_the_trained_parameters_only():
    model = small_cnn()
    state = dlfund.create_train_state(model, key=jax.random.key(0), regularizers=("l2:0.1",), freeze="backbone")
    head_kernel = np.asarray(model.head.kernel[...], np.float64)
    _, measurements = dlfund.train_step(state, (X[:16], Y[:16]))
    # "l2:c" is c * sum(w ** 2) over kernels: here the head's kernel alone (biases are not penalized).
    np.testing.assert_allclose(float(measurements["penalty"]), 0.1 * np.sum(head_kernel**2), rtol=1e-5)


@pytest.mark.parametrize(
    "options",
    [
        dict(execution="loop"),
        dict(execution="chunk"),
        dict(data_placement="stream"),
        dict(accumulate_steps=2),
        dict(precision="bfloat16"),
    ],
)
def test_every_epoch_strategy_keeps_the_frozen_part_fixed(options):
    model = small_cnn()
    before = weights(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # bfloat16 on a CPU backend warns that it is slow
        dlfund.fit(model, (X, Y), epochs=2, batch_size=16, optimizer="adamw", weight_decay=0.1, freeze="backbone",
                   progress=False, **options)  # fmt: skip
    after = weights(model)
    assert changed(before, after) == ["head/bias", "head/kernel"]


def test_freeze_batch_norm_false_lets_the_statistics_move_but_not_the_parameters():
    model = small_cnn()
    before = weights(model)
    dlfund.fit(model, (X, Y), epochs=1, batch_size=16, freeze="backbone", freeze_batch_norm=False, progress=False)
    after = weights(model)
    assert changed(before, after) == [
        "head/bias",
        "head/kernel",
        "norms/0/mean",
        "norms/0/var",
        "norms/1/mean",
        "norms/1/var",
    ]


def test_patterns_name_layers_and_globs_and_a_callable_works_too():
    model = small_cnn()
    state = dlfund.create_train_state(model, key=jax.random.key(0), freeze=["convs/0", "norms/*"])
    assert state.freezing.frozen == ("convs/0/kernel", "norms/0/bias", "norms/0/scale", "norms/1/bias", "norms/1/scale")
    # norms/1 is frozen but the conv before it trains: the rule holds the layer whose own parameters are frozen.
    assert state.freezing.held_norms == ("norms/0", "norms/1")
    by_callable = dlfund.create_train_state(model, key=jax.random.key(0), freeze=lambda path: "kernel" in path)
    assert all("kernel" in p for p in by_callable.freezing.frozen) and len(by_callable.freezing.frozen) == 4


def test_the_optimizer_holds_moments_only_for_the_trained_parameters():
    model = small_cnn()
    state = dlfund.create_train_state(model, optimizer="adam", key=jax.random.key(0), freeze="backbone")
    mu = state.opt_state.inner_state[0].mu
    assert sorted("/".join(map(str, path)) for path, _ in nnx.to_flat_state(mu)) == ["head/bias", "head/kernel"]
    full = dlfund.create_train_state(model, optimizer="adam", key=jax.random.key(0))
    assert len(jax.tree.leaves(full.opt_state)) > len(jax.tree.leaves(state.opt_state))


def test_no_gradient_is_computed_for_frozen_parameters():
    """Counted in the step's program: 3 forward matmuls; backprop adds one per trained weight matrix and one per
    layer input the gradient must pass through on its way to a trained layer."""
    model = dlfund.models.MLP(16, (32, 32), 4, rngs=nnx.Rngs(0))
    batch = (jnp.ones((8, 16)), jnp.zeros((8,), jnp.int32))

    def matmuls(freeze):
        state = dlfund.create_train_state(model, key=jax.random.key(0), freeze=freeze)
        return count_ops(jax.make_jaxpr(train_step_with_outputs)(state, batch).jaxpr, "dot_general")

    assert matmuls(None) == 3 + 3 + 2
    assert matmuls("backbone") == 3 + 1  # the head's weight gradient only
    assert matmuls("dense/0") == 3 + 2 + 1  # dense/1 and head weights, and the input gradient of the head


def test_unfreezing_is_a_second_fit_on_the_same_model():
    model = small_cnn()
    dlfund.fit(model, (X, Y), epochs=1, batch_size=16, freeze="backbone", progress=False)
    middle = weights(model)
    result = dlfund.fit(model, (X, Y), epochs=1, batch_size=16, learning_rate=1e-4, progress=False)
    assert result.config["frozen"] == []
    assert not np.array_equal(middle["convs/0/kernel"], weights(model)["convs/0/kernel"])


# --- discriminative learning rates --------------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_learning_rates_train_the_matched_parameters_exactly_as_that_rate_would(optimizer):
    """Oracle: two ordinary runs at the two rates; each parameter's step equals the step of the run at its rate."""
    model = dlfund.models.MLP(16, (32,), 4, rngs=nnx.Rngs(0))
    batch = (jnp.asarray(np.random.default_rng(1).normal(size=(8, 16)), jnp.float32), jnp.arange(8) % 4)
    options = dict(optimizer=optimizer, weight_decay=0.1 if optimizer != "sgd" else 0.0)

    def one_step(**more):  # train_step donates the state, its key included: a fresh key each time
        state = dlfund.create_train_state(model, key=jax.random.key(0), **options, **more)
        return jax.tree.map(np.asarray, dlfund.train_step(state, batch)[0].params)

    mixed = one_step(learning_rate=1e-2, learning_rates={"dense/*": 1e-3})
    fast, slow = one_step(learning_rate=1e-2), one_step(learning_rate=1e-3)
    for name in ("bias", "kernel"):
        np.testing.assert_allclose(mixed["dense"][0][name][...], slow["dense"][0][name][...], rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(mixed["head"][name][...], fast["head"][name][...], rtol=1e-6, atol=1e-9)
    assert not np.allclose(fast["dense"][0]["kernel"][...], slow["dense"][0]["kernel"][...])


def test_a_layer_named_value_gets_its_rate_like_any_other():
    """A Transformer's attention has a projection called ``value``: it once lost that part of its name (taken for
    the Variable's own ``.value``), matched no rate and trained at the base rate."""
    from dlfund.train import freezing

    model = dlfund.models.Transformer(4, 2, width=16, depth=1, num_heads=2, rngs=nnx.Rngs(0))
    rates = freezing.path_rates(model, {"blocks/0/attention/*": 1e-4}, ())
    assert "blocks/0/attention/value/kernel" in rates
    scales = freezing.rate_scales(nnx.state(model, nnx.Param), rates, 1e-3)
    attention = scales["blocks"][0]["attention"]
    for projection in ("query", "key", "value", "out"):
        for leaf in jax.tree.leaves(attention[projection]):
            assert float(leaf) == pytest.approx(0.1), projection
    assert float(scales["head"]["kernel"][...]) == 1.0


def test_learning_rates_follow_the_schedule_of_the_base_rate():
    model = dlfund.models.MLP(4, (8,), 3, rngs=nnx.Rngs(0))
    x = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    y = (np.arange(32) % 3).astype(np.int32)
    start = weights(model)
    # With SGD, a parameter's total change is -sum_t rate_t * g_t; rate / learning_rate = 0 would freeze it,
    # so the ratio 1e-6 leaves dense/0 nearly still while the head moves.
    dlfund.fit(
        model,
        (x, y),
        epochs=2,
        batch_size=8,
        optimizer="sgd",
        learning_rate=0.1,
        schedule="cosine",
        learning_rates={"dense/0": 1e-7},
        progress=False,
    )
    end = weights(model)
    assert np.abs(end["dense/0/kernel"] - start["dense/0/kernel"]).max() < 1e-6
    assert np.abs(end["head/kernel"] - start["head/kernel"]).max() > 1e-3


# --- bad input ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(freeze=3), "freeze takes 'backbone', glob patterns of parameter paths or a callable"),
        (
            dict(freeze="conv/*"),
            "freeze pattern 'conv/*' matches no parameter of the model; its parameters start "
            "with: convs, dense, head, norms",
        ),
        (dict(freeze="*"), "freezes all 10 parameters of the model: nothing would train"),
        (dict(freeze=lambda path: True), "freezes all 10 parameters"),
        (dict(learning_rates={"nothing": 1e-3}), "learning_rates pattern 'nothing' matches no parameter"),
        (dict(freeze="backbone", learning_rates={"convs/*": 1e-4}), "matches 'convs/0/kernel', which is frozen"),
        (dict(learning_rates={"convs": 1e-4, "convs/0": 1e-5}), "matches two learning_rates patterns"),
        (dict(learning_rates={"head": -1.0}), "learning_rates['head'] must be a positive number"),
        (dict(learning_rates={"head": 1.0}, optimizer=optax.sgd(0.1)), "learning_rates needs a built-in optimizer"),
    ],
)
def test_bad_freeze_and_learning_rates_are_refused_before_anything_compiles(options, message):
    with pytest.raises(ValueError) as error:
        dlfund.fit(small_cnn(), (X, Y), epochs=1, progress=False, **options)
    assert message in str(error.value)


def test_backbone_needs_a_named_head():
    class NoHead(nnx.Module):
        def __init__(self):
            self.a, self.b = nnx.Linear(4, 4, rngs=nnx.Rngs(0)), nnx.Linear(4, 2, rngs=nnx.Rngs(0))

        def __call__(self, x):
            return self.b(self.a(x))

    with pytest.raises(ValueError, match="has no head module"):
        dlfund.create_train_state(NoHead(), key=jax.random.key(0), freeze="backbone")


# --- from_pretrained ----------------------------------------------------------------------------------------------


ARCHITECTURES = {
    "mlp": lambda k: dlfund.models.MLP(64, (16, 8), k, dropout=0.1, batch_norm=True, rngs=nnx.Rngs(0)),
    "cnn": lambda k: small_cnn(k),
    "resnet": lambda k: dlfund.models.ResNet(
        (8, 8, 1), stage_channels=(4, 8), blocks_per_stage=(1, 1), num_classes=k, rngs=nnx.Rngs(0)
    ),
    "lstm": lambda k: dlfund.models.LSTM(8, hidden=8, num_classes=k, bidirectional=True, rngs=nnx.Rngs(0)),
    "gru": lambda k: dlfund.models.GRU(8, hidden=8, num_classes=k, rngs=nnx.Rngs(0)),
    "transformer": lambda k: dlfund.models.Transformer(
        8, k, width=16, depth=1, num_heads=2, max_len=8, rngs=nnx.Rngs(0)
    ),
    "logistic": lambda k: dlfund.models.LogisticRegression(64, k, rngs=nnx.Rngs(0)),
}


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_head_replacement_keeps_every_loaded_weight_exact(name):
    source = ARCHITECTURES[name](10)
    # Move every weight off its initial value, so a loaded weight cannot equal a fresh one by chance.
    state = nnx.state(source)
    nnx.update(source, jax.tree.map(lambda a: a + 0.5 if jnp.issubdtype(a.dtype, jnp.floating) else a, state))
    pretrained = dlfund.transfer.from_pretrained(source, num_classes=4, rngs=nnx.Rngs(7))
    model, head = pretrained.model, type(source).head_name
    old, new = weights(source), weights(model)
    assert set(pretrained.loaded) == {n for n in old if not n.startswith(head + "/")}
    assert set(pretrained.initialized) == set(pretrained.skipped) == {n for n in old if n.startswith(head + "/")}
    for path in pretrained.loaded:
        np.testing.assert_array_equal(new[path], old[path], err_msg=path)
    assert getattr(model, head).kernel[...].shape[-1] == 4
    assert not np.array_equal(new[f"{head}/kernel"][:, :4], old[f"{head}/kernel"][:, :4])
    assert weights_config(model)["num_classes"] == 4


def weights_config(model):
    return dlfund.weights.model_config(model)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_the_head_reads_the_penultimate_features(name):
    """``head(embed(x))`` is the model's eval output: embed returns exactly what the head reads."""
    model = ARCHITECTURES[name](3)
    x = np.random.default_rng(0).normal(size=(5, 8, 8)).astype(np.float32)
    if name in ("cnn", "resnet"):
        x = x[..., None]
    features = dlfund.transfer.embed(model, x, batch_size=2)  # batches of 2: the ragged last one is padded
    head = getattr(model, type(model).head_name)
    np.testing.assert_allclose(np.asarray(head(jnp.asarray(features))), dlfund.predict(model, x), rtol=1e-5, atol=1e-5)
    assert features.shape[0] == 5 and features.shape[1] == head.kernel[...].shape[0]


def test_a_run_folder_source_brings_its_normalization_and_prepare_applies_it(tmp_path):
    source = dlfund.data.load("digits")
    dlfund.fit(small_cnn(10), source, epochs=1, run_dir=tmp_path / "run", progress=False)
    pretrained = dlfund.transfer.from_pretrained(tmp_path / "run", num_classes=5, rngs=nnx.Rngs(1))
    assert pretrained.normalization is not None
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["data"]["normalization"]
    np.testing.assert_array_equal(pretrained.normalization.mean, np.asarray(recorded["mean"], np.float32))
    # A target with its own statistics: prepare maps its stored values through the source's map instead.
    x_raw = np.random.default_rng(0).integers(0, 17, size=(90, 8, 8, 1)).astype(np.float32)
    target = dlfund.data.from_arrays(x_raw, np.arange(90) % 5, name="target")
    prepared = pretrained.prepare(target)
    assert prepared.normalization is pretrained.normalization
    x_target, _ = target.train
    np.testing.assert_allclose(
        prepared.train[0], pretrained.normalization.apply(target.normalization.invert(x_target)), rtol=1e-6
    )
    np.testing.assert_array_equal(prepared.train[1], target.train[1])
    # A checkpoint directory and the final weights file of the same run give the same model and normalization.
    for inside in ("weights.safetensors", "checkpoints/1"):
        other = dlfund.transfer.from_pretrained(tmp_path / "run" / inside, num_classes=5, rngs=nnx.Rngs(1))
        assert other.normalization is not None, inside
        for name in pretrained.loaded:
            np.testing.assert_array_equal(weights(other.model)[name], weights(pretrained.model)[name], err_msg=inside)


def test_safetensors_round_trip_of_a_fine_tuned_model(tmp_path):
    pretrained = dlfund.transfer.from_pretrained(small_cnn(10), num_classes=3, rngs=nnx.Rngs(1))
    dlfund.fit(pretrained.model, (X, Y), epochs=1, batch_size=16, freeze="backbone", progress=False)
    path = dlfund.save_weights(tmp_path / "tuned.safetensors", pretrained.model)
    again = dlfund.load_model(path)
    for name, value in weights(pretrained.model).items():
        np.testing.assert_array_equal(weights(again)[name], value, err_msg=name)
    # ... and as the source of a further transfer: the weights load, a new head is drawn.
    onward = dlfund.transfer.from_pretrained(path, num_classes=2, rngs=nnx.Rngs(2))
    np.testing.assert_array_equal(weights(onward.model)["convs/0/kernel"], weights(again)["convs/0/kernel"])


def test_from_pretrained_refuses_what_it_cannot_do(tmp_path):
    cnn = small_cnn(10)
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        dlfund.transfer.from_pretrained(cnn, num_classes=1, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"CNN expects images of shape \(8, 8, 1\)|\(8, 8, 1\)"):
        dlfund.transfer.from_pretrained(cnn, num_classes=3, rngs=nnx.Rngs(0), input_shape=(28, 28, 1))
    with pytest.raises(ValueError, match="no classification head to replace"):
        dlfund.transfer.from_pretrained(dlfund.models.Perceptron(4, rngs=nnx.Rngs(0)), num_classes=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="from_pretrained rebuilds dlfund's models"):
        dlfund.transfer.from_pretrained(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), num_classes=2, rngs=nnx.Rngs(0))
    with pytest.raises(FileNotFoundError, match="nothing to load"):
        dlfund.transfer.from_pretrained(tmp_path, num_classes=2, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match=r"rngs must be an nnx\.Rngs"):
        dlfund.transfer.from_pretrained(cnn, num_classes=2, rngs=0)


def test_weights_of_another_architecture_name_the_first_mismatching_path_and_both_shapes(tmp_path):
    path = dlfund.save_weights(tmp_path / "wide.safetensors", dlfund.models.MLP(64, (32,), 10, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"'dense/0/bias': the model has shape \(16,\), .* has shape \(32,\)"):
        dlfund.load_weights(path, dlfund.models.MLP(64, (16,), 10, rngs=nnx.Rngs(0)))


def test_a_custom_head_replaces_the_standard_one():
    head = nnx.Sequential(nnx.Linear(16, 8, rngs=nnx.Rngs(0)), jax.nn.relu, nnx.Linear(8, 3, rngs=nnx.Rngs(0)))
    pretrained = dlfund.transfer.from_pretrained(small_cnn(10), num_classes=3, rngs=nnx.Rngs(1), head=head)
    assert set(pretrained.initialized) == {
        "head/layers/0/bias",
        "head/layers/0/kernel",
        "head/layers/2/bias",
        "head/layers/2/kernel",
    }
    assert dlfund.predict(pretrained.model, X[:4]).shape == (4, 3)
    result = dlfund.fit(pretrained.model, (X, Y), epochs=1, batch_size=16, freeze="backbone", progress=False)
    assert all(not p.startswith("head/") for p in result.config["frozen"])


def test_embed_features_feed_a_linear_probe():
    """Features of a fitted backbone, a LogisticRegression on them: the probe learns the training labels."""
    model = small_cnn(3)
    dlfund.fit(model, (X, Y), epochs=20, batch_size=16, learning_rate=1e-2, progress=False)
    features = dlfund.transfer.embed(model, X)
    mean, std = features.mean(0), features.std(0) + 1e-6
    probe = dlfund.models.LogisticRegression(features.shape[1], 3, rngs=nnx.Rngs(0))
    result = dlfund.fit(
        probe, ((features - mean) / std, Y), epochs=50, batch_size=16, learning_rate=1e-2, progress=False
    )
    assert result.history["accuracy"][-1] > 0.9


def test_normalize_like_on_arrays_and_readers():
    norm = dlfund.data.Normalization(mean=np.float32(2.0), std=np.float32(4.0), scale=1.0)
    np.testing.assert_allclose(dlfund.transfer.normalize_like(np.array([[2.0, 6.0]]), norm), [[0.0, 1.0]])
    ds = dlfund.data.load("digits")
    same = dlfund.transfer.normalize_like(ds, ds.normalization)
    np.testing.assert_allclose(same.test[0], ds.test[0], atol=1e-5)
    assert dataclasses.replace(same, normalization=ds.normalization).name == ds.name


# --- with sweeps, run folders and files ------------------------------------------------------------------------


def test_a_sweep_over_seeds_and_learning_rates_trains_each_members_head_on_the_same_frozen_backbone():
    """Each member's backbone is its model_fn's, untouched; the learning_rates factors follow each member's rate."""
    result = dlfund.sweep(
        lambda rngs: small_cnn(seed=0),
        (X, Y),
        dlfund.grid(learning_rate=[1e-3, 1e-2]),
        freeze="backbone",
        epochs=2,
        batch_size=16,
        progress=False,
    )
    start = weights(small_cnn(seed=0))
    members = [weights(model) for model in result.models()]
    for member in members:
        for name, value in start.items():
            if not name.startswith("head/"):
                np.testing.assert_array_equal(member[name], value, err_msg=name)
    assert not np.array_equal(members[0]["head/kernel"], members[1]["head/kernel"])
    # With the head's own rate, both members train it at 1e-3 whatever their base rate: the same head.
    pinned = dlfund.sweep(
        lambda rngs: small_cnn(seed=0),
        (X, Y),
        dlfund.grid(learning_rate=[1e-3, 1e-2]),
        freeze="backbone",
        learning_rates={"head": 1e-3},
        epochs=2,
        batch_size=16,
        progress=False,
    )
    heads = [weights(model)["head/kernel"] for model in pinned.models()]
    np.testing.assert_allclose(heads[0], heads[1], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(heads[0], members[0]["head/kernel"], rtol=1e-5, atol=1e-7)


def test_a_resume_with_another_frozen_part_is_refused(tmp_path):
    options = dict(epochs=1, batch_size=16, run_dir=tmp_path / "run", progress=False)
    dlfund.fit(small_cnn(), (X, Y), freeze="backbone", **options)
    with pytest.raises(ValueError, match="frozen"):
        dlfund.fit(small_cnn(), (X, Y), **{**options, "epochs": 2}, resume=True)


def test_a_weights_file_whose_arrays_do_not_fit_its_recorded_architecture_names_the_path_and_shapes(tmp_path):
    path = tmp_path / "edited.npz"
    dlfund.save_weights(path, dlfund.models.MLP(64, (32,), 10, rngs=nnx.Rngs(0)))
    with np.load(path) as npz:
        arrays = dict(npz)
    header = json.loads(str(arrays["__dlfund__"]))
    header["config"]["hidden"] = [16]  # the header now describes another architecture than the arrays
    arrays["__dlfund__"] = np.array(json.dumps(header))
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=r"'dense/0/bias': the model has shape \(16,\), .* has shape \(32,\)"):
        dlfund.transfer.from_pretrained(path, num_classes=3, rngs=nnx.Rngs(0))


def test_reinitialize_redraws_the_named_layers_too():
    source = small_cnn(10)
    pretrained = dlfund.transfer.from_pretrained(source, num_classes=3, rngs=nnx.Rngs(1), reinitialize="dense")
    assert set(pretrained.initialized) == {"dense/0/bias", "dense/0/kernel", "head/bias", "head/kernel"}
    assert set(pretrained.skipped) == set(pretrained.initialized)  # the source's own, not loaded
    old, new = weights(source), weights(pretrained.model)
    assert not np.array_equal(old["dense/0/kernel"], new["dense/0/kernel"])
    np.testing.assert_array_equal(old["convs/1/kernel"], new["convs/1/kernel"])
    with pytest.raises(ValueError, match="reinitialize pattern 'dens' matches no weight of the CNN"):
        dlfund.transfer.from_pretrained(source, num_classes=3, rngs=nnx.Rngs(1), reinitialize="dens")
