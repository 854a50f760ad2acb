"""dlfund.summary: parameter counts against independent counts, output shapes against a real forward pass."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dlfund.model_summary import Summary, summary
from dlfund.models import CNN, GRU, LSTM, MLP, RNN, LogisticRegression, Perceptron, ResNet, Transformer
from dlfund.train.compiles import compilations


def abstract(build):
    """The model ``build()`` makes, built abstractly: nothing is initialized (initializers such as truncated normal
    take seconds each to compile on a loaded 2-core CPU, once per kernel shape)."""
    return nnx.eval_shape(build)


def concrete(build):
    """The model with real arrays, every value 0.01 (shapes are all these tests need), made without compiling."""
    graphdef, state = nnx.split(abstract(build))
    return nnx.merge(graphdef, jax.tree.map(lambda s: jnp.asarray(np.full(s.shape, 0.01, s.dtype)), state))


def leaf_count(model, kind):
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(nnx.state(model, kind)))


def real_output_shapes(model, x, monkeypatch):
    """{path: output shape} of the first call of every sub-module while ``model`` itself runs on the real batch
    ``x`` in eval mode (one compiled program, its weights constants), and the output's shape.

    Independent of the summary's abstract trace: the model object itself (no copy), pytest's monkeypatch."""
    paths = {id(node): "/".join(map(str, p)) for p, node in nnx.iter_graph(model) if isinstance(node, nnx.Module)}
    seen = {}
    for cls in {type(node) for _, node in nnx.iter_graph(model) if isinstance(node, nnx.Module)}:
        original = cls.__call__

        def recording(self, *args, __original=original, **kwargs):
            out = __original(self, *args, **kwargs)
            seen.setdefault(paths.get(id(self)), jax.tree.map(lambda a: tuple(a.shape), out))
            return out

        monkeypatch.setattr(cls, "__call__", recording)
    model.eval()
    # Compiled without XLA's optimizations: the shapes are the same and tiny models compile in half the time.
    fast = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
    out = jax.jit(lambda batch: model(batch)).lower(x).compile(fast)(x)
    monkeypatch.undo()
    assert np.all(np.isfinite(out))
    seen.pop("", None)
    return seen, tuple(out.shape)


def as_tuples(shape):
    """A summary row's output shape with lists made tuples (jax.tree.map of the real outputs keeps tuples)."""
    return tuple(as_tuples(s) for s in shape) if isinstance(shape, list) else shape


# (model, input shape given to summary or None, one example's shape for the real batch)
ARCHITECTURES = {
    "mlp_bn_dropout": (lambda: MLP(12, (16, 8), 3, batch_norm=True, dropout=0.2, rngs=nnx.Rngs(0)), None, (12,)),
    "cnn_bn": (
        lambda: CNN((8, 8, 2), (4, 6), dense=(10,), num_classes=5, batch_norm=True, rngs=nnx.Rngs(0)),
        None,
        (8, 8, 2),
    ),
    "resnet": (lambda: ResNet((8, 8, 3), (4, 8), (1, 1), num_classes=3, rngs=nnx.Rngs(0)), None, (8, 8, 3)),
    "rnn": (lambda: RNN(5, 6, 3, rngs=nnx.Rngs(0)), (7, 5), (7, 5)),
    "lstm_2x_bidirectional": (
        lambda: LSTM(5, 6, 3, num_layers=2, bidirectional=True, rngs=nnx.Rngs(0)),
        (7, 5),
        (7, 5),
    ),
    "gru": (lambda: GRU(5, 6, 3, rngs=nnx.Rngs(0)), (7, 5), (7, 5)),
    "transformer": (
        lambda: Transformer(5, 3, width=8, depth=1, num_heads=2, max_len=7, positions="learned", rngs=nnx.Rngs(0)),
        (7, 5),
        (7, 5),
    ),
    "vit": (
        lambda: Transformer(8, 3, width=8, depth=1, num_heads=2, patch_size=2, image_shape=(4, 4, 2), rngs=nnx.Rngs(0)),
        None,
        (4, 4, 2),
    ),
    "logistic_binary": (lambda: LogisticRegression(6, 2, rngs=nnx.Rngs(0)), None, (6,)),
    "logistic_multinomial": (lambda: LogisticRegression(6, 4, rngs=nnx.Rngs(0)), None, (6,)),
    "perceptron": (lambda: Perceptron(6, rngs=nnx.Rngs(0)), None, (6,)),
}


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_every_architecture_counts_and_shapes_match_the_model(name, monkeypatch):
    build, input_shape, example = ARCHITECTURES[name]
    model = concrete(build)
    s = summary(model, input_shape, batch_size=3)
    # Counts: the model's own parameter and batch-statistic leaves.
    assert s.trainable_params == leaf_count(model, nnx.Param) > 0
    assert s.non_trainable_params == leaf_count(model, nnx.BatchStat)
    assert s.trainable_bytes == 4 * s.trainable_params and s.param_bytes == 4 * s.total_params
    # Every parameter sits in exactly one top-level row; a row counts what is nested in it.
    assert sum(row.params for row in s.rows if row.depth == 1) == s.total_params
    state = nnx.to_flat_state(nnx.state(model, nnx.Param))
    params = {"/".join(map(str, p)): v.get_value().size for p, v in state}
    for row in s.rows:
        inside = [p for p in params if p == row.path or p.startswith(row.path + "/")]
        assert row.trainable_params == sum(params[p] for p in inside), row.path
    # Shapes: the same layers, called in the same order, give the same outputs on a real batch of 3.
    x = np.random.default_rng(0).normal(size=(3, *example)).astype(np.float32)
    real, output = real_output_shapes(model, x, monkeypatch)
    assert s.input_shape == (3, *example) and s.output_shape == output
    called = {row.path: as_tuples(row.output_shape) for row in s.rows if row.output_shape is not None}
    assert called == real
    assert isinstance(s, Summary) and "Total params" in str(s)


