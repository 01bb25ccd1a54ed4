"""The README's synchronous-client example runs as written, and prints what it says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def python_block_after(heading: str) -> str:
    section = README.split(heading, 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, f"no python example after {heading!r}"
    return match.group(1)


def test_the_synchronous_client_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    exec(python_block_after("## Synchronous client"), {})
    lines = capsys.readouterr().out.splitlines()
    outcomes = sorted(lines[:-1], key=lambda line: int(line.split()[0]))
    assert [f"{index} ok" for index in range(len(outcomes))] == outcomes
    assert 6 == len(outcomes)  # one per bundled sample
    assert lines[-1].startswith("Stats(submitted=7, completed=7, failed=0, errored=0")
