"""Ctrl-C during ``fit``: the interrupt waits while a run folder is being written, then stops training.

A ``KeyboardInterrupt`` that lands inside Orbax's save (or while it waits for the previous asynchronous save)
makes Orbax log its worker thread as failed, with a traceback, and can leave a file half written. Python runs
signal handlers in the main thread between bytecodes, so a handler that only notes the interrupt while the
folder is being written, and raises it once the write is done, keeps every file whole and the output quiet.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

from dlfund.train.run import CHECKPOINTS


def _raise_would_be_dropped(frame) -> bool:
    """Whether a ``KeyboardInterrupt`` raised at ``frame`` would be printed and dropped by the interpreter instead of
    propagating: inside a garbage-collector callback (JAX registers one, which the handler can land in while
    ``fit`` waits for the device) or a ``__del__`` finalizer."""
    callbacks = {getattr(callback, "__code__", None) for callback in gc.callbacks}
    while frame is not None:
        if frame.f_code in callbacks or frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


class InterruptGuard:
    """Defers SIGINT while inside :meth:`protect`; elsewhere it raises ``KeyboardInterrupt`` as usual, except where
    the interpreter would drop it (a gc callback, a finalizer): then it is pending until :meth:`raise_pending`."""

    def __init__(self):
        self._depth = 0
        self._pending = False

    def _handle(self, signum, frame) -> None:
        if self._depth or _raise_would_be_dropped(frame):
            self._pending = True
            return
        raise KeyboardInterrupt

    def raise_pending(self) -> None:
        """Raises the ``KeyboardInterrupt`` of a Ctrl-C that arrived where it could not be raised (outside a
        protected block; the training loop calls this after every compiled call)."""
        if self._pending and not self._depth:
            self._pending = False
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self) -> Iterator[InterruptGuard]:
        """Installs the handler for the duration of the block, if Python's own SIGINT handler is in place (in the
        main thread); a handler someone else installed (a test runner, a web server) is left alone."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.getsignal(signal.SIGINT)
        if previous is not signal.default_int_handler:
            yield self
            return
        signal.signal(signal.SIGINT, self._handle)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)

    @contextlib.contextmanager
    def protect(self, *, then_raise: bool = True) -> Iterator[None]:
        """A block that an interrupt must not cut short; a Ctrl-C during it is raised when it ends.

        ``then_raise=False``: for the last block of a run, after which there is nothing left to stop; the
        interrupt is dropped (with a warning that says so) instead of turning a finished run into an interrupted one.
        """
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if not self._depth and self._pending:
                self._pending = False
                if then_raise:
                    raise KeyboardInterrupt
                warnings.warn(
                    "Ctrl-C arrived while the run's final files were being written; they were completed and the run "
                    "is finished",
                    RuntimeWarning,
                    stacklevel=3,
                )


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped ``fit``; pending checkpoints were finished first. It is a ``KeyboardInterrupt``.

    Attributes:
      epochs_done: epochs that finished before the interrupt.
      checkpoint_epoch: the newest checkpoint in the run folder (where a resume continues), or None.
      run_dir: the run folder, or None when ``fit`` wrote none.
    """

    def __init__(self, epochs_done: int, checkpoint_epoch: int | None, run_dir: os.PathLike | None):
        self.epochs_done, self.checkpoint_epoch, self.run_dir = epochs_done, checkpoint_epoch, run_dir
        super().__init__(self.message())

    def message(self, continue_with: str | None = None) -> str:
        """``interrupted after epoch N; ...`` with how to continue (``continue_with``: the command to show;
        default: the ``fit`` call)."""
        text = f"interrupted after epoch {self.epochs_done}"
        if self.run_dir is None:
            return text
        if self.checkpoint_epoch is not None and self.checkpoint_epoch < self.epochs_done:
            text += f" (the newest checkpoint is of epoch {self.checkpoint_epoch})"
        elif self.checkpoint_epoch is None:
            text += " (no checkpoint was saved yet, so a resume starts from the beginning)"
        how = continue_with or f"dlfund.fit(..., run_dir={os.fspath(self.run_dir)!r}, resume=True)"
        return f"{text}; continue with {how}"


@contextlib.contextmanager
def quiet_absl():
    """Silences absl's log (Orbax reports a save thread that an interrupt woke as "failed", at length)."""
    try:
        from absl import logging as absl_logging
    except ImportError:  # pragma: no cover - Orbax depends on absl
        yield
        return
    previous = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.FATAL)
    try:
        yield
    finally:
        absl_logging.set_verbosity(previous)


def newest_checkpoint(run_dir: os.PathLike) -> int | None:
    steps = [int(p.name) for p in Path(run_dir, CHECKPOINTS).glob("*") if p.name.isdigit() and p.is_dir()]
    return max(steps, default=None)