def test_mlp_64_128_10_has_the_textbook_count():
    s = summary(abstract(lambda: MLP(64, (128,), 10, rngs=nnx.Rngs(0))))
    assert s.total_params == s.trainable_params == 64 * 128 + 128 + 128 * 10 + 10
    assert s.non_trainable_params == 0 and s.param_bytes == 4 * 9610
    assert [(r.path, r.type, r.output_shape, r.params) for r in s.rows] == [
        ("dense/0", "Linear", (1, 128), 64 * 128 + 128),
        ("head", "Linear", (1, 10), 128 * 10 + 10),
    ]
    text = str(s)
    assert text.splitlines()[0] == "Model: MLP, input (1, 64) -> output (1, 10)"
    for line in ("Total params: 9,610 (37.54 KiB)", "Trainable params: 9,610", "Non-trainable params: 0 (0 B)"):
        assert line in text
    assert " dense/0 (Linear)" in text and "(1, 128)" in text and "8,320" in text


def test_batch_norm_running_statistics_are_not_trainable():
    model = abstract(lambda: CNN((8, 8, 1), (4, 6), dense=(), num_classes=3, batch_norm=True, rngs=nnx.Rngs(0)))
    s = summary(model, batch_size=2)
    # Each BatchNorm of C channels: scale and bias trained, running mean and variance not.
    assert s.non_trainable_params == 2 * (4 + 6)
    norms = {row.path: row for row in s.rows if row.type == "BatchNorm"}
    assert {p: (r.trainable_params, r.non_trainable_params) for p, r in norms.items()} == {
        "norms/0": (8, 8),
        "norms/1": (12, 12),
    }
    # 3x3 convs without bias (1->4, 4->6), BN scales and biases, the head on 2x2x6 features after two 2x2 pools.
    assert s.trainable_params == 9 * 1 * 4 + 9 * 4 * 6 + 2 * (4 + 6) + (2 * 2 * 6) * 3 + 3
    assert "Non-trainable params: 20 (80 B): batch-norm running statistics" in str(s)


def test_nesting_depth_and_variables_held_by_the_model_itself():
    resnet = abstract(lambda: ResNet((8, 8, 3), (4, 8), (1, 1), num_classes=3, rngs=nnx.Rngs(0)))
    s = summary(resnet)
    depth = {row.path: row.depth for row in s.rows}
    assert depth["stem"] == depth["blocks/0"] == depth["head"] == 1 and depth["blocks/1/proj"] == 2
    top = summary(resnet, depth=1)
    assert [row.path for row in top.rows] == ["stem", "stem_bn", "blocks/0", "blocks/1", "head"]
    assert top.total_params == s.total_params  # totals cover the whole model whatever is shown
    assert "  blocks/1/proj (Conv)" in str(s) and "indented under it" in str(s)
    transformer = abstract(
        lambda: Transformer(4, 2, width=8, depth=1, num_heads=2, max_len=5, positions="learned", rngs=nnx.Rngs(0))
    )
    rows = {row.path: row for row in summary(transformer, (5, 4)).rows}
    # The CLS token and the position table are the model's own parameters, not any layer's output.
    assert (rows["cls_token"].type, rows["cls_token"].params, rows["cls_token"].output_shape) == ("Param", 8, None)
    assert rows["position_table"].params == 5 * 8 and rows["blocks/0"].output_shape == (1, 6, 8)


class _SpareLayer(nnx.Module):
    """A list of two layers of which only the first is called (a spare head kept for later, say)."""

    def __init__(self, rngs):
        self.layers = nnx.List([nnx.Linear(4, 3, rngs=rngs), nnx.Linear(3, 2, rngs=rngs)])

    def __call__(self, x):
        return self.layers[0](x)


