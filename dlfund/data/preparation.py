"""Writing a dataset's files to disk once, safely when several processes ask for it at the same time.

TFDS already writes a dataset into ``<data_dir>/<name>/incomplete.XXXXXX_<version>/`` and renames that
directory to ``<version>/`` only after every file is written, so a finished ``<version>/`` directory is
always complete. What it does not do is stop two processes (pytest-xdist workers, say) from preparing the
same dataset at once: the slower one's rename then fails. An exclusive ``fcntl`` lock per dataset serializes
preparation, and whoever gets the lock second finds the work done.

Datasets whose sources come from the network (builders with ``SOURCE_URLS``) are only prepared when a download
is allowed and, with ``download=None``, when the host answers within :data:`dlfund.data.network.PROBE_TIMEOUT`;
otherwise :class:`DatasetNotPreparedError` says at once how to prepare them elsewhere, instead of TFDS
retrying for minutes. A download that fails or is killed leaves ``<name>.tmp.<uuid>`` folders under
``<data_dir>/downloads``; they are removed under the lock, before the next attempt and after a failed one.
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

from dlfund.data import network
from dlfund.data.errors import DatasetNotPreparedError

if TYPE_CHECKING:
    import tensorflow_datasets as tfds

DATA_DIR_ENV = "DLFUND_DATA_DIR"
# Enough of a failed download's message to recognize it; TFDS's can run to pages.
_MAX_CAUSE_CHARS = 400


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """``data_dir`` if given, else ``$DLFUND_DATA_DIR`` if set, else ``~/tensorflow_datasets``."""
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV) or "~/tensorflow_datasets"
    return Path(data_dir).expanduser().resolve()


def is_prepared(builder: tfds.core.DatasetBuilder) -> bool:
    """Whether ``builder``'s dataset is complete on disk: its version directory exists and is valid."""
    # TFDS's own check logs a warning for a directory that does not exist yet; checking first avoids it.
    return Path(builder.data_path).is_dir() and builder.is_prepared()


def prepare(
    builder_cls: type[tfds.core.GeneratorBasedBuilder], data_dir: Path, *, download: bool | None = None
) -> tfds.core.GeneratorBasedBuilder:
    """A builder for ``builder_cls`` whose files exist under ``data_dir``, preparing them first if needed.

    Preparation writes ``array_record`` files (readable without TensorFlow). Leftovers of a preparation that
    was killed part-way, and a version directory that is not a valid TFDS dataset, are deleted first; they are
    never read.

    Args:
      builder_cls: a TFDS builder class; one with ``SOURCE_URLS`` downloads its sources.
      data_dir: the TFDS data directory.
      download: for builders that download: ``None`` downloads when the files are missing and the source host
        answers within 2 s; ``False`` never downloads; ``True`` tries without asking first. Builders that
        need no network (the bundled datasets) are prepared whatever this says.

    Raises:
      DatasetNotPreparedError: the files are missing and cannot be downloaded (``download=False``, the host
        does not answer, or the download failed); nothing was written or deleted in the first two cases.
    """
    builder = builder_cls(data_dir=os.fspath(data_dir))
    if is_prepared(builder) or tfds_is_mocked():
        # Under tfds.testing.mock_data the builder reads generated records: nothing to prepare, nothing to probe.
        return builder
    urls = source_urls(builder_cls)
    if urls:
        _check_download_allowed(builder, data_dir, urls, download)
    data_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(data_dir / f".{builder_cls.name}.lock"):
        # A builder reads the dataset's metadata when it is constructed; another process may have prepared
        # the dataset while this one waited for the lock, and only a fresh builder sees that.
        builder = builder_cls(data_dir=os.fspath(data_dir))
        if not is_prepared(builder):
            _remove_unfinished(builder, data_dir)
            # Constructed again because the previous one may have read metadata from what was just removed.
            builder = builder_cls(data_dir=os.fspath(data_dir))
            try:
                with _progress_bars_hidden():
                    builder.download_and_prepare(file_format="array_record")
            except Exception as error:
                # TFDS removes its own incomplete.* folder on an exception, not a failed download's folder.
                _remove_partial_downloads(builder, data_dir)
                if not urls:
                    raise
                cause = f"{type(error).__name__}: {error}"
                if len(cause) > _MAX_CAUSE_CHARS:
                    cause = cause[:_MAX_CAUSE_CHARS] + " [...]"
                reason = f"preparing it failed ({cause})"
                raise DatasetNotPreparedError(not_prepared_message(builder, data_dir, reason)) from error
    return builder


def tfds_is_mocked() -> bool:
    """Whether ``tfds.testing.mock_data`` is active (it replaces ``DatasetBuilder.download_and_prepare``).

    Under the mock, loading must work as it does with ``tfds`` itself, without files or a network, so that users
    can test their training code the way the Flax examples do.
    """
    import tensorflow_datasets as tfds

    prepare_fn = tfds.core.DatasetBuilder.download_and_prepare
    return getattr(prepare_fn, "__module__", "").startswith("tensorflow_datasets.testing")


