"""The README's code examples run as written (those that can run offline)."""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")

pytestmark = pytest.mark.anyio


def python_block_after(heading: str) -> str:
    section = README.split(heading, 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, f"no python example after {heading!r}"
    return match.group(1)


async def test_the_emulator_example_passes() -> None:
    namespace: dict[str, Any] = {}
    exec(python_block_after("## Testing your app with the emulator"), namespace)
    example: Callable[[], Coroutine[Any, Any, None]] = namespace["test_my_thumbnailer"]
    await example()


def test_the_readme_names_both_setup_commands() -> None:
    assert "<!-- demo-command -->" in README
    assert "<!-- test-command -->" in README
