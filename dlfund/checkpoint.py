"""Training checkpoints with Orbax: keep the latest N and the best, verify them, survive interrupted saves.

A :class:`CheckpointStore` saves named pytrees of arrays ("items") plus a JSON ``meta`` dict under ``directory/<step>/``
with Orbax's ``CheckpointManager`` (asynchronous by default: the arrays are written in the background while
training goes on). Orbax commits each checkpoint by renaming a temporary directory, so a process killed in the
middle of a save leaves the previous checkpoints intact and only a ``<step>.orbax-checkpoint-tmp`` directory
behind, which is ignored (and reported).

Orbax does not notice a checkpoint whose files were later truncated or corrupted, so each finished checkpoint also
gets ``dlfund_integrity.json``: the SHA-256 and size of every file in it. ``restore_latest`` checks it and falls
back to the previous checkpoint, with a warning, when a file does not match or a restore fails.

This module knows nothing about training: it stores pytrees (no typed PRNG keys: store ``jax.random.key_data``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

FORMAT_VERSION = 1
INTEGRITY_FILE = "dlfund_integrity.json"
_TMP_MARKER = ".orbax-checkpoint-tmp"


class CheckpointWarning(UserWarning):
    """A checkpoint was damaged or unfinished and was skipped."""


class CheckpointError(RuntimeError):
    """No usable checkpoint, or one this version of dlfund cannot read."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (full or read-only disk, ...): Orbax's errors, as an ``OSError``."""


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(step_dir: Path) -> list[Path]:
    return sorted(p for p in step_dir.rglob("*") if p.is_file() and p.name != INTEGRITY_FILE)


def _default_layout(leaf: Any) -> Any:
    return jax.numpy.copy(leaf) if isinstance(leaf, jax.Array) else leaf


def write_integrity(step_dir: Path) -> None:
    """Records size and SHA-256 of every file of a finished checkpoint."""
    record = {str(p.relative_to(step_dir)): {"size": p.stat().st_size, "sha256": _digest(p)} for p in _files(step_dir)}
    tmp = step_dir / f".{INTEGRITY_FILE}.tmp"
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, step_dir / INTEGRITY_FILE)


