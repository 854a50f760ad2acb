"""Runs a script in several processes that form one multi-process JAX run over localhost (CPU collectives)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run_processes(args_for, count: int = 2, timeout: int = 300, env: dict | None = None) -> list[str]:
    """Starts ``count`` processes, process i running ``[sys.executable, *args_for(i, address)]``; returns their
    stdouts (each must exit 0, else the test fails with its stderr)."""
    address = f"localhost:{free_port()}"
    full_env = {**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})}
    full_env.pop("XLA_FLAGS", None)  # one CPU device per process
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
    outputs = []
    try:
        for i, proc in enumerate(procs):
            out, err = proc.communicate(timeout=timeout)
            assert proc.returncode == 0, f"process {i} exited {proc.returncode}:\n{err[-3000:]}"
            outputs.append(out)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return outputs
