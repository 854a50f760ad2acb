"""Where training batches come from: arrays on the device, or batches streamed from the host.

Data that fits in device memory is put there once and each epoch gathers its batches on the device (the fast
path). Data that does not fit stays on the host (NumPy arrays, or a lazy :class:`dlfund.data.SplitReader` over
files) and a background thread reads, checks and transfers each batch while the device trains on the previous one,
into the same compiled step. :func:`choose_placement` decides, from the data's size and the device's memory.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import jax
import numpy as np

logger = logging.getLogger("dlfund")

#: Share of the device's memory the training data may take when it is placed there: the rest is for parameters,
#: optimizer state, activations and XLA's scratch space.
DEVICE_DATA_FRACTION = 0.25
#: Batches read ahead of the step that uses them: enough to hide read-time jitter, few enough to bound memory.
PREFETCH = 4

PLACEMENTS = ("auto", "device", "stream")


class HostSource(Protocol):
    """Random access to host data: ``len(source)`` examples, ``source.read(indices) -> (x, y)`` NumPy arrays, and
    ``input_shape``, the shape of one example (checked against the model before anything is read)."""

    input_shape: tuple[int, ...]

    def __len__(self) -> int: ...

    def read(self, indices: Any) -> tuple[np.ndarray, np.ndarray]: ...


class ArraySource:
    """A :class:`HostSource` over in-memory arrays x [N, ...] and y [N, ...]."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x, self.y = x, y
        self.input_shape = tuple(x.shape[1:])

    def __len__(self) -> int:
        return len(self.x)

    def read(self, indices: Any) -> tuple[np.ndarray, np.ndarray]:
        return self.x[indices], self.y[indices]


def is_host_source(obj: Any) -> bool:
    """A lazy reader (anything with ``read`` and ``__len__``), as opposed to an ``(x, y)`` pair."""
    return hasattr(obj, "read") and hasattr(obj, "__len__") and not isinstance(obj, (tuple, list))


def example_shape(source: Any, name: str) -> tuple[int, ...]:
    """A reader's ``input_shape``, or a TypeError that says a reader needs one."""
    shape = getattr(source, "input_shape", None)
    if shape is None:
        raise TypeError(
            f"the {name} data is a reader ({type(source).__name__}: read and len) without input_shape, the shape of "
            "one example, which dlfund checks against the model before reading; give it that attribute"
        )
    return tuple(shape)


def data_bytes(num_examples: int, example_shape: tuple[int, ...]) -> int:
    """Bytes of a split once normalized to float32 (inputs and int32 labels) on the device."""
    return num_examples * (math.prod(example_shape) * 4 + 4)


def device_memory_bytes(device: jax.Device | None = None) -> int:
    """Memory of the device that holds the data (host RAM for the CPU backend)."""
    device = device or jax.devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def choose_placement(
    nbytes: int, requested: str = "auto", *, budget: int | None = None, device: jax.Device | None = None
) -> tuple[str, str]:
    """``("device" | "stream", reason)`` for training data of ``nbytes``.

    Raises:
      ValueError: an unknown placement.
    """
    if requested not in PLACEMENTS:
        raise ValueError(f"Unknown data_placement {requested!r}. Known: {', '.join(PLACEMENTS)}.")
    if budget is None:
        budget = int(DEVICE_DATA_FRACTION * device_memory_bytes(device))
    size = f"{nbytes / 2**20:.1f} MiB"
    if requested != "auto":
        placement, reason = requested, f"data_placement={requested!r} requested ({size})"
    elif nbytes <= budget:
        placement, reason = "device", f"{size} fit in the device budget of {budget / 2**20:.0f} MiB"
    else:
        placement, reason = "stream", f"{size} exceed the device budget of {budget / 2**20:.0f} MiB"
    logger.info("training data placement: %s (%s)", placement, reason)
    return placement, reason


def local_rows(sharding: Any, batch_size: int) -> slice:
    """The rows of a batch [batch_size, ...] that this process's devices hold under ``sharding`` (all of them
    in a one-process run): in a multi-process run each process reads only these."""
    if sharding is None or sharding.is_fully_addressable:
        return slice(None)
    rows = [index[0] for index in sharding.addressable_devices_indices_map((batch_size,)).values()]
    return slice(min(r.start or 0 for r in rows), max(batch_size if r.stop is None else r.stop for r in rows))


def _to_devices(batch: tuple[np.ndarray, np.ndarray], sharding: Any, batch_size: int):
    if sharding is None or sharding.is_fully_addressable:
        return jax.device_put(batch, sharding)
    return tuple(
        jax.make_array_from_process_local_data(sharding, part, (batch_size, *part.shape[1:])) for part in batch
    )


class Prefetcher:
    """Reads batches in a background thread, in ``order``, and puts them on the device ahead of use.

    Args:
      source: a :class:`HostSource`.
      order: int [steps, batch_size] example indices of each batch.
      prepare: turns a host batch ``(x, y)`` into checked arrays (raises ValueError on bad data).
      depth: batches read ahead.
      sharding: where each batch goes (a ``jax.sharding.Sharding``: split over a mesh); None: the default device.

    Iterating yields ``(x, y)`` device arrays; an error in the reader thread is raised in the caller's thread.
    """

    def __init__(
        self,
        source: HostSource,
        order: np.ndarray,
        prepare: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
        depth: int = PREFETCH,
        sharding: Any = None,
    ):
        self._sharding = sharding
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, args=(source, order, prepare), daemon=True)
        self._thread.start()

    def _work(self, source, order, prepare) -> None:
        try:
            rows = local_rows(self._sharding, order.shape[1]) if len(order) else slice(None)
            for indices in order:
                if self._stop.is_set():
                    return
                batch_size = len(indices)
                indices = indices[rows]  # a multi-process run: only the rows of this process's devices
                # Sorted reads are sequential on disk; the batch is then put back in the epoch's order.
                sort = np.argsort(indices, kind="stable")
                x, y = source.read(indices[sort])
                unsort = np.empty_like(sort)
                unsort[sort] = np.arange(len(sort))
                x, y = prepare(x[unsort], y[unsort])
                self._put(("batch", _to_devices((x, y), self._sharding, batch_size)))
            self._put(("done", None))
        except BaseException as error:  # handed to the consumer, which re-raises it
            self._put(("error", error))

    def _put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[tuple[jax.Array, jax.Array]]:
        while True:
            kind, value = self._queue.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
