"""Where training runs: one device, or a mesh of devices with each batch (and, with FSDP, the weights) split over it.

``fit(..., devices=..., parallelism=...)`` turns its arguments into a :class:`Layout` (or None for one device, which
keeps the single-device programs exactly as they are). The layout is a static field of the
:class:`dlfund.TrainState`, so every compiled program that reads the state knows it and equal layouts share
programs. It says three things:

- **data parallelism** (``"data"``): each training batch is split over the devices along its first axis, the
  parameters and optimizer state are replicated. Gradients of the mean loss over the split batch are summed across
  devices by XLA (the partitioner inserts the all-reduce), so the step computes what one device computes, up to
  the order of float additions. Batch-norm statistics are the whole batch's, as on one device.
- **FSDP** (``"fsdp"``): as above, and every array of the parameters and optimizer state of at least
  :data:`FSDP_MIN_BYTES` is split along its largest dimension that the device count divides (big_vision's rule);
  XLA gathers a weight where a layer needs it. Each device then holds 1/D of every large kernel and of its Adam
  moments.
- **the data**: device-resident training data is replicated (every device holds the whole set), so that the
  on-device shuffle gathers each device's share of a batch from its own copy: no example moves between devices
  during training. Splitting the set over the devices instead would make every step's random gather a shuffle
  across all of them (``benchmarks/bench_parallel.py`` measures both).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

PARALLELISMS = ("data", "fsdp")

#: Arrays smaller than this stay replicated under FSDP: gathering them costs more than the memory they would save.
#: big_vision's default is 4 MiB; dlfund's models are teaching-sized (a 784x512 float32 kernel is 1.5 MiB), so the
#: threshold is lower.
FSDP_MIN_BYTES = 2**18


@dataclasses.dataclass(frozen=True)
class Layout:
    """How a training state and its batches are laid out over a mesh (hashable: a static part of programs).

    Attributes:
      mesh: the devices; batches (and FSDP's weights) are split over all of its axes together.
      parallelism: "data" (weights replicated) or "fsdp" (large weights and optimizer moments split too).
      min_shard_bytes: FSDP leaves arrays below this size replicated.
    """

    mesh: Mesh
    parallelism: str = "data"
    min_shard_bytes: int = FSDP_MIN_BYTES

    @property
    def size(self) -> int:
        """The number of devices."""
        return int(self.mesh.devices.size)

    @property
    def devices(self) -> list[jax.Device]:
        return list(self.mesh.devices.flat)

    @property
    def _axes(self) -> str | tuple[str, ...]:
        names = tuple(self.mesh.axis_names)
        return names[0] if len(names) == 1 else names

    @property
    def replicated(self) -> NamedSharding:
        """Every device holds the whole array."""
        return NamedSharding(self.mesh, PartitionSpec())

    @property
    def batch(self) -> NamedSharding:
        """The first axis split over the devices (a batch [B, ...])."""
        return NamedSharding(self.mesh, PartitionSpec(self._axes))

    def spec(self, shape: Sequence[int], dtype: Any) -> PartitionSpec:
        """The partition of a weight or optimizer array of this shape: replicated, or (FSDP, large enough) split
        along its largest dimension that the device count divides."""
        if self.parallelism != "fsdp" or not shape:
            return PartitionSpec()
        if math.prod(shape) * np.dtype(dtype).itemsize < self.min_shard_bytes:
            return PartitionSpec()
        for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):  # largest first; ties: the first
            if shape[dim] % self.size == 0:
                return PartitionSpec(*([None] * dim), self._axes)
        return PartitionSpec()

    def sharding(self, leaf: Any) -> NamedSharding:
        """Where one leaf of a training state goes (PRNG keys and scalars are replicated)."""
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            return self.replicated
        return NamedSharding(self.mesh, self.spec(np.shape(leaf), leaf.dtype))

    def put(self, value: Any, sharding: NamedSharding | None = None) -> jax.Array:
        """``value`` (a host or device array, or a PRNG key) on the mesh as ``sharding`` (default: by
        :meth:`sharding`). In a multi-process run each process supplies the shards of its own devices from its copy
        of ``value`` (every process holds the same value: the same data, the same initialization)."""
        sharding = sharding or self.sharding(value)
        if isinstance(value, jax.core.Tracer):  # inside a program: a constraint
            return jax.lax.with_sharding_constraint(value, sharding)
        if sharding.is_fully_addressable:
            return jax.device_put(value, sharding)
        if isinstance(value, jax.Array) and not value.is_fully_addressable:  # already global: reshard if needed
            return value if value.sharding == sharding else jax.jit(lambda a: a, out_shardings=sharding)(value)
        if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
            data = self.put(jax.random.key_data(value), NamedSharding(self.mesh, PartitionSpec()))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(value))
        host = np.asarray(value)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    def place(self, tree: Any) -> Any:
        """Every array of ``tree`` on the mesh by :meth:`sharding` (a training state, a loop state, a carry)."""
        return jax.tree.map(self.put, tree)

    def place_state(self, state: Any) -> Any:
        """The training state on the mesh (weights and optimizer state by :meth:`spec`, the rest replicated)."""
        return self.place(state)

    def constrain(self, tree: Any) -> Any:
        """Inside a program: every array of ``tree`` where :meth:`place` puts it.

        XLA chooses the layout of a program's results; left to itself it may return a small bias split over the
        devices after FSDP's gathers, or a scalar on one device. A result whose layout differs from the input's
        makes the next call a new program (measured: two compilations of the epoch program in one 8-device run
        before this), so the programs that carry state from call to call constrain what they return.
        """
        return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, self.sharding(a)), tree)

    def constrain_state(self, state: Any) -> Any:
        """:meth:`constrain` for the weights and optimizer state of a training state."""
        params, model_state, opt_state = self.constrain((state.params, state.model_state, state.opt_state))
        return state.replace(params=params, model_state=model_state, opt_state=opt_state)

    def shard_batch(self, x: jax.Array) -> jax.Array:
        """Inside a program: splits a batch [B, ...] over the devices (B must be divisible; else left as is)."""
        if not np.ndim(x) or x.shape[0] % self.size:
            return x
        return jax.lax.with_sharding_constraint(x, self.batch)

    def round_up(self, batch_size: int) -> int:
        """The smallest multiple of the device count >= ``batch_size`` (evaluation pads and masks the extra rows)."""
        return -(-batch_size // self.size) * self.size


def shard_batch(layout: Layout | None, x: jax.Array) -> jax.Array:
    """``layout.shard_batch(x)``, or ``x`` on one device."""
    return x if layout is None else layout.shard_batch(x)


def keep(layout: Layout | None, tree: Any) -> Any:
    """``layout.constrain(tree)`` inside a program, or ``tree`` on one device."""
    return tree if layout is None else layout.constrain(tree)


def place(layout: Layout | None, tree: Any) -> Any:
    """``layout.place(tree)``; on one device, when some array of ``tree`` is committed to a device, every array
    committed to that one (a tree of uncommitted arrays is left as it is).

    A compiled program's results are committed to their device, and a program is compiled for its inputs'
    committedness: a first call with a mix of committed arrays (a state restored from a checkpoint) and uncommitted
    ones (fresh counters) and later calls with only committed ones would be two programs (measured: every resumed
    run compiled its epoch program twice). Inside a program (tracers) nothing is done.
    """
    if layout is not None:
        return layout.place(tree)
    leaves = jax.tree.leaves(tree)
    if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
        return tree
    committed = [leaf for leaf in leaves if getattr(leaf, "committed", False)]
    if not committed:  # all uncommitted: the programs' results are too, and the user's model stays so
        return tree
    return jax.device_put(tree, next(iter(committed[0].devices())))


def _visible(devices: list[jax.Device]) -> str:
    kinds = sorted({d.platform for d in devices})
    return f"{len(devices)} {'/'.join(kinds)} device{'s' if len(devices) != 1 else ''}"


def resolve_layout(devices: Any = "auto", parallelism: str = "data") -> Layout | None:
    """The layout for ``fit``'s ``devices`` and ``parallelism``; None means the default device (today's programs).
    One other device, named by a list or a mesh, gets a one-device layout, so the run is placed there.

    Args:
      devices: "auto" (every local device when there is more than one), an int (the first n local devices), a
        list of ``jax.Device``, or a ``jax.sharding.Mesh`` (batches are split over all of its axes).
      parallelism: "data" or "fsdp".
    Raises:
      ValueError: an unknown parallelism, more devices than are visible, or a malformed ``devices``.
    """
    if parallelism not in PARALLELISMS:
        raise ValueError(f"Unknown parallelism {parallelism!r}. Known: {', '.join(PARALLELISMS)}.")
    # In a multi-process run (dlfund.distributed.initialize) the mesh spans every process's devices.
    local = jax.devices() if jax.process_count() > 1 else jax.local_devices()
    if isinstance(devices, Mesh):
        # The same devices and axes with automatic (propagated) sharding, which the layout's constraints use;
        # jax.make_mesh makes Explicit axes by default.
        mesh = Mesh(devices.devices, devices.axis_names)
    else:
        if isinstance(devices, str) and devices == "auto":
            chosen = local
        elif isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
            if not 1 <= devices <= len(local):
                raise ValueError(
                    f"devices={devices}, but this process sees {_visible(local)}; use devices between 1 and "
                    f"{len(local)}, or 'auto'"
                )
            if jax.process_count() > 1 and devices != len(local):
                raise ValueError(
                    f"devices={devices} in a run of {jax.process_count()} processes: a multi-process fit trains on "
                    f"every process's devices ({len(local)}); use devices='auto' or a Mesh"
                )
            chosen = local[: int(devices)]
        elif isinstance(devices, (list, tuple)) and devices and all(isinstance(d, jax.Device) for d in devices):
            if len(set(devices)) != len(devices):
                raise ValueError(f"devices lists a device twice: {list(devices)}")
            chosen = list(devices)
        else:
            raise ValueError(
                "devices must be 'auto', a number of devices, a list of jax devices or a jax.sharding.Mesh, got "
                f"{devices!r}"
            )
        mesh = Mesh(np.array(chosen), ("data",))
    if mesh.devices.size == 1 and mesh.devices.flat[0] == jax.devices()[0]:
        return None  # the default device: no layout, the programs every one-device fit shares
    return Layout(mesh, parallelism, min_shard_bytes=FSDP_MIN_BYTES)


def check_batch_divides(batch_size: int, layout: Layout | None, *, accumulate_steps: int = 1) -> None:
    """Refuses a global batch whose (micro-)batches do not split evenly over the devices, naming the nearest sizes
    that do (``accumulate_steps``: micro-batches per batch, each split over the devices)."""
    if layout is None or batch_size % (layout.size * accumulate_steps) == 0:
        return
    unit = layout.size * accumulate_steps
    lower = batch_size // unit * unit
    nearest = " or ".join(str(b) for b in (lower, lower + unit) if b > 0)
    if accumulate_steps == 1:
        what = f"batch_size={batch_size} does not split evenly over {layout.size} devices"
    else:
        what = (
            f"batch_size={batch_size} with accumulate_steps={accumulate_steps} gives micro-batches of "
            f"{batch_size // accumulate_steps}, which do not split evenly over {layout.size} devices"
        )
    raise ValueError(
        f"{what} (the batch size is the global batch: each device takes batch_size / {unit} examples per "
        f"{'micro-batch' if accumulate_steps > 1 else 'step'}); use {nearest}, or devices=1"
    )


def layout_of(tree: Any) -> Layout | None:
    """The data-parallel layout of arrays already on a mesh (a model trained by ``fit`` on several devices), or
    None: evaluation then splits its batches over the same devices."""
    for leaf in jax.tree.leaves(tree):
        sharding = getattr(leaf, "sharding", None)
        if isinstance(sharding, NamedSharding) and sharding.mesh.devices.size > 1:
            return Layout(sharding.mesh, "data")
    return None
