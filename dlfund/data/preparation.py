"""Writing a dataset's files to disk once, safely when several processes ask for it at the same time.

TFDS already writes a dataset into ``<data_dir>/<name>/incomplete.XXXXXX_<version>/`` and renames that
directory to ``<version>/`` only after every file is written, so a finished ``<version>/`` directory is
always complete. What it does not do is stop two processes (pytest-xdist workers, say) from preparing the
same dataset at once: the slower one's rename then fails. An exclusive ``fcntl`` lock per dataset serializes
preparation, and whoever gets the lock second finds the work done.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

try:
    import fcntl
except ImportError:  # Windows: no fcntl; preparation then relies on TFDS's atomic rename alone.
    fcntl = None

if TYPE_CHECKING:
    import tensorflow_datasets as tfds

DATA_DIR_ENV = "DLFUND_DATA_DIR"


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """``data_dir`` if given, else ``$DLFUND_DATA_DIR`` if set, else ``~/tensorflow_datasets``."""
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV) or "~/tensorflow_datasets"
    return Path(data_dir).expanduser().resolve()


def is_prepared(builder: tfds.core.DatasetBuilder) -> bool:
    """Whether ``builder``'s dataset is complete on disk: its version directory exists and is valid."""
    # TFDS's own check logs a warning for a directory that does not exist yet; checking first avoids it.
    return Path(builder.data_path).is_dir() and builder.is_prepared()


def prepare(builder_cls: type[tfds.core.GeneratorBasedBuilder], data_dir: Path) -> tfds.core.GeneratorBasedBuilder:
    """A builder for ``builder_cls`` whose files exist under ``data_dir``, preparing them first if needed.

    Preparation writes ``array_record`` files (readable without TensorFlow). Leftovers of a preparation that
    was killed part-way, and a version directory that is not a valid TFDS dataset, are deleted first; they are
    never read.
    """
    builder = builder_cls(data_dir=os.fspath(data_dir))
    if is_prepared(builder):
        return builder
    data_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(data_dir / f".{builder_cls.name}.lock"):
        # A builder reads the dataset's metadata when it is constructed; another process may have prepared
        # the dataset while this one waited for the lock, and only a fresh builder sees that.
        builder = builder_cls(data_dir=os.fspath(data_dir))
        if not is_prepared(builder):
            _remove_unfinished(builder)
            # Constructed again because the previous one may have read metadata from what was just removed.
            builder = builder_cls(data_dir=os.fspath(data_dir))
            with _progress_bars_hidden():
                builder.download_and_prepare(file_format="array_record")
    return builder


def incomplete_dirs(builder: tfds.core.DatasetBuilder) -> list[Path]:
    """Unfinished TFDS preparation directories of ``builder``'s version (``incomplete.XXXXXX_<version>``)."""
    version_dir = Path(builder.data_path)
    return sorted(version_dir.parent.glob(f"incomplete.*_{version_dir.name}"))


def _remove_unfinished(builder: tfds.core.DatasetBuilder) -> None:
    # Only called while holding the lock, so no dlfund process is writing these: they are what a killed
    # preparation left behind. TFDS ignores incomplete.* directories, but they would otherwise pile up. A
    # version directory that exists without being valid was not made by TFDS's rename (a partial copy or
    # deletion), and TFDS would "reuse" it rather than rewrite it, so it goes too.
    for path in incomplete_dirs(builder):
        shutil.rmtree(path, ignore_errors=True)
    version_dir = Path(builder.data_path)
    if version_dir.exists():
        shutil.rmtree(version_dir)


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """Holds an exclusive advisory lock on ``path`` (created if missing) for the duration of the block."""
    if fcntl is None:
        yield
        return
    # "a" creates the file without truncating it; flock locks belong to this open file, so threads of one
    # process exclude each other too, and the kernel releases the lock if the process dies.
    with open(path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def _progress_bars_hidden() -> Iterator[None]:
    """Hides TFDS's progress bars (sub-second here, so only clutter), then restores the caller's setting."""
    # Imported here so that importing dlfund.data does not import TFDS (a quarter of a second).
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core.utils import tqdm_utils

    # TFDS has a public switch but no public getter; should the private flag move, bars end up on (default).
    shown_before = getattr(tqdm_utils, "_active", True)
    tfds.display_progress_bar(False)
    try:
        yield
    finally:
        tfds.display_progress_bar(shown_before)
