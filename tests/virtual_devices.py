"""Runs a script in a fresh interpreter that sees 8 virtual CPU devices (XLA reads the flag once, at start)."""

from __future__ import annotations

import os
import subprocess
import sys


def xla_flags(device_count: int | None = None) -> str:
    """XLA_FLAGS for a subprocess: the suite's own flags (conftest.py), and ``device_count`` virtual CPU devices."""
    flags = [os.environ.get("DLFUND_TEST_XLA_FLAGS", "")]
    if device_count is not None:
        flags.append(f"--xla_force_host_platform_device_count={device_count}")
    return " ".join(filter(None, flags))


def run_on_8_devices(script: str, timeout: int = 300) -> None:
    """Runs ``script``, which must print "OK" last; fails the test with its stderr otherwise."""
    env = {**os.environ, "XLA_FLAGS": xla_flags(8), "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("OK")
