"""``dlfund.env_report()`` / ``dlfund env``: the devices, processes and versions, and the set-up problems people hit.

The checks are the ones that cost people hours on accelerators: a Colab or Cloud TPU whose runtime JAX does not
find (it silently falls back to the CPU), a GPU whose memory JAX preallocates (a second notebook then fails to
allocate), 64-bit mode left on (float64 defaults double the memory and are slow on GPUs and TPUs), jax and jaxlib
of different versions, and virtual CPU devices from ``XLA_FLAGS`` mistaken for real ones.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from typing import Any

import jax

_PACKAGES = ("dlfund", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tensorflow-datasets", "numpy")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _on_colab() -> bool:
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ or "COLAB_GPU" in os.environ


def _tpu_expected() -> bool:
    """A TPU is attached (Colab's TPU runtime, a Cloud TPU VM) whatever JAX found."""
    return bool(os.environ.get("COLAB_TPU_ADDR") or os.environ.get("TPU_NAME")) or os.path.exists("/dev/accel0")


def problems(info: dict[str, Any]) -> list[str]:
    """The warnings that apply to ``info`` (:func:`environment`), each with its fix."""
    found = []
    backend = info["backend"]
    versions = info["versions"]
    if _tpu_expected() and backend != "tpu":
        found.append(
            f"a TPU is attached but JAX runs on {backend}: the TPU runtime was not found. Install JAX's TPU "
            "support (pip install -U 'jax[tpu]'), restart the runtime, and check that no other process holds the TPU"
        )
    if info["colab"] and backend == "cpu" and not _tpu_expected():
        found.append("Colab runs this notebook on the CPU: Runtime > Change runtime type > a GPU or TPU")
    if backend == "gpu" and os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE", "").lower() not in ("false", "0"):
        fraction = os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.75")
        found.append(
            f"JAX preallocates {float(fraction):.0%} of GPU memory when it starts, so a second process (another "
            "notebook) on this GPU fails to allocate; set XLA_PYTHON_CLIENT_PREALLOCATE=false (or a smaller "
            "XLA_PYTHON_CLIENT_MEM_FRACTION) before importing jax"
        )
    if info["x64"]:
        found.append(
            "64-bit mode is on (jax_enable_x64): arrays default to float64/int64, which doubles memory and is slow "
            "on GPUs and TPUs; dlfund trains in float32 either way. Turn it off unless you need it"
        )
    if versions.get("jax") and versions.get("jaxlib") and versions["jax"] != versions["jaxlib"]:
        found.append(
            f"jax {versions['jax']} and jaxlib {versions['jaxlib']} differ; mismatched versions fail in odd ways. "
            "Install matching ones: pip install -U jax jaxlib (on Colab keep its jax and upgrade jaxlib to match)"
        )
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags and backend == "cpu":
        found.append(
            f"the {info['local_devices']} CPU devices are virtual (XLA_FLAGS={flags!r}): they share this machine's "
            f"{os.cpu_count()} cores, so several devices are for testing sharding, not for speed"
        )
    return found


def environment() -> dict[str, Any]:
    """What :func:`env_report` prints, as a JSON-friendly dict."""
    devices = jax.devices()
    local = jax.local_devices()
    memory = None
    stats = local[0].memory_stats() if local and local[0].platform != "cpu" else None
    if stats and stats.get("bytes_limit"):
        memory = int(stats["bytes_limit"])
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {name: _version(name) for name in _PACKAGES},
        "backend": jax.default_backend(),
        "devices": [f"{d.platform}:{d.id} {d.device_kind}" for d in devices],
        "device_count": len(devices),
        "local_devices": len(local),
        "process_count": jax.process_count(),
        "process_index": jax.process_index(),
        "device_memory_bytes": memory,
        "x64": bool(jax.config.read("jax_enable_x64")),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "colab": _on_colab(),
        "cpu_count": os.cpu_count(),
    }
    info["problems"] = problems(info)
    return info


def env_report(*, file: Any = None) -> str:
    """Prints (to ``file``, default stdout) and returns a short report: devices, processes, versions, problems."""
    info = environment()
    kinds: dict[str, int] = {}
    for name in info["devices"]:
        kind = name.split(" ", 1)[1]
        kinds[kind] = kinds.get(kind, 0) + 1
    lines = [
        f"backend: {info['backend']}; devices: {info['device_count']} "
        f"({', '.join(f'{n} x {k}' for k, n in kinds.items())}); local to this process: {info['local_devices']}",
        f"processes: {info['process_count']} (this is process {info['process_index']})",
    ]
    if info["device_memory_bytes"]:
        lines.append(f"memory per device: {info['device_memory_bytes'] / 2**30:.1f} GiB")
    lines.append(f"python {info['python']} on {info['platform']}; {info['cpu_count']} CPUs")
    lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v))
    if info["problems"]:
        lines.append("problems:")
        lines.extend(f"  - {p}" for p in info["problems"])
    else:
        lines.append("problems: none found")
    text = "\n".join(lines)
    print(text, file=file or sys.stdout)
    return text
