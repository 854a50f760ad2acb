"""What an experiment is: a claim of the field, the runs that test it, and a report that says whether it held."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dlfund import io as io_lib


@dataclasses.dataclass
class Check:
    """One claim checked against measured numbers.

    Attributes:
      claim: what the field says, in words ("the CNN reaches >= 0.98 test accuracy on digits").
      passed: whether the measurement supports it.
      detail: the numbers behind the verdict.
    """

    claim: str
    passed: bool
    detail: str


@dataclasses.dataclass
class Report:
    """What an experiment measured.

    Attributes:
      name: the experiment.
      claim: its headline claim.
      rows: one dict per run (model, dataset, metrics, seconds, ...): the table of the report.
      checks: the claims tested, each with its verdict.
      quick: whether this was a smoke run (tiny settings; verdicts not meaningful).
      seconds: wall time of the whole experiment.
      figure: a matplotlib ``Figure`` of the results, or None; :meth:`save` writes it as ``<name>.png``.
      expected: what a full run takes and shows on this project's 2-core CPU (the experiment's own words).
    """

    name: str
    claim: str
    rows: list[dict[str, Any]]
    checks: list[Check]
    quick: bool = False
    seconds: float = 0.0
    figure: Any = dataclasses.field(default=None, repr=False)
    expected: str = ""

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def markdown(self) -> str:
        """The report as Markdown: claim, a table of runs, and the verdict on each claim."""
        lines = [f"# {self.name}", "", self.claim, ""]
        if self.expected and not self.quick:
            lines += [f"Expected on this project's 2-core CPU: {self.expected}.", ""]
        if self.quick:
            lines += ["*Quick smoke run: tiny settings, the verdicts below do not test the claim.*", ""]
        columns = list(dict.fromkeys(k for row in self.rows for k in row))
        lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for row in self.rows:
            lines.append("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
        lines += ["", "| claim | verdict | measured |", "|---|---|---|"]
        lines += [f"| {c.claim} | {'holds' if c.passed else 'FAILS'} | {c.detail} |" for c in self.checks]
        lines += ["", f"Wall time: {self.seconds:.0f} s."]
        return "\n".join(lines) + "\n"

    def save(self, directory: str | os.PathLike) -> list[str]:
        """Writes ``results.json`` and ``report.md`` (and ``<name>.png`` with a figure) into ``directory``."""
        directory = Path(directory)
        record = {
            "name": self.name,
            "claim": self.claim,
            "rows": self.rows,
            "checks": [dataclasses.asdict(c) for c in self.checks],
            "quick": self.quick,
            "seconds": self.seconds,
            "expected": self.expected,
            "passed": self.passed,
        }
        io_lib.write_json(directory / "results.json", record)
        io_lib.write_text(directory / "report.md", self.markdown())
        written = [str(directory / "results.json"), str(directory / "report.md")]
        if self.figure is not None:
            path = directory / f"{self.name}.png"
            io_lib.write_with(path, lambda f: self.figure.savefig(f, format="png", dpi=110))
            written.append(str(path))
        return written


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A registered experiment.

    Attributes:
      name: registry name (``dlfund experiment NAME``).
      claim: the claim it tests, one sentence.
      run: ``run(quick: bool, data_dir: str | None) -> (rows, checks)`` or ``(rows, checks, figure)``.
      expected: what a full run takes and shows on this project's 2-core CPU, for the docs.
    """

    name: str
    claim: str
    run: Callable[..., tuple[list[dict[str, Any]], list[Check]]]
    expected: str = ""

    def __call__(self, *, quick: bool = False, data_dir: str | os.PathLike | None = None) -> Report:
        # Checked here, before minutes of training: every experiment takes these two options and no others.
        if not isinstance(quick, bool):
            raise TypeError(f"quick must be True or False, got {quick!r}")
        if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
            raise TypeError(f"data_dir must be a folder path (str or os.PathLike) or None, got {data_dir!r}")
        if data_dir is not None and Path(data_dir).exists() and not Path(data_dir).is_dir():
            raise ValueError(
                f"data_dir {os.fspath(data_dir)!r} is a file, not a folder; datasets are prepared in a folder"
            )
        start = time.perf_counter()
        rows, checks, *figure = self.run(quick=quick, data_dir=data_dir)
        return Report(
            self.name,
            self.claim,
            rows,
            checks,
            quick=quick,
            seconds=time.perf_counter() - start,
            figure=figure[0] if figure else None,
            expected=self.expected,
        )
