"""Runs a script in several processes that form one multi-process JAX run over localhost (CPU collectives)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from virtual_devices import xla_flags


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run_processes(
    args_for, count: int = 2, timeout: int = 300, env: dict | None = None, check: bool = True
) -> list[str] | list[tuple[int, str, str]]:
    """Starts ``count`` processes, process i running ``[sys.executable, *args_for(i, address)]``; returns their
    stdouts. Each must exit 0, else the test fails with the stderr of the first that failed (the others, which
    would wait for it in a collective, are stopped at once).

    Output is read after the processes end, so keep it small (a pipe holds ~64 KiB). ``check=False``: returns
    ``(exit code, stdout, stderr)`` of each instead, whatever they are."""
    address = f"localhost:{free_port()}"
    full_env = {**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})}
    full_env["XLA_FLAGS"] = xla_flags()  # one CPU device per process
    procs = [
        subprocess.Popen(
            [sys.executable, *args_for(i, address)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
        )
        for i in range(count)
    ]
    try:
        deadline = time.monotonic() + timeout
        while any(proc.poll() is None for proc in procs):
            failed = [i for i, proc in enumerate(procs) if proc.poll() not in (None, 0)]
            if failed:  # the others would wait for it in a collective until the timeout
                break
            assert time.monotonic() < deadline, f"the processes ran longer than {timeout} s"
            time.sleep(0.1)
        results = []
        for i, proc in enumerate(procs):
            if proc.poll() is None:
                proc.kill()
            out, err = proc.communicate()
            results.append((i, proc.returncode, out, err))
        if not check:
            return [(code, out, err) for _, code, out, err in results]
        for i, code, _, err in results:
            if code not in (0, -9):
                raise AssertionError(f"process {i} exited {code}:\n{err[-3000:]}")
        for i, code, _, err in results:
            assert code == 0, f"process {i} was stopped after another failed:\n{err[-2000:]}"
        return [out for _, _, out, _ in results]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
