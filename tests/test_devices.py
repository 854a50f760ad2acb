"""fit on several devices: data parallelism and FSDP over 8 virtual CPU devices give the one-device run.

Each multi-device test runs a script in a fresh interpreter that sees 8 devices (XLA reads the flag once).
"""

import textwrap

import jax
import numpy as np
import pytest
from blobs_script import BLOBS
from flax import nnx
from virtual_devices import run_on_8_devices

import dlfund
from dlfund.config import TrainConfig
from dlfund.train import devices as devices_lib

PRELUDE = (
    textwrap.dedent(
        """
    import jax, numpy as np
    from flax import nnx
    from jax.sharding import PartitionSpec as P
    import dlfund
    from dlfund.train.fit import plan_fit
    from dlfund.train.options import FitConfig

    assert len(jax.devices()) == 8
    """
    )
    + BLOBS
    + textwrap.dedent(
        """
    def close(a, b, what, rtol=2e-5):
        for column in a.history.columns:
            np.testing.assert_allclose(a.history[column], b.history[column], rtol=rtol, atol=1e-6, err_msg=what)
        for u, v in zip(jax.tree.leaves(a.state.params), jax.tree.leaves(b.state.params)):
            np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-5, err_msg=what)
    """
    )
)

DATA_PARALLEL = PRELUDE + textwrap.dedent(
    """
    import warnings
    from dlfund.train.compiles import RecompileWarning
    warnings.simplefilter("error", RecompileWarning)  # every run below compiles its programs once
    seen = []

    class Recording(nnx.Module):
        # Records the sharding of every batch the model sees while a program is traced.
        def __init__(self, rngs):
            self.mlp = dlfund.models.MLP(12, (32,), 4, dropout=0.2, batch_norm=True, rngs=rngs)

        def __call__(self, x, rngs=None):
            jax.debug.inspect_array_sharding(x, callback=seen.append)
            return self.mlp(x, rngs=rngs)

    # The default uses all 8 devices; its history and weights are the one-device run's (dropout and batch norm
    # included: the same masks, statistics over the whole batch).
    for execution in ("scan", "loop"):
        seen.clear()
        spread = dlfund.fit(Recording(nnx.Rngs(0)), TRAIN, execution=execution, **OPTIONS)
        assert spread.config["devices"] == 8 and spread.config["parallelism"] == "data", spread.config
        assert seen and all(s.spec == P("data") and len(s.device_set) == 8 for s in seen), seen
        one = dlfund.fit(Recording(nnx.Rngs(0)), TRAIN, execution=execution, devices=1, **OPTIONS)
        assert one.config["devices"] == 1
        close(spread, one, execution)
        for leaf in jax.tree.leaves((spread.state.params, spread.state.opt_state)):
            assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 8

    # Gradient accumulation on the mesh: each micro-batch is split over the devices; the one-device numbers.
    seen.clear()
    accumulated = dlfund.fit(Recording(nnx.Rngs(0)), TRAIN, accumulate_steps=2, **OPTIONS)
    assert {s.spec for s in seen} == {P("data")}
    close(accumulated, dlfund.fit(Recording(nnx.Rngs(0)), TRAIN, accumulate_steps=2, devices=1, **OPTIONS), "acc")

    # The data sits whole on every device (the shuffle gathers locally); the validation batch is padded to 8s.
    plan = plan_fit(Recording(nnx.Rngs(0)), TRAIN, FitConfig.of(**OPTIONS))
    x, y = plan.train
    assert x.sharding.is_fully_replicated and len(x.sharding.device_set) == 8
    assert [s.data.shape for s in x.addressable_shards] == [(320, 12)] * 8

    # Streamed from the host, each batch is put split over the devices: the same history again.
    streamed = dlfund.fit(Recording(nnx.Rngs(0)), TRAIN, data_placement="stream", **OPTIONS)
    close(streamed, one, "stream")

    # Evaluation and prediction of the model left on the mesh: split batches, the one-device numbers.
    model = spread.model
    assert len(jax.tree.leaves(nnx.state(model))[0].sharding.device_set) == 8
    seen.clear()
    on_mesh = dlfund.evaluate(model, VAL, batch_size=30)  # rounded up to 32 and masked: every example once
    assert seen and all(s.spec == P("data") for s in seen), seen
    alone = dlfund.evaluate(one.model, VAL, batch_size=30)
    for name in ("loss", "accuracy", "f1_macro"):
        np.testing.assert_allclose(on_mesh[name], alone[name], rtol=1e-5, err_msg=name)
    assert on_mesh["num_examples"] == 80
    np.testing.assert_allclose(dlfund.predict(model, VAL[0][:5]), dlfund.predict(one.model, VAL[0][:5]), rtol=1e-4,
                               atol=1e-5)

    # A global batch that does not split over the devices, or more devices than there are, is refused up front.
    for bad, message in (
        (dict(batch_size=30), "batch_size=30 does not split evenly over 8 devices"),
        (dict(devices=9), "devices=9, but this process sees 8 cpu devices"),
    ):
        try:
            dlfund.fit(Recording(nnx.Rngs(0)), TRAIN, **{**OPTIONS, **bad})
        except ValueError as error:
            assert message in str(error), error
            assert "24 or 32" in str(error) or "devices=" in str(error)
        else:
            raise AssertionError(f"{bad} was accepted")

    # A Mesh and a list of devices are taken as they are.
    four = dlfund.fit(Recording(nnx.Rngs(0)), TRAIN, devices=jax.devices()[:4], **OPTIONS)
    assert four.config["devices"] == 4
    close(four, one, "4 devices")
    meshed = dlfund.fit(Recording(nnx.Rngs(0)), TRAIN, devices=jax.make_mesh((2, 4), ("a", "b")), **OPTIONS)
    assert meshed.config["devices"] == 8
    close(meshed, one, "2x4 mesh")
    # One device named that is not the default trains there (it was dropped, and device 0 used).
    third = dlfund.fit(Recording(nnx.Rngs(0)), TRAIN, devices=[jax.devices()[2]], **OPTIONS)
    assert third.config["devices"] == 1
    placed = {d for leaf in jax.tree.leaves((third.state.params, nnx.state(third.model))) for d in leaf.devices()}
    assert placed == {jax.devices()[2]}, placed
    close(third, one, "device 2")

    # Without the layout kept from call to call, the epoch program compiles again; the warning says why.
    from dlfund.train import devices as devices_lib
    devices_lib.keep = lambda layout, tree: tree
    devices_lib.place = lambda layout, tree: tree
    warnings.simplefilter("always", RecompileWarning)
    with warnings.catch_warnings(record=True) as caught:
        # A model of another width: programs traced anew, with the patched functions.
        dlfund.fit(dlfund.models.MLP(12, (24,), 4, rngs=nnx.Rngs(1)), TRAIN, epochs_per_call=1, **OPTIONS)
    messages = [str(w.message) for w in caught if w.category is RecompileWarning]
    assert len(messages) == 1 and "compiled again in call 2" in messages[0], messages
    assert "layout SingleDeviceSharding(1 device) -> NamedSharding(P(), 8 devices)" in messages[0], messages
    print("OK")
    """
)

