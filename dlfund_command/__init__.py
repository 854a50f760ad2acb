"""The ``dlfund`` command's entry point: large buffers on transparent huge pages, then :func:`dlfund.cli.main`.

XLA:CPU allocates its scratch buffers with ``malloc`` on every call; buffers this large come from fresh ``mmap``
regions, and the kernel fills them in 4 KiB page faults. glibc's ``glibc.malloc.hugetlb=1`` tunable makes malloc
ask for transparent huge pages (2 MiB) on those regions. Measured on this project's 2-core CPU
(``benchmarks/README.md``): ``dlfund.fit`` trains the benchmark CNN (28x28 images, batch 128) 1.31x faster;
the default ``dlfund train`` job (8x8 digits, small buffers) takes as long as without (14.2-15.0 s either way,
peak memory 1.19 GB either way).

glibc reads ``GLIBC_TUNABLES`` once, when a process starts, so a process cannot switch it on for itself: this
module re-executes the command with the setting (``python -m dlfund ARGS``). It lives outside the ``dlfund``
package so that the re-execution happens before dlfund and JAX are imported (2.7 s here); it costs one Python
start-up (~40 ms). Nothing changes where the setting does not apply (not Linux with glibc >= 2.35, transparent
huge pages switched off, the tunable already set by the user) or when ``DLFUND_MALLOC=default`` opts out.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path

HUGE_PAGES = "glibc.malloc.hugetlb=1"
OPT_OUT = "DLFUND_MALLOC"  # DLFUND_MALLOC=default: run with glibc's default malloc settings
THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _glibc_version() -> tuple[int, ...] | None:
    library, version = platform.libc_ver()
    if library != "glibc" or not version:
        return None
    try:
        return tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        return None


def _transparent_huge_pages() -> str | None:
    """The kernel's mode, "always", "madvise" or "never" (the bracketed word of the sysfs file); None if unknown."""
    try:
        text = THP_SETTING.read_text()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else None


def tuned_environment(
    environ: Mapping[str, str],
    *,
    system: str | None = None,
    glibc: tuple[int, ...] | str | None = "detect",
    thp: str | None = "detect",
) -> dict[str, str] | None:
    """The environment to re-execute the command in, or None to run it as it is.

    Args:
      environ: the current environment.
      system, glibc, thp: the platform (``sys.platform``), glibc's (major, minor) version and the kernel's
        transparent-huge-page mode; detected unless given (the tests give them).
    """
    system = sys.platform if system is None else system
    if system != "linux" or environ.get(OPT_OUT, "").strip().lower() == "default":
        return None
    tunables = environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" in tunables:  # the user's own choice (or this re-execution's) stands
        return None
    glibc = _glibc_version() if glibc == "detect" else glibc
    if glibc is None or glibc < (2, 35):  # the tunable arrived in glibc 2.35
        return None
    thp = _transparent_huge_pages() if thp == "detect" else thp
    if thp not in ("always", "madvise"):
        return None
    return {**environ, "GLIBC_TUNABLES": f"{tunables}:{HUGE_PAGES}" if tunables else HUGE_PAGES}


def main() -> None:
    """Runs ``dlfund ARGS``: re-executed once with huge pages where they apply, else directly."""
    env = tuned_environment(os.environ)
    if env is not None:
        # If the interpreter cannot be re-executed (unusual sandboxes), run without the setting.
        with contextlib.suppress(OSError):
            os.execve(sys.executable, [sys.executable, "-m", "dlfund", *sys.argv[1:]], env)
    from dlfund.cli import exit_with
    from dlfund.cli import main as cli_main

    exit_with(cli_main())
