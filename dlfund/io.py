"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Opens a temporary file beside ``path``; on success it is flushed, fsynced and renamed over ``path``.

    On an exception the temporary file is removed and ``path`` keeps its previous content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would make run folders unreadable to others
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Indented JSON, with innermost lists of numbers on one line (a confusion matrix stays readable)."""
    text = json.dumps(obj, indent=2, default=_jsonable)
    text = _NUMBER_LIST.sub(lambda m: "[" + " ".join(m.group(1).split()) + "]", text)
    write_text(path, text + "\n")


_NUMBER_LIST = re.compile(r"\[\s*((?:-?[\d.eE+-]+|NaN|-?Infinity)(?:,\s*(?:-?[\d.eE+-]+|NaN|-?Infinity))*)\s*\]")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_with(path: str | os.PathLike, writer: Callable[[IO], None], mode: str = "wb") -> None:
    """Atomically writes whatever ``writer(file)`` writes."""
    with atomic_open(path, mode) as f:
        writer(f)


def read_json(path: str | os.PathLike) -> Any:
    """The JSON value in ``path``; a damaged file raises ValueError naming it (json's own message names no file).

    Raises:
      FileNotFoundError: there is no such file.
      ValueError: the file is not valid JSON (e.g. cut short, or edited by hand).
    """
    text = Path(path).read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is damaged or not JSON: {error}") from None


def _jsonable(obj: Any) -> Any:
    # NumPy/JAX scalars and arrays, tuples of them, paths: what configs and metrics contain.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")