FSDP_AND_RESUME = PRELUDE + textwrap.dedent(
    """
    import tempfile
    wide = lambda: dlfund.models.MLP(12, (1024,), 4, rngs=nnx.Rngs(0))  # a 12x1024 float32 kernel: 48 KiB
    from dlfund.train import devices as devices_lib
    devices_lib.FSDP_MIN_BYTES = 2**14  # so that this small test model has large kernels to split
    fsdp = dlfund.fit(wide(), TRAIN, parallelism="fsdp", **OPTIONS)
    assert fsdp.config["parallelism"] == "fsdp"
    one = dlfund.fit(wide(), TRAIN, devices=1, **OPTIONS)
    close(fsdp, one, "fsdp")
    params, opt_state = fsdp.state.params, fsdp.state.opt_state
    kernel = params["dense"][0]["kernel"][...]
    assert kernel.sharding.spec == P(None, "data"), kernel.sharding.spec
    assert [s.data.shape for s in kernel.addressable_shards] == [(12, 128)] * 8   # 1/8 of it on each device
    head = params["head"]["kernel"][...]                                             # 1024x4: split on its rows
    assert [s.data.shape for s in head.addressable_shards] == [(128, 4)] * 8
    assert params["dense"][0]["bias"][...].sharding.is_fully_replicated            # 4 KiB: below the threshold
    moments = [leaf for leaf in jax.tree.leaves(opt_state) if leaf.shape == (12, 1024)]
    assert len(moments) == 2, [leaf.shape for leaf in jax.tree.leaves(opt_state)]   # Adam's mu and nu
    for moment in moments:
        assert [s.data.shape for s in moment.addressable_shards] == [(12, 128)] * 8

    # Freezing composes with FSDP: the frozen kernel stays split and bit-identical, the optimizer holds moments
    # for the head only, and the head learns what it learns on one device.
    frozen_options = dict(OPTIONS, freeze="backbone", optimizer="adamw", weight_decay=0.1)
    start = np.asarray(wide().dense[0].kernel[...])
    frozen = dlfund.fit(wide(), TRAIN, parallelism="fsdp", **frozen_options)
    kernel = frozen.state.params["dense"][0]["kernel"][...]
    assert kernel.sharding.spec == P(None, "data"), kernel.sharding.spec
    np.testing.assert_array_equal(np.asarray(kernel), start)
    assert {leaf.shape for leaf in jax.tree.leaves(frozen.state.opt_state) if leaf.ndim} == {(1024, 4), (4,)}
    close(frozen, dlfund.fit(wide(), TRAIN, devices=1, **frozen_options), "frozen fsdp")

    # A run saved on 8 devices resumes on 1, and one saved on 1 resumes with FSDP on 8: the uninterrupted history.
    folder = tempfile.mkdtemp()
    long = dict(OPTIONS, epochs=4)
    whole = dlfund.fit(wide(), TRAIN, devices=1, **long)
    dlfund.fit(wide(), TRAIN, run_dir=f"{folder}/a", **OPTIONS)
    resumed = dlfund.fit(wide(), TRAIN, run_dir=f"{folder}/a", resume=True, devices=1, **long)
    close(resumed, whole, "8 -> 1")
    dlfund.fit(wide(), TRAIN, run_dir=f"{folder}/b", devices=1, **OPTIONS)
    resumed = dlfund.fit(wide(), TRAIN, run_dir=f"{folder}/b", resume=True, parallelism="fsdp", **long)
    close(resumed, whole, "1 -> 8 fsdp")
    loaded = dlfund.load_run(f"{folder}/b")
    np.testing.assert_allclose(dlfund.predict(loaded.model, VAL[0]), dlfund.predict(whole.model, VAL[0]),
                               rtol=1e-4, atol=1e-5)
    print("OK")
    """
)


