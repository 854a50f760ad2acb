"""Per-epoch training history: a small table with CSV export and plots."""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from dlfund import io as io_lib


class History:
    """One row per epoch: ``epoch``, ``loss``, the training metrics, ``val_*`` columns, ``learning_rate``, ...

    ``history["val_loss"]`` is a NumPy array over epochs (NaN where a row lacks the column); ``history.rows`` the
    raw list of dicts. ``plot()`` draws loss and metric curves (train vs validation) for a notebook,
    ``save_plots(dir)`` writes them as PNG files, ``to_csv(path)`` writes the table.
    """

    def __init__(self, rows: Iterable[Mapping[str, Any]] = ()):
        self.rows: list[dict[str, Any]] = [dict(r) for r in rows]

    def append(self, row: Mapping[str, Any]) -> None:
        self.rows.append({k: _plain(v) for k, v in row.items()})

    @property
    def columns(self) -> list[str]:
        seen: dict[str, None] = {}
        for row in self.rows:
            seen.update(dict.fromkeys(row))
        return list(seen)

    def __getitem__(self, column: str) -> np.ndarray:
        if column not in self.columns:
            raise KeyError(f"no column {column!r} in the history; columns: {', '.join(self.columns)}")
        return np.array([row.get(column, math.nan) for row in self.rows], dtype=np.float64)

    def __contains__(self, column: object) -> bool:
        return column in self.columns

    def __len__(self) -> int:
        return len(self.rows)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, History) and self.rows == other.rows

    def last(self) -> dict[str, Any]:
        return dict(self.rows[-1]) if self.rows else {}

    def best_epoch(self, monitor: str = "val_loss", mode: str = "min") -> int:
        """The epoch (the ``epoch`` column's value) with the best ``monitor`` value, ignoring NaN."""
        values = self[monitor]
        if np.all(np.isnan(values)):
            raise ValueError(f"history column {monitor!r} has no finite value")
        i = int(np.nanargmax(values) if mode == "max" else np.nanargmin(values))
        return int(self.rows[i].get("epoch", i))

    def to_dict(self) -> dict[str, list[Any]]:
        return {c: [row.get(c) for row in self.rows] for c in self.columns}

    def to_csv(self, path: str | os.PathLike | None = None) -> str:
        """The table as CSV text; also written (atomically) to ``path`` if given."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in row.items()})
        text = buffer.getvalue()
        if path is not None:
            io_lib.write_text(path, text)
        return text

    @classmethod
    def from_csv(cls, path: str | os.PathLike) -> History:
        with open(path, newline="") as f:
            rows = [{k: _parse(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
        return cls(rows)

    def plot(self, metrics: Sequence[str] | None = None, *, figsize: tuple[float, float] = (11, 4)):
        """A matplotlib figure: the loss curves, and the metric curves (train vs validation) beside them.

        In Jupyter, the returned figure is displayed; elsewhere call ``fig.savefig(...)``.
        """
        from dlfund.plotting import history_figure

        return history_figure(self, metrics=metrics, figsize=figsize, pyplot=True)

    def save_plots(self, directory: str | os.PathLike, metrics: Sequence[str] | None = None) -> list[str]:
        """Writes ``loss_curve.png`` (and ``metrics.png`` when there are metrics) into ``directory``."""
        from dlfund.plotting import save_history_plots

        return save_history_plots(self, directory, metrics=metrics)

    def __repr__(self) -> str:
        if not self.rows:
            return "History(empty)"
        columns = self.columns
        shown = self.rows if len(self.rows) <= 8 else [*self.rows[:3], None, *self.rows[-3:]]
        lines = ["  ".join(f"{c:>12}" for c in columns)]
        for row in shown:
            if row is None:
                lines.append("  ".join(f"{'...':>12}" for _ in columns))
            else:
                lines.append("  ".join(f"{_cell(row.get(c)):>12}" for c in columns))
        return f"History({len(self.rows)} epochs)\n" + "\n".join(lines)


def _plain(value: Any) -> Any:
    """NumPy/JAX scalars -> Python numbers, so rows are JSON/CSV friendly and compare exactly."""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    return value


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _parse(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
