"""The same train step, data-parallel over 8 (virtual CPU) devices, gives the single-device result."""

import textwrap

from virtual_devices import run_on_8_devices

SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from flax import nnx
    import dlfund

    assert len(jax.devices()) == 8
    x = jax.random.normal(jax.random.key(0), (64, 6))
    y = jax.random.randint(jax.random.key(1), (64,), 0, 3)

    def state():
        model = dlfund.models.MLP(6, (16,), 3, rngs=nnx.Rngs(0))
        return dlfund.create_train_state(model, learning_rate=0.01, key=jax.random.key(0))

    single, single_m = dlfund.train_step(state(), (x, y))

    mesh = jax.make_mesh((8,), ("data",))
    batch = jax.device_put((x, y), NamedSharding(mesh, P("data")))   # the batch split over devices
    replicated = jax.device_put(state(), NamedSharding(mesh, P()))   # the state on every device
    sharded, sharded_m = dlfund.train_step(replicated, batch)

    assert len(batch[0].sharding.device_set) == 8
    for a, b in zip(jax.tree.leaves(single.params), jax.tree.leaves(sharded.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(single_m["loss"], sharded_m["loss"], rtol=1e-6)
    print("OK")
    """
)


def test_data_parallel_step_matches_single_device():
    run_on_8_devices(SCRIPT)
