"""Per-epoch training history: a small table with CSV export and plots."""

from __future__ import annotations

import csv
import html
import io
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from dlfund import io as io_lib
from dlfund import plotting

# Rows a summary shows in full; a longer history shows its first and last 3 (and its best epoch).
_SHOWN_ROWS = 8


class History:
    """One row per epoch: ``epoch``, ``loss``, the training metrics, ``val_*`` columns, ``learning_rate``, ...

    ``history["val_loss"]`` is a NumPy array over epochs (NaN where a row lacks the column); ``history.rows`` the
    raw list of dicts. ``plot()`` draws loss and metric curves (train vs validation) for a notebook,
    ``save_plots(dir)`` writes them as PNG files, ``to_csv(path)`` writes the table.
    """

    def __init__(
        self, rows: Iterable[Mapping[str, Any]] = (), *, selected_epoch: int | None = None, restored_best: bool = False
    ):
        # Plain Python numbers, as append makes them: a NumPy float's repr is "np.float64(0.5)" under NumPy 2,
        # which a CSV round trip would bring back as text.
        self.rows: list[dict[str, Any]] = [{k: _plain(v) for k, v in r.items()} for r in rows]
        #: the epoch ``fit`` chose as best (early stopping's monitor, else val_loss, else loss), marked by plots
        self.selected_epoch = selected_epoch
        #: whether the model holds that epoch's weights (early stopping with ``restore_best``)
        self.restored_best = restored_best

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
        return plotting.history_figure(self, metrics=metrics, figsize=figsize, pyplot=True)

    def save_plots(self, directory: str | os.PathLike, metrics: Sequence[str] | None = None) -> list[str]:
        """Writes ``loss_curve.png`` (and ``metrics.png`` when there are metrics) into ``directory``."""
        return plotting.save_history_plots(self, directory, metrics=metrics)

    def _shown_rows(self) -> list[dict[str, Any] | None]:
        """The rows a summary shows: all of a short history; the first 3, a gap (None) and the last 3 otherwise.
        The best epoch's row is shown too."""
        if len(self.rows) <= _SHOWN_ROWS:
            return list(self.rows)
        indices = {0, 1, 2, len(self.rows) - 3, len(self.rows) - 2, len(self.rows) - 1}
        best = next((i for i, r in enumerate(self.rows) if r.get("epoch") == self.selected_epoch), None)
        if best is not None:
            indices.add(best)
        shown: list[dict[str, Any] | None] = []
        previous = None
        for i in sorted(indices):
            if previous is not None and i - previous > 1:
                shown.append(None)
            shown.append(self.rows[i])
            previous = i
        return shown

    def _title(self) -> str:
        best = "" if self.selected_epoch is None else f", best epoch {self.selected_epoch}"
        return f"History({len(self.rows)} epochs{best}{' (restored)' if self.restored_best else ''})"

    def __repr__(self) -> str:
        if not self.rows:
            return "History(empty)"
        columns = self.columns
        width = max(12, *(len(c) for c in columns))
        lines = ["  ".join(f"{c:>{width}}" for c in columns)]
        for row in self._shown_rows():
            if row is None:
                lines.append("  ".join(f"{'...':>{width}}" for _ in columns))
            else:
                marker = " <- best" if row.get("epoch") == self.selected_epoch else ""
                lines.append("  ".join(f"{_cell(row.get(c)):>{width}}" for c in columns) + marker)
        return self._title() + "\n" + "\n".join(lines)

    def _repr_html_(self) -> str:
        """Jupyter shows the history as a table (the best epoch's row in bold)."""
        if not self.rows:
            return "<p>History(empty)</p>"
        columns = self.columns
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        body = []
        for row in self._shown_rows():
            if row is None:
                body.append("<tr>" + "".join("<td>...</td>" for _ in columns) + "</tr>")
                continue
            style = ' style="font-weight:bold"' if row.get("epoch") == self.selected_epoch else ""
            cells = "".join(f"<td>{html.escape(_cell(row.get(c)))}</td>" for c in columns)
            body.append(f"<tr{style}>{cells}</tr>")
        return (
            f"<p>{html.escape(self._title())}</p><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>"
        )


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
