"""The emulator stands apart from the library: it imports none of it and shares none of its names.

A test that uses both (``from real_esrgan_async import Job`` beside the emulator's internals) must
never wonder which ``Job`` it holds, and the emulator must keep working as an independent judge of
the client, so it cannot import the client's code.
"""

from __future__ import annotations

import ast
import importlib
import pathlib
import re

import attrs

import real_esrgan_async
import real_esrgan_async.testing
from real_esrgan_async.testing import EmulatorConfig, _timing

TESTING = pathlib.Path(real_esrgan_async.testing.__file__).parent
MODULES = sorted(TESTING.glob("*.py"))


def _imported_modules(path: pathlib.Path) -> list[str]:
    """Every module an emulator file imports, relative imports resolved."""
    package = "real_esrgan_async.testing"
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                names.append(node.module or "")
            else:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                names.append(f"{base}.{node.module}" if node.module else base)
    return names


def test_the_emulator_imports_nothing_from_the_library() -> None:
    """No module of ``real_esrgan_async.testing`` imports ``real_esrgan_async`` outside it."""
    offending = {
        f"{path.name}: {name}"
        for path in MODULES
        for name in _imported_modules(path)
        if (name == "real_esrgan_async" or name.startswith("real_esrgan_async."))
        and not name.startswith("real_esrgan_async.testing")
    }
    assert set() == offending


def test_no_emulator_module_exports_a_name_the_library_exports() -> None:
    """``Job``, ``Outcome``, ``Status``, ``BadRequestError``, ``parse_webhook`` and the rest are
    the library's; the emulator's own names say they are the emulator's."""
    library = set(real_esrgan_async.__all__)
    clashes = set()
    for path in MODULES:
        module = importlib.import_module(f"real_esrgan_async.testing.{path.stem}")
        exported = set(getattr(module, "__all__", ()))
        clashes |= {f"{path.stem}.{name}" for name in exported & library}
    assert set() == clashes


def test_the_model_page_names_only_constants_that_exist() -> None:
    """``docs/gateway-model.md`` says where each fact is used; every ``_timing`` constant and
    ``EmulatorConfig`` knob it names must exist, so the page cannot silently go stale."""
    page = (TESTING.parent.parent / "docs" / "gateway-model.md").read_text(encoding="utf-8")
    constants = set(re.findall(r"`([A-Z][A-Z_]+[A-Z])`", page)) - {"MAX_INPUT_PIXELS"}
    knobs = set(re.findall(r"`EmulatorConfig\.([a-z_]+)`", page))
    missing = {name for name in constants if not hasattr(_timing, name)} | {
        name for name in knobs if name not in attrs.fields_dict(EmulatorConfig)
    }
    assert {"PROCESSING_BASE", "PER_INPUT_MEGAPIXEL", "QUEUE_WAIT_MEDIAN"} <= constants
    assert set() == missing