def check_integrity(step_dir: Path) -> str | None:
    """None if the checkpoint matches its record (or has none yet); else what is wrong."""
    record_path = step_dir / INTEGRITY_FILE
    if not record_path.exists():
        return None  # saved but not yet verified (the process stopped right after the save); Orbax committed it
    try:
        record = json.loads(record_path.read_text())
        expected_files = {name: (int(entry["size"]), str(entry["sha256"])) for name, entry in record.items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"its integrity record {INTEGRITY_FILE} is damaged"
    for name, (size, digest) in expected_files.items():
        path = step_dir / name
        if not path.exists():
            return f"file {name} is missing"
        if path.stat().st_size != size:
            return f"file {name} has {path.stat().st_size} bytes, {size} were written"
        if _digest(path) != digest:
            return f"file {name} does not match the checksum written with it"
    return None


def _check_fits(step: int, directory: Path, item: str, target: Any, restored: Any) -> None:
    """Orbax restores stored arrays whatever shape the target asks for: check that the shapes are the ones asked for.

    Dtypes are not compared: Orbax casts each stored array to its target's dtype (a checkpoint written in float32
    restores into a bfloat16 model as bfloat16), so a restored array always has the dtype that was asked for.
    """
    want, want_tree = jax.tree_util.tree_flatten_with_path(target)
    got, got_tree = jax.tree_util.tree_flatten_with_path(restored)
    if want_tree != got_tree:
        raise CheckpointError(
            f"checkpoint {step} in {directory}: item {item!r} has another structure than the one being restored "
            "(another model or optimizer?)"
        )
    for (path, w), (_, g) in zip(want, got):
        if tuple(w.shape) != tuple(g.shape):
            raise CheckpointError(
                f"checkpoint {step} in {directory} does not fit: {item}{jax.tree_util.keystr(path)} is "
                f"{g.dtype}{list(g.shape)} in the checkpoint, {w.dtype}{list(w.shape)} in what is being restored"
            )


def _ranking(monitor: str, mode: str) -> Callable[[dict[str, float]], float]:
    worst = math.inf if mode == "min" else -math.inf

    def value(metrics: dict[str, float]) -> float:
        v = metrics.get(monitor, worst)
        return worst if v is None or math.isnan(v) else v

    return value


class CheckpointStore:
    """Orbax checkpoints of one run.

    Args:
      directory: where the step directories live (created if missing).
      keep: how many of the latest checkpoints to keep, >= 1.
      monitor: a metric name (e.g. "val_loss"); the checkpoint with the best value is kept too, whatever its age.
      mode: "min" or "max", the direction in which ``monitor`` improves.
      async_save: write in the background (Orbax's asynchronous checkpointing).
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        keep: int = 3,
        monitor: str | None = None,
        mode: str = "min",
        async_save: bool = True,
    ):
        import orbax.checkpoint as ocp

        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"keep must be an integer >= 1, got {keep!r}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.directory = Path(directory).absolute()
        policies = [ocp.checkpoint_managers.LatestN(keep)]
        if monitor is not None:
            # BestN keeps the last n after sorting; descending order puts the lowest value last.
            policies.append(
                ocp.checkpoint_managers.BestN(get_metric_fn=_ranking(monitor, mode), reverse=mode == "min", n=1)
            )
        self._ocp = ocp
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
                # best_fn makes Orbax store each checkpoint's metrics, so the best one is still known (and kept)
                # after the run is reopened; retention itself is the preservation policy above.
                best_fn=None if monitor is None else _ranking(monitor, mode),
                best_mode=mode,
                enable_async_checkpointing=async_save,
            ),
        )
        self._unverified: list[int] = []

    def steps(self) -> list[int]:
        """Finished checkpoints, oldest first."""
        return sorted(self._manager.all_steps())

    def interrupted(self) -> list[str]:
        """Leftovers of saves that never finished (a process killed mid-save)."""
        return sorted(p.name for p in self.directory.glob(f"*{_TMP_MARKER}*"))

    def save(
        self, step: int, items: dict[str, Any], meta: dict[str, Any], metrics: dict[str, float] | None = None
    ) -> None:
        """Saves ``items`` (name -> pytree of arrays) and ``meta`` (JSON) as checkpoint ``step``.

        Items are stored separately, so a reader can restore some of them (e.g. only the model, not the optimizer).
        """
        if "meta" in items:
            raise ValueError("'meta' is reserved for the JSON metadata")
        self._finish_pending()
        args = self._ocp.args
        saves = {name: args.StandardSave(tree) for name, tree in items.items()}
        try:
            self._manager.save(
                step,
                args=args.Composite(**saves, meta=args.JsonSave({**meta, "format_version": FORMAT_VERSION})),
                metrics=metrics,
                force=True,
            )
        except Exception as error:
            raise CheckpointWriteError(f"could not save checkpoint {step} in {self.directory}: {error}") from error
        self._unverified.append(step)

    def _finish_pending(self) -> None:
        try:
            self._manager.wait_until_finished()
        except Exception as error:  # an asynchronous write failed (Orbax reports e.g. RESOURCE_EXHAUSTED)
            raise CheckpointWriteError(f"could not finish writing checkpoints in {self.directory}: {error}") from error
        for step in self._unverified:
            step_dir = self.directory / str(step)
            # Process 0 records it (in a multi-process run Orbax has finished every process's part by now); a
            # checkpoint the retention policy already removed needs no record.
            if step_dir.exists() and jax.process_index() == 0:
                write_integrity(step_dir)
        self._unverified = []

    def wait(self) -> None:
        """Blocks until every save has finished and is verified."""
        self._finish_pending()

    def items(self, step: int) -> list[str]:
        """Names of the items stored in checkpoint ``step``."""
        step_dir = self.directory / str(step)
        return sorted(p.name for p in step_dir.iterdir() if p.is_dir() and p.name not in ("meta", "metrics"))

    def restore(self, step: int, targets: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Restores the items named in ``targets`` (each into the structure of its target) and the metadata.

        Items that ``targets`` names but the checkpoint lacks are left out of the result.
        """
        self._finish_pending()
        problem = check_integrity(self.directory / str(step))
        if problem:
            raise CheckpointError(f"checkpoint {step} in {self.directory} is damaged: {problem}")
        args = self._ocp.args
        meta = self._manager.restore(step, args=args.Composite(meta=args.JsonRestore())).meta
        version = meta.get("format_version", FORMAT_VERSION)
        if version > FORMAT_VERSION:
            raise CheckpointError(
                f"checkpoint {step} in {self.directory} was written by a newer dlfund (checkpoint format {version}; "
                f"this one reads up to {FORMAT_VERSION}); upgrade dlfund to resume it"
            )
        present = set(self.items(step))
        restores = {
            name: args.StandardRestore(jax.tree.map(self._ocp.utils.to_shape_dtype_struct, target))
            for name, target in targets.items()
            if name in present
        }
        restored = self._manager.restore(step, args=args.Composite(**restores))
        # Orbax returns arrays with an explicit memory layout; a compiled program is specialized on its inputs'
        # layouts, so a resumed run's first call and its later ones (whose inputs come out of the program with the
        # default layout) would be two programs. A copy has the default layout, as every other array.
        items = {name: jax.tree.map(_default_layout, restored[name]) for name in restores}
        for name in restores:
            _check_fits(step, self.directory, name, targets[name], items[name])
        return items, meta

    def restore_latest(
        self, targets: dict[str, Any], *, set_aside: bool = True
    ) -> tuple[int, dict[str, Any], dict[str, Any]] | None:
        """The newest checkpoint that restores cleanly, as ``(step, items, meta)``; None if there is none.

        Damaged checkpoints and leftovers of interrupted saves are reported with a :class:`CheckpointWarning`
        and skipped; with ``set_aside`` (for training, which saves those steps again) skipped checkpoints are
        renamed ``<step>.damaged``, kept for inspection; without it (loading a model to read) nothing is changed.
        A checkpoint from a newer format raises :class:`CheckpointError`.
        """
        for leftover in self.interrupted():
            warnings.warn(
                f"{self.directory / leftover} is an unfinished save (the process stopped while writing it); "
                "ignoring it",
                CheckpointWarning,
                stacklevel=2,
            )
        skipped = []
        try:
            for step in reversed(self.steps()):
                try:
                    items, meta = self.restore(step, targets)
                except CheckpointError as error:
                    if "is damaged" not in str(error):  # a newer format, or a checkpoint of something else
                        raise
                    warnings.warn(f"{error}; trying the previous checkpoint", CheckpointWarning, stacklevel=2)
                except Exception as error:
                    if (self.directory / str(step) / INTEGRITY_FILE).exists():
                        # Its files are exactly what was written, so the checkpoint is sound and what is asked of
                        # it is not (another model or optimizer): an error, and nothing is set aside.
                        raise CheckpointError(
                            f"checkpoint {step} in {self.directory} does not fit what is being restored into it "
                            f"(another model or optimizer?): {type(error).__name__}: {str(error)[:300]}"
                        ) from error
                    # Not verified yet: Orbax/TensorStore errors on truncated or missing files mean damage.
                    warnings.warn(
                        f"checkpoint {step} in {self.directory} could not be restored ({type(error).__name__}: "
                        f"{str(error)[:300]}); trying the previous checkpoint",
                        CheckpointWarning,
                        stacklevel=2,
                    )
                else:
                    return step, items, meta
                skipped.append(step)
            return None
        finally:
            if set_aside:
                self._set_aside(skipped)

    def _set_aside(self, steps: list[int]) -> None:
        for step in steps:
            name, n = f"{step}.damaged", 1
            while (self.directory / name).exists():
                name, n = f"{step}.damaged-{n}", n + 1
            os.replace(self.directory / str(step), self.directory / name)
        if steps:
            self._manager.reload()

    def close(self) -> None:
        """Finishes pending saves and releases Orbax's resources."""
        try:
            self._finish_pending()
        finally:
            self._manager.close()

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
