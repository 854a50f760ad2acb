"""Host-side hooks into ``dlfund.fit`` (logging, custom stopping rules, plots), Keras style."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Callback:
    """Subclass and override what you need. All hooks run on the host between compiled epochs.

    ``on_epoch_end`` may return True to stop training after this epoch.
    """

    def on_train_begin(self, config: dict[str, Any]) -> None:
        """Called once with the resolved run configuration (JSON-friendly dict)."""

    def on_epoch_end(self, epoch: int, logs: dict[str, float], state: Any) -> bool | None:
        """Called after each epoch (1-based) with that epoch's history row and the current ``TrainState``.

        The next epoch may donate the state's buffers to the compiled step: to keep the state beyond this call,
        keep a copy (``jax.tree.map(jnp.copy, state)``).
        """
        return None

    def on_train_end(self, result: Any) -> None:
        """Called once with the :class:`dlfund.FitResult`."""


class LambdaCallback(Callback):
    """A callback from plain functions, e.g. ``LambdaCallback(on_epoch_end=lambda epoch, logs, state: ...)``."""

    def __init__(
        self,
        *,
        on_train_begin: Callable[[dict[str, Any]], None] | None = None,
        on_epoch_end: Callable[[int, dict[str, float], Any], bool | None] | None = None,
        on_train_end: Callable[[Any], None] | None = None,
    ):
        self._begin, self._epoch_end, self._end = on_train_begin, on_epoch_end, on_train_end

    def on_train_begin(self, config):
        if self._begin:
            self._begin(config)

    def on_epoch_end(self, epoch, logs, state):
        return self._epoch_end(epoch, logs, state) if self._epoch_end else None

    def on_train_end(self, result):
        if self._end:
            self._end(result)


class LivePlot(Callback):
    """Redraws the loss and metric curves in a Jupyter notebook as training goes (one image, updated in place).

    Args:
      metrics: metric curves to draw beside the loss (default: every metric in the history).
      every: redraw every this many epochs (drawing costs ~0.1 s; raise it for many short epochs).
    """

    def __init__(self, metrics: tuple[str, ...] | None = None, every: int = 1):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an integer >= 1, got {every!r}")
        self.metrics, self.every = metrics, every
        self._handle = None
        self.history = None

    def on_train_begin(self, config: dict[str, Any]) -> None:
        from dlfund.history import History

        self.history = History()
        self._handle = None

    def on_epoch_end(self, epoch: int, logs: dict[str, float], state: Any) -> None:
        self.history.append(logs)
        if epoch % self.every == 0:
            self._draw()

    def on_train_end(self, result: Any) -> None:
        self.history = result.history  # a resumed run's history starts before this call's first epoch
        self._draw()

    def _draw(self) -> None:
        import io

        from IPython.display import Image, display

        from dlfund.plotting import history_figure

        if not len(self.history):
            return
        buffer = io.BytesIO()
        history_figure(self.history, metrics=self.metrics).savefig(buffer, format="png", dpi=90)
        image = Image(data=buffer.getvalue(), format="png")
        if self._handle is None:
            self._handle = display(image, display_id=True)
        else:
            self._handle.update(image)
