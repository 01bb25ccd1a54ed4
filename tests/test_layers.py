"""The package's layers, read from its imports (ast, no import executed).

- The pure core (decisions and values) imports no anyio, ``time`` or ``random``,
  even through another module of the package; httpx appears only in the value
  modules that check URLs with the parser the transport uses.
- ``testing/`` (the emulator) imports nothing from the library.
- The core imports neither ``cli/`` nor ``testing/``.
- No module is part of an import cycle through ``_client``, not even under
  ``TYPE_CHECKING``: collaborators meet at the session, never at the client.

Run ``python tests/test_layers.py`` to print the package's import graph.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "real_esrgan_async"
NAME = "real_esrgan_async"

#: Modules whose rules are pure decisions or values: no clock, no randomness, no event loop.
PURE = {
    "_cooldown",
    "_events",
    "_imagesize",
    "_resubmit",
    "_exceptions",
    "_journal",
    "_keys",
    "_ledger",
    "_local_images",
    "_models",
    "_options",
    "_retry",
    "_runbook",
    "_scheduler",
    "_stats",
    "_timestamps",
    "_urls",
}
FORBIDDEN_IN_PURE = {"anyio", "time", "random", "sniffio", "trio", "asyncio"}
#: Value modules that may parse URLs with httpx's own parser (no parser differential).
HTTPX_FOR_URLS = {"_urls", "_models"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> Iterator[str]:
    """Every module `path` imports, absolute, including under ``if TYPE_CHECKING:``."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            if node.module is not None:
                yield base
            for alias in node.names:  # `from . import _options` imports a submodule
                yield f"{base}.{alias.name}"


def graph() -> dict[str, set[str]]:
    """Each module of the package -> the modules it imports (the package's, or top-level names)."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for imported in imports_of(path):
            if imported.startswith(NAME + ".") or imported == NAME:
                if imported in modules:
                    targets.add(imported)
            else:
                targets.add(imported.partition(".")[0])
        edges[name] = targets - {name}
    return edges


def reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    stack = [start]
    while stack:
        for target in edges.get(stack.pop(), ()):
            if target not in seen:
                seen.add(target)
                stack.append(target)
    return seen


def short(module: str) -> str:
    return module.removeprefix(NAME + ".")


EDGES = graph()


def test_the_pure_core_reads_no_clock_no_randomness_and_no_event_loop() -> None:
    offences = {
        short(f"{NAME}.{module}"): sorted(FORBIDDEN_IN_PURE & reachable(EDGES, f"{NAME}.{module}"))
        for module in sorted(PURE)
    }
    assert {} == {module: found for module, found in offences.items() if found}


def test_httpx_appears_in_the_pure_core_only_to_parse_urls() -> None:
    direct = {module for module in PURE if "httpx" in EDGES[f"{NAME}.{module}"]}
    assert direct <= HTTPX_FOR_URLS


def test_the_emulator_imports_nothing_from_the_library() -> None:
    offences = {
        short(module): sorted(
            short(target)
            for target in targets
            if target.startswith(NAME) and not target.startswith(f"{NAME}.testing")
        )
        for module, targets in EDGES.items()
        if module.startswith(f"{NAME}.testing")
    }
    assert {} == {module: found for module, found in offences.items() if found}


def test_the_core_imports_neither_the_cli_nor_the_emulator() -> None:
    core = {module for module in EDGES if not module.startswith((f"{NAME}.cli", f"{NAME}.testing"))}
    offences = {
        short(module): sorted(
            short(target)
            for target in EDGES[module]
            if target.startswith((f"{NAME}.cli", f"{NAME}.testing"))
        )
        for module in core
    }
    assert {} == {module: found for module, found in offences.items() if found}


def test_no_import_cycle_runs_through_the_client() -> None:
    client = f"{NAME}._client"
    in_cycle = sorted(
        short(module) for module in EDGES[client] if client in reachable(EDGES, module)
    )
    assert [] == in_cycle


def test_the_fan_out_and_the_webhook_receiver_sit_below_the_client() -> None:
    for module in ("_fanout", "_webhooks", "_session", "_poller", "_gateway"):
        assert f"{NAME}._client" not in reachable(EDGES, f"{NAME}.{module}"), module


def test_the_graph_is_read_from_real_imports() -> None:
    """Guards the guard: known edges are found, so an empty offence list means something."""
    assert f"{NAME}._session" in EDGES[f"{NAME}._fanout"]
    assert f"{NAME}._options" in EDGES[f"{NAME}._client"]  # `from . import _options`
    assert "anyio" in reachable(EDGES, f"{NAME}._client")
    assert "httpx" in EDGES[f"{NAME}._urls"]


if __name__ == "__main__":
    for module, targets in sorted(EDGES.items()):
        inside = sorted(short(t) for t in targets if t.startswith(NAME))
        outside = sorted(t for t in targets if not t.startswith(NAME))
        print(f"{short(module)} -> {', '.join(inside) or '-'}  [{', '.join(outside)}]")
    sys.exit(0)