def test_data_parallel_fit_on_8_devices_matches_one_device():
    run_on_8_devices(DATA_PARALLEL, timeout=600)


def test_fsdp_splits_weights_and_moments_and_runs_resume_across_device_counts():
    run_on_8_devices(FSDP_AND_RESUME, timeout=600)


def test_one_device_keeps_the_single_device_programs():
    assert devices_lib.resolve_layout("auto") is None  # this machine has one device
    assert devices_lib.resolve_layout(1, "fsdp") is None
    assert devices_lib.resolve_layout(jax.devices()[:1]) is None  # the default device: no layout


@pytest.mark.parametrize(
    ("devices", "parallelism", "message"),
    [
        (2, "data", "devices=2, but this process sees 1 cpu device; use devices between 1 and 1"),
        (0, "data", "devices=0"),
        ("all", "data", "devices must be 'auto', a number of devices"),
        ([], "data", "devices must be 'auto'"),
        (1, "tensor", "Unknown parallelism 'tensor'. Known: data, fsdp."),
    ],
)
def test_bad_devices_and_parallelism_are_refused_before_anything_compiles(devices, parallelism, message):
    model = dlfund.models.MLP(4, (8,), 2, rngs=nnx.Rngs(0))
    x, y = np.zeros((16, 4), np.float32), np.zeros(16, np.int32)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        dlfund.fit(model, (x, y), devices=devices, parallelism=parallelism, epochs=1, batch_size=8, progress=False)


def test_the_fsdp_rule_splits_the_largest_dividing_dimension_of_large_arrays():
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    layout = devices_lib.Layout(mesh, "fsdp", min_shard_bytes=1024)

    class Eight(devices_lib.Layout):  # the rule, as it would see 8 devices
        @property
        def size(self):
            return 8

    eight = Eight(mesh, "fsdp", min_shard_bytes=1024)
    P = jax.sharding.PartitionSpec
    assert eight.spec((64, 1024), np.float32) == P(None, "data")  # the largest dimension
    assert eight.spec((1024, 64), np.float32) == P("data")
    assert eight.spec((1004, 64), np.float32) == P(None, "data")  # 1004 does not divide by 8: the next one
    assert eight.spec((1001, 63), np.float32) == P()  # nothing divides
    assert eight.spec((16, 8), np.float32) == P()  # 512 bytes: below the threshold
    assert eight.spec((), np.float32) == P()
    assert devices_lib.Layout(mesh, "data").spec((1024, 1024), np.float32) == P()
    assert layout.round_up(30) == 30 and eight.round_up(30) == 32 and eight.round_up(32) == 32


def test_batch_that_does_not_divide_names_the_nearest_valid_sizes():
    class Eight:
        size = 8

    with pytest.raises(ValueError, match=r"batch_size=30 does not split evenly over 8 devices.*use 24 or 32"):
        devices_lib.check_batch_divides(30, Eight())
    with pytest.raises(ValueError, match=r"use 8, or devices=1"):
        devices_lib.check_batch_divides(5, Eight())
    devices_lib.check_batch_divides(32, Eight())
    devices_lib.check_batch_divides(30, None)
    with pytest.raises(
        ValueError,
        match=r"accumulate_steps=4 gives micro-batches of 20, which do not split evenly "
        r"over 8 devices.*use 64 or 96",
    ):
        devices_lib.check_batch_divides(80, Eight(), accumulate_steps=4)
    devices_lib.check_batch_divides(128, Eight(), accumulate_steps=4)


def test_cli_devices_flag():
    assert TrainConfig().device_count() == "auto"
    assert TrainConfig(devices="4").device_count() == 4
    for bad in ("0", "two", "-1"):
        with pytest.raises(ValueError, match="--devices must be 'auto' or a number"):
            TrainConfig(devices=bad).device_count()
