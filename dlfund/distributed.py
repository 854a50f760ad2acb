"""Several processes, one run: ``dlfund.distributed.initialize`` wraps ``jax.distributed.initialize``.

Call it first, in every process, before anything else touches JAX. Afterwards ``jax.devices()`` lists the devices of
every process, and ``fit(..., devices="auto")`` builds its mesh over all of them. With no arguments JAX detects the
cluster where it can (Cloud TPU pods, SLURM); elsewhere give all three arguments. On the CPU backend the processes'
collectives go through gloo (set here), so two processes on one machine can test a multi-host run over localhost.
"""

from __future__ import annotations

import re
import socket
import time
from typing import Any

import jax

#: Seconds that :func:`initialize` waits for every process to reach the coordinator before it fails.
DEFAULT_TIMEOUT_S = 60

_ADDRESS = re.compile(r"^\[?[A-Za-z0-9_.:-]+\]?:\d{1,5}$")


def _check(coordinator_address: str | None, num_processes: int | None, process_id: int | None) -> None:
    given = {
        "coordinator_address": coordinator_address,
        "num_processes": num_processes,
        "process_id": process_id,
    }
    missing = [name for name, value in given.items() if value is None]
    if missing and len(missing) < 3:
        raise ValueError(
            f"dlfund.distributed.initialize got {', '.join(n for n in given if n not in missing)} but not "
            f"{', '.join(missing)}: give all three (coordinator_address='HOST:PORT', num_processes=N, "
            "process_id=I), or none to let JAX detect the cluster (Cloud TPU, SLURM)"
        )
    if missing:
        return
    if not isinstance(coordinator_address, str) or not _ADDRESS.match(coordinator_address):
        raise ValueError(f"coordinator_address must be 'HOST:PORT' (e.g. '10.0.0.1:1234'), got {coordinator_address!r}")
    for name, value in (("num_processes", num_processes), ("process_id", process_id)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    if not 0 <= process_id < num_processes:
        raise ValueError(
            f"process_id must be in [0, {num_processes - 1}] for {num_processes} processes, got {process_id}"
        )


def _wait_for_coordinator(address: str, timeout_s: float, process_id: int, num_processes: int) -> None:
    """Returns once something listens at ``address``; raises RuntimeError naming it after ``timeout_s``.

    JAX's own client aborts the whole process (a fatal log, not an exception) when the coordinator does not answer
    in time, so the processes that connect to it check first, where a failure can still be an exception.
    """
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, int(port)), timeout=min(1.0, timeout_s)):
                return
        except OSError as error:
            last = error
            time.sleep(0.2)
    raise RuntimeError(
        f"could not reach the coordinator at {address} within {timeout_s:g} s (process {process_id} of "
        f"{num_processes}): is process 0 running with the same coordinator_address, and is {host} reachable from "
        f"here? ({type(last).__name__}: {last})"
    )


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    timeout_s: int = DEFAULT_TIMEOUT_S,
    **options: Any,
) -> None:
    """Joins this process to a multi-process JAX run.

    Args:
      coordinator_address: ``"HOST:PORT"`` of process 0, which runs the coordinator (every process gives the same).
      num_processes: how many processes take part.
      process_id: this process's index, 0 .. num_processes - 1.
      timeout_s: how long to wait for the coordinator and for all processes to connect. A process other than 0
        that cannot reach the coordinator fails within it with a RuntimeError naming the address; process 0,
        which runs the coordinator, is stopped by JAX itself (a fatal error) when the others do not all join.
      options: more keyword arguments for ``jax.distributed.initialize`` (e.g. ``local_device_ids``).
    Raises:
      ValueError: some but not all of the three, a malformed address or ids, or JAX already initialized.
      RuntimeError: the coordinator could not be reached (or not every process connected) within ``timeout_s``.
    """
    _check(coordinator_address, num_processes, process_id)
    if jax.distributed.is_initialized():
        return  # already part of a multi-process run (a re-run notebook cell)
    # Nothing here may touch a backend before JAX's initialize (asking for the backend starts one). The CPU
    # collectives setting only matters where processes run on CPUs.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if coordinator_address is not None and process_id != 0:
        _wait_for_coordinator(coordinator_address, timeout_s, process_id, num_processes)
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
            initialization_timeout=int(timeout_s),
            **options,
        )
    except RuntimeError as error:
        text = str(error)
        if "before any JAX" in text or "already" in text:
            raise ValueError(
                "dlfund.distributed.initialize must run before anything else uses JAX (in a notebook: first cell, "
                f"then restart the kernel to change it): {text}"
            ) from error
        where = coordinator_address or "the detected coordinator"
        raise RuntimeError(
            f"could not join the multi-process run at {where} within {timeout_s} s (process {process_id} of "
            f"{num_processes}): is process 0 running, and is the address reachable from here? ({text.splitlines()[0]})"
        ) from error
    except ValueError as error:
        if coordinator_address is None:
            raise ValueError(
                "dlfund.distributed.initialize() found no cluster to join (JAX detects Cloud TPU pods and SLURM); "
                "pass coordinator_address='HOST:PORT', num_processes=N and process_id=I"
            ) from error
        raise


def is_main_process() -> bool:
    """True in process 0, the one that writes run folders, logs and progress bars."""
    return jax.process_index() == 0