def test_an_uncalled_layer_in_a_list_gets_its_own_row_and_nothing_is_counted_twice():
    s = summary(abstract(lambda: _SpareLayer(nnx.Rngs(0))), (4,))
    assert s.total_params == 4 * 3 + 3 + 3 * 2 + 2
    assert [(r.path, r.output_shape, r.params, r.depth) for r in s.rows] == [
        ("layers/0", (1, 3), 4 * 3 + 3, 1),
        ("layers/1", None, 3 * 2 + 2, 1),
    ]


def test_nothing_is_computed_or_compiled_and_abstract_models_work():
    resnet = abstract(lambda: ResNet(rngs=nnx.Rngs(0)))  # CIFAR's ResNet-14, never allocated
    transformer = abstract(lambda: Transformer(16, 10, width=64, depth=4, max_len=64, rngs=nnx.Rngs(0)))
    before = compilations()
    summaries = [summary(resnet, batch_size=128), summary(transformer, (64, 16), batch_size=128)]
    assert compilations() == before
    assert summaries[0].output_shape == (128, 10) and summaries[0].total_params == 176_378
    final_norm = next(row for row in summaries[1].rows if row.path == "norm")
    assert final_norm.output_shape == (128, 65, 64)  # 64 tokens and the CLS token
    # Concrete and abstract models of one architecture have the same summary.
    build = ARCHITECTURES["mlp_bn_dropout"][0]
    assert summary(concrete(build)) == summary(abstract(build))


def test_the_model_is_left_as_it_was():
    model = concrete(lambda: MLP(4, (8,), 2, batch_norm=True, dropout=0.5, rngs=nnx.Rngs(0)))  # in training mode
    state = jax.tree.map(np.asarray, nnx.state(model))
    original = nnx.Linear.__call__
    summary(model)
    assert model.dropout.deterministic is False and model.norms[0].use_running_average is False
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, nnx.state(model)), state)
    assert nnx.Linear.__call__ is original


def test_a_failing_forward_pass_names_the_shape_and_leaves_every_layer_class_as_it_was():
    class Broken(nnx.Module):
        def __init__(self):
            self.linear = concrete(lambda: nnx.Linear(3, 2, rngs=nnx.Rngs(0)))

        def __call__(self, x):
            return self.linear(x) @ jnp.ones((5, 1))  # (B, 2) @ (5, 1): a shape error after a layer ran

    original = nnx.Linear.__call__
    with pytest.raises(ValueError, match=r"Broken cannot run on a batch of shape \(1, 3\): TypeError"):
        summary(Broken(), (3,))
    assert nnx.Linear.__call__ is original  # nnx.tabulate leaves its wrapper here, breaking every later Linear
    assert concrete(lambda: nnx.Linear(3, 2, rngs=nnx.Rngs(0)))(np.ones((1, 3), np.float32)).shape == (1, 2)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (lambda: LSTM(8, 4, 3, rngs=nnx.Rngs(0)), r"reads sequences \(T, 8\) .* input_shape=\(16, 8\)"),
        (lambda: Transformer(8, 3, width=8, num_heads=2, rngs=nnx.Rngs(0)), r"input_shape=\(16, 8\)"),
        (lambda: nnx.Linear(3, 2, rngs=nnx.Rngs(0)), r"does not record the shape .* input_shape=\(28, 28, 1\)"),
    ],
)
def test_models_without_a_known_input_shape_are_told_what_to_pass(model, message):
    with pytest.raises(ValueError, match=message):
        summary(abstract(model))


def test_bad_arguments_are_named():
    mlp = abstract(lambda: MLP(64, (8,), 3, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="expects 64 input features"):  # the model's own input check
        summary(mlp, (65,))
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        summary(mlp, batch_size=0)
    with pytest.raises(ValueError, match="depth must be a positive integer"):
        summary(mlp, depth=0)
    with pytest.raises(ValueError, match=r"input_shape\[1\] must be a positive integer, got -1"):
        summary(abstract(lambda: LSTM(8, 4, 3, rngs=nnx.Rngs(0))), (4, -1))
    with pytest.raises(TypeError, match="Flax NNX module"):
        summary(lambda x: x)
    linear = abstract(lambda: nnx.Linear(3, 2, rngs=nnx.Rngs(0)))
    assert summary(linear, 3).output_shape == (1, 2)  # an int is one dimension


def test_html_for_notebooks_holds_every_row_and_the_totals():
    s = summary(abstract(lambda: CNN((8, 8, 1), (4,), dense=(), num_classes=3, batch_norm=True, rngs=nnx.Rngs(0))))
    page = s._repr_html_()
    assert page.startswith("<table") and page.count("<tr>") == len(s.rows) + 1
    for row in s.rows:
        assert f"{row.path} <span" in page
    assert f"Total params: {s.total_params:,}" in page and "(1, 8, 8, 4)" in page
    assert repr(s) == str(s)
