"""The README's Python examples type-check with ``mypy --strict``, as a user's code would.

Each ```python block becomes a module of its own; a block with top-level ``await``/``async
with``/``async for`` (a snippet meant for the inside of a coroutine) is wrapped in one. Names
the prose takes as given (the client class, a crawler's ``fetch_pages``, a list of ``urls``)
are declared first.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")

#: What the README's snippets assume exists.
GIVENS = """\
from collections.abc import AsyncIterator

from real_esrgan_async import AsyncRealESRGAN


class _Page:
    image_urls: list[str]


def fetch_pages() -> AsyncIterator[_Page]:
    raise NotImplementedError


urls: list[str] = []
"""


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, re.DOTALL)


def as_module(block: str) -> str:
    """The block as a module: wrapped in a coroutine when it awaits at top level."""
    top_level_async = any(
        isinstance(node, ast.AsyncWith | ast.AsyncFor)
        or (isinstance(node, ast.Expr | ast.Assign) and isinstance(node.value, ast.Await))
        for node in ast.parse(block).body
    )
    if top_level_async:
        block = "async def _example() -> None:\n" + textwrap.indent(block, "    ")
    return GIVENS + "\n\n" + block


def test_every_block_is_found_and_top_level_awaits_are_wrapped() -> None:
    wrapped = as_module("async with x as y:\n    await y\n")
    assert "async def _example() -> None:\n    async with x as y:\n        await y\n" in wrapped
    assert "async def _example" not in as_module("import anyio\n")
    assert len(python_blocks()) >= 8  # the README's examples, recipes included


@pytest.mark.timeout(300)  # one cold mypy run over the package and fastapi's stubs
def test_the_readme_examples_pass_mypy_strict(tmp_path: Path) -> None:
    files = []
    for number, block in enumerate(python_blocks()):
        path = tmp_path / f"readme_block_{number}.py"
        path.write_text(as_module(block), encoding="utf-8")
        files.append(path.name)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", ".mypy_cache", *files],
        cwd=tmp_path,  # no project config: the README is checked as a user's code would be
        capture_output=True,
        text=True,
        check=False,
    )
    assert 0 == result.returncode, result.stdout + result.stderr