def source_urls(builder_cls: type[tfds.core.DatasetBuilder]) -> tuple[str, ...]:
    """The URLs a builder downloads its sources from; empty for the bundled datasets, which need no network."""
    return tuple(getattr(builder_cls, "SOURCE_URLS", ()))


def not_prepared_message(builder: tfds.core.DatasetBuilder, data_dir: Path, reason: str) -> str:
    """What is missing, where dlfund looked, why it was not downloaded, and how to prepare it elsewhere."""
    name, version_dir = builder.name, Path(builder.data_path)
    if version_dir.is_dir():
        found = "it exists but is incomplete (no valid dataset_info.json): a partial copy?"
    else:
        found = "it does not exist"
    command = f"import dlfund.data; dlfund.data.load({name!r}, data_dir={os.fspath(data_dir)!r}, download=True)"
    return (
        f"Dataset {name!r} is not prepared under data_dir={os.fspath(data_dir)} and was not downloaded: {reason}.\n"
        f"Looked for {version_dir}/ (dataset_info.json and the {name}-train/{name}-test .array_record files): "
        f"{found}.\n"
        "To prepare it, run this on a machine with network access (TensorFlow is not needed):\n"
        f'    python -c "{command}"\n'
        f"(or train there: dlfund train --dataset {name} --download --data-dir {os.fspath(data_dir)}),\n"
        f"then copy the folder {data_dir / name} from there to {data_dir / name} here (or into another folder, "
        "passed as data_dir or set as DLFUND_DATA_DIR). A folder that TensorFlow Datasets itself prepared with "
        "file_format='array_record' works as well."
    )


def _check_download_allowed(
    builder: tfds.core.DatasetBuilder, data_dir: Path, urls: tuple[str, ...], download: bool | None
) -> None:
    """Raises :class:`DatasetNotPreparedError` unless a download may be tried now."""
    if download is True:
        return
    if download is False:
        raise DatasetNotPreparedError(not_prepared_message(builder, data_dir, "download=False"))
    if download is not None:
        raise TypeError(f"download must be None, True or False, got {download!r}")
    # One probe per server: the four MNIST files come from the same host.
    first_url_per_endpoint: dict[tuple[str, int], str] = {}
    for url in urls:
        first_url_per_endpoint.setdefault(network.endpoint(url), url)
    for (host, port), url in first_url_per_endpoint.items():
        if not network.reachable(url, timeout=network.PROBE_TIMEOUT):
            reason = (
                f"{host}:{port}, where its files come from, could not be reached within {network.PROBE_TIMEOUT:g} s "
                "(offline?); pass download=True (on the command line: dlfund train --download) to try anyway"
            )
            raise DatasetNotPreparedError(not_prepared_message(builder, data_dir, reason))


def incomplete_dirs(builder: tfds.core.DatasetBuilder) -> list[Path]:
    """Unfinished TFDS preparation directories of ``builder``'s version (``incomplete.XXXXXX_<version>``)."""
    version_dir = Path(builder.data_path)
    return sorted(version_dir.parent.glob(f"incomplete.*_{version_dir.name}"))


def partial_downloads(builder: tfds.core.DatasetBuilder, data_dir: Path) -> list[Path]:
    """Folders of unfinished downloads of ``builder``'s sources under ``<data_dir>/downloads``.

    TFDS downloads ``url`` into ``<fname>.tmp.<uuid>/`` next to its final name ``<fname>`` (in a per-dataset
    subfolder, or directly in ``downloads/`` in its legacy layout) and renames the file out when it is
    complete; a download that fails or is killed leaves the folder behind.
    """
    from tensorflow_datasets.core.download import resource

    downloads = data_dir / "downloads"
    found: set[Path] = set()
    for url in source_urls(type(builder)):
        fname = resource.get_dl_fname(url)
        for folder in (downloads / builder.name, downloads):
            found.update(path for path in folder.glob(f"{fname}.tmp.*") if path.is_dir())
    return sorted(found)


def _remove_unfinished(builder: tfds.core.DatasetBuilder, data_dir: Path) -> None:
    # Only called while holding the lock, so no dlfund process is writing these: they are what a killed
    # preparation left behind. TFDS ignores incomplete.* directories, but they would otherwise pile up. A
    # version directory that exists without being valid was not made by TFDS's rename (a partial copy or
    # deletion), and TFDS would "reuse" it rather than rewrite it, so it goes too.
    for path in incomplete_dirs(builder):
        shutil.rmtree(path, ignore_errors=True)
    version_dir = Path(builder.data_path)
    if version_dir.exists():
        shutil.rmtree(version_dir)
    _remove_partial_downloads(builder, data_dir)


def _remove_partial_downloads(builder: tfds.core.DatasetBuilder, data_dir: Path) -> None:
    # Only this dataset's own URLs: another dataset's download may be running in another process right now.
    for path in partial_downloads(builder, data_dir):
        shutil.rmtree(path, ignore_errors=True)


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
