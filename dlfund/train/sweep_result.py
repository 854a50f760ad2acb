"""What :func:`dlfund.sweep` returns: per-member histories and outcomes, the stacked states, a table, a plot."""

from __future__ import annotations

import csv
import dataclasses
import html
import io
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dlfund import io as io_lib
from dlfund.history import History
from dlfund.train.early_stopping import improves_upward


@dataclasses.dataclass
class SweepResult:
    """The members of a sweep, trained.

    Attributes:
      members: one dict of values per member (``{"learning_rate": 0.003, "seed": 1}``), in order.
      histories: one :class:`dlfund.History` per member.
      best_epochs: per member, the 1-based epoch with the best monitored value (as ``FitResult.best_epoch``).
      stop_reasons: per member, why it stopped early (early stopping, a non-finite loss) or None.
      state: the members' final :class:`TrainState` s, stacked on a leading member axis.
      best_weights: the stacked best-epoch ``(params, model_state)`` (early stopping with ``restore_best``), or
        None.
      restored: per member, whether :meth:`model` gives the best epoch's weights (else the last epoch's).
      monitor: ``(column, "min" | "max")``: what "best" means (early stopping's monitor, else val_loss or loss).
      epoch_seconds: wall time of each epoch of the program (all members together; the first includes compiling).
      wasted_fraction: the share of the program's member-epochs that ran for members that had already stopped
        (their results are discarded: frozen members still compute inside the vmapped program).
      seeds: each member's seed.
      config: the shared fit configuration, with the members.
    """

    members: list[dict[str, Any]]
    histories: list[History]
    best_epochs: list[int | None]
    stop_reasons: list[str | None]
    state: Any
    best_weights: Any
    restored: np.ndarray
    monitor: tuple[str, str]
    epoch_seconds: list[float]
    wasted_fraction: float
    seeds: list[int]
    config: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.members)

    def _check_index(self, k: int) -> int:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not -len(self) <= k < len(self):
            raise IndexError(f"member {k!r} does not exist: this sweep has members 0..{len(self) - 1}")
        return int(k) % len(self)

    def weights(self, k: int) -> tuple[Any, Any]:
        """Member ``k``'s ``(params, model_state)``: the restored best epoch's, or the last epoch's."""
        k = self._check_index(k)
        if self.best_weights is not None and self.restored[k]:
            chosen = self.best_weights
        else:
            chosen = (self.state.params, self.state.model_state)
        return jax.tree.map(lambda leaf: jnp.copy(leaf[k]), chosen)

    def model(self, k: int) -> nnx.Module:
        """Member ``k`` as an NNX module in eval mode, with the weights ``fit`` would have left in its model
        (the best epoch's when early stopping restored them, else the last epoch's)."""
        params, model_state = self.weights(k)
        module = nnx.merge(self.state.graphdef, params, model_state)
        module.eval()
        return module

    def models(self) -> list[nnx.Module]:
        """Every member's :meth:`model`."""
        return [self.model(k) for k in range(len(self))]

    def selected_row(self, k: int) -> dict[str, Any]:
        """The history row of the epoch whose weights :meth:`model` holds."""
        k = self._check_index(k)
        history = self.histories[k]
        if not len(history):
            return {}
        epoch = self.best_epochs[k] if self.restored[k] else history.last().get("epoch")
        return next((dict(r) for r in history.rows if r.get("epoch") == epoch), history.last())

    def best(self, monitor: str | None = None, mode: str = "auto") -> int:
        """The index of the member whose best monitored value (over all its epochs) is best. Without restored
        best weights (no early stopping, or ``restore_best=False``) :meth:`model` holds a member's last epoch,
        which may be worse than its best: compare ``selected_row(k)`` then.

        Args:
          monitor: a history column; default the sweep's monitor (early stopping's, else val_loss or loss).
          mode: "min", "max" or "auto" (the sweep's mode for its own monitor; else read from the name as
            :class:`dlfund.EarlyStopping` reads it: max for accuracy-like columns, min for losses and errors).
        """
        column = monitor or self.monitor[0]
        if mode == "auto":
            if column == self.monitor[0]:
                mode = self.monitor[1]
            else:
                upward = improves_upward(column)
                if upward is None:
                    raise ValueError(
                        f"cannot tell from the name {column!r} whether it improves by going up or down; "
                        "pass mode='max' or mode='min'"
                    )
                mode = "max" if upward else "min"
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min', 'max' or 'auto', got {mode!r}")
        if self.histories and column not in self.histories[0]:
            raise ValueError(f"{column!r} is not a history column; columns: {', '.join(self.histories[0].columns)}")
        values = []
        for history in self.histories:
            column_values = history[column] if len(history) else np.array([np.nan])
            finite = column_values[np.isfinite(column_values)]
            values.append(np.nan if not finite.size else (finite.max() if mode == "max" else finite.min()))
        values = np.asarray(values, float)
        if np.all(np.isnan(values)):
            raise ValueError(f"no member has a finite {column}")
        return int(np.nanargmax(values) if mode == "max" else np.nanargmin(values))

    def table(self) -> list[dict[str, Any]]:
        """One row per member: its values, epochs run, best epoch, best monitored value, the stop, and the
        metrics of the epoch whose weights :meth:`model` holds."""
        column = self.monitor[0]
        rows = []
        for k, member in enumerate(self.members):
            history = self.histories[k]
            best_value = None
            if len(history) and self.best_epochs[k] is not None:
                best_value = next((r.get(column) for r in history.rows if r.get("epoch") == self.best_epochs[k]), None)
            selected = {key: v for key, v in self.selected_row(k).items() if key not in ("epoch", "learning_rate")}
            stop = self.stop_reasons[k]
            rows.append(
                {
                    "member": k,
                    **member,
                    "epochs_run": len(history),
                    "best_epoch": self.best_epochs[k],
                    f"best_{column}": best_value,
                    "stopped": "" if stop is None else ("early" if stop.startswith("early") else "non-finite"),
                    **selected,
                }
            )
        return rows

    def to_csv(self, path: str | os.PathLike | None = None) -> str:
        """:meth:`table` as CSV text; written (atomically) to ``path`` if given."""
        rows = self.table()
        columns: list[str] = []
        for row in rows:
            columns += [c for c in row if c not in columns]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue()
        if path is not None:
            io_lib.write_text(path, text)
        return text

    def plot(self, metric: str = "loss", *, figsize: tuple[float, float] = (11, 4)):
        """One figure: every member's training (left) and validation (right, when recorded) curve of ``metric``,
        labelled by its values; the epoch whose weights :meth:`model` holds is marked."""
        import matplotlib

        from dlfund.plotting import _figure

        if self.histories and metric not in self.histories[0]:
            raise ValueError(f"{metric!r} is not a history column; columns: {', '.join(self.histories[0].columns)}")
        splits = [metric] + ([f"val_{metric}"] if self.histories and f"val_{metric}" in self.histories[0] else [])
        fig, axes = _figure(len(splits), figsize, pyplot=True)  # shown once in Jupyter, as the cell's value
        colors = matplotlib.colormaps["viridis"](np.linspace(0, 0.9, max(len(self), 1)))
        for ax, column in zip(axes, splits):
            for k, history in enumerate(self.histories):
                if not len(history):
                    continue
                label = ", ".join(f"{key}={_short(v)}" for key, v in self.members[k].items())
                ax.plot(history["epoch"], history[column], color=colors[k], label=label, linewidth=1.2)
                chosen = self.selected_row(k)
                if chosen.get(column) is not None:
                    ax.plot([chosen["epoch"]], [chosen[column]], "o", color=colors[k], markersize=4)
            ax.set_xlabel("epoch")
            ax.set_title(column)
        if len(self) <= 12:
            axes[-1].legend(fontsize="small")
        fig.tight_layout()
        return fig

    def _text_rows(self) -> tuple[list[str], list[list[str]]]:
        rows = self.table()
        columns = [c for c in rows[0] if c != "stopped"] if rows else []
        return columns, [[_short(row.get(c)) for c in columns] for row in rows]

    def __repr__(self) -> str:
        columns, cells = self._text_rows()
        widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
        lines = [
            f"SweepResult({len(self)} members, {sum(self.epoch_seconds):.2f} s, best member {self._best_or_none()})",
            "  ".join(c.rjust(w) for c, w in zip(columns, widths)),
        ]
        lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
        lines.append(
            "  fields: members, histories, best_epochs, stop_reasons; methods: model(k), best(), table(), plot()"
        )
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        columns, cells = self._text_rows()
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in cells)
        title = f"SweepResult({len(self)} members, best member {self._best_or_none()})"
        return f"<p>{html.escape(title)}</p><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def _best_or_none(self) -> int | None:
        try:
            return self.best()
        except ValueError:
            return None


def _short(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return "" if value is None else str(value)
