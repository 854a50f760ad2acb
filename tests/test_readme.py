"""Every README code block fenced as ``python`` runs as written.

Each block is executed on its own, in a fresh interpreter whose working folder is a temporary directory (so run
folders such as ``runs/exp1`` land there) and whose ``DLFUND_DATA_DIR`` is the test suite's throwaway folder (set
by the repository-wide conftest.py). A block that is not meant to run (a signature, a shell transcript, a folder
listing) must be fenced as something else (``text``, ``bash``, ``console``, or no language).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
PYTHON_LANGUAGES = {"python", "python3", "py"}
# The README has this many python blocks or more; fewer means fences were dropped or renamed, which would let the
# execution test pass without running anything.
MIN_PYTHON_BLOCKS = 3
TIMEOUT_S = 120

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_HEADING = re.compile(r"^ {0,3}#{1,6}\s+(?P<title>.+?)\s*#*\s*$")


@dataclass(frozen=True)
class Block:
    heading: str
    index: int  # position among the blocks under the same heading, from 0
    language: str
    line: int  # 1-based line of the opening fence in README.md
    code: str

    @property
    def id(self) -> str:
        slug = re.sub(r"[^0-9a-z]+", "-", self.heading.lower()).strip("-") or "top"
        return f"{slug}-{self.index}"


def parse_blocks(text: str) -> list[Block]:
    """All fenced code blocks of a Markdown text, with the heading above each."""
    blocks: list[Block] = []
    heading = ""
    per_heading: dict[str, int] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            title = _HEADING.match(lines[i])
            if title is not None:
                heading = title["title"].strip("`")
            i += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        info = opening["info"].strip()
        language = info.split()[0].lower() if info else ""
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            closing = _FENCE.match(lines[j])
            if closing is not None and closing["fence"].startswith(fence) and not closing["info"].strip():
                break
            body.append(lines[j][indent:] if lines[j][:indent].isspace() else lines[j])
            j += 1
        else:
            raise AssertionError(f"README.md:{i + 1}: code block is never closed")
        index = per_heading.get(heading, 0)
        per_heading[heading] = index + 1
        blocks.append(Block(heading, index, language, i + 1, "\n".join(body) + "\n"))
        i = j + 1
    return blocks


BLOCKS = parse_blocks(README.read_text(encoding="utf-8"))
PYTHON_BLOCKS = [block for block in BLOCKS if block.language in PYTHON_LANGUAGES]


def test_readme_has_python_blocks():
    assert len(PYTHON_BLOCKS) >= MIN_PYTHON_BLOCKS, (
        f"README.md has {len(PYTHON_BLOCKS)} code blocks fenced as python, expected at least {MIN_PYTHON_BLOCKS}: "
        f"{[block.id for block in PYTHON_BLOCKS]}"
    )
    assert all(block.code.strip() for block in PYTHON_BLOCKS), "a python block of README.md is empty"


def test_python_blocks_compile():
    failures = []
    for block in PYTHON_BLOCKS:
        try:
            compile(block.code, f"README.md:{block.line}", "exec")
        except SyntaxError as error:
            failures.append(f"{block.id} (README.md:{block.line}): {error}")
    assert not failures, "README blocks fenced as python that are not valid Python (fence them as text):\n" + (
        "\n".join(failures)
    )


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[block.id for block in PYTHON_BLOCKS])
def test_python_block_runs(block: Block, tmp_path: Path):
    assert os.environ.get("DLFUND_DATA_DIR"), "conftest.py should point DLFUND_DATA_DIR at a throwaway folder"
    script = tmp_path / f"readme_{block.id}.py"
    script.write_text(block.code, encoding="utf-8")
    env = {**os.environ, "MPLBACKEND": "Agg"}
    try:
        done = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"README block {block.id} (README.md:{block.line}) ran longer than {TIMEOUT_S} s")
    assert done.returncode == 0, (
        f"README block {block.id} (README.md:{block.line}) failed with exit status {done.returncode}\n"
        f"--- code ---\n{block.code}--- stdout ---\n{done.stdout[-3000:]}\n--- stderr ---\n{done.stderr[-6000:]}"
    )


def test_the_fit_signature_block_lists_every_parameter_with_its_default():
    """The README's ``dlfund.fit(...)`` signature is text, not code, so nothing else keeps it true."""
    import ast
    import inspect

    import dlfund

    text = README.read_text(encoding="utf-8")
    block = next(b.code for b in parse_blocks(text) if b.code.lstrip().startswith("dlfund.fit("))
    flat = " ".join(block.split())
    written = dict(re.findall(r"(\w+)=(\(\)|[^,()]+)", flat))
    for name, parameter in inspect.signature(dlfund.fit).parameters.items():
        if parameter.default is inspect.Parameter.empty:
            assert re.search(rf"[(,] ?{name},", flat), name
        else:
            assert name in written, f"{name} is missing from the README's fit signature"
            assert ast.literal_eval(written[name]) == parameter.default, name
