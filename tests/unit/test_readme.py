"""The README's Python examples run as written (on the embedded store instead of PostgreSQL)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_the_readme_has_examples() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("number", range(len(BLOCKS)))
def test_a_readme_example_runs(
    number: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code = BLOCKS[number].replace('"postgresql://eventstore@127.0.0.1:55432/eventstore"', "None")
    exec(compile(code, f"README block {number}", "exec"), {})  # our own README
