"""``--help`` and ``--version``: every command explains itself, with examples."""

from __future__ import annotations

import subprocess
import sys

import pytest
from cli_helpers import RunCli

from real_esrgan_async import __version__

COMMANDS = ["upscale", "batch", "status", "emulator", "demo"]


def test_help_lists_every_command_the_exit_statuses_and_examples(run_cli: RunCli) -> None:
    result = run_cli("--help")

    assert 0 == result.code
    for command in COMMANDS:
        assert f"    {command} " in result.out
    assert "examples:" in result.out
    assert "exit status:" in result.out


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help_with_an_example(run_cli: RunCli, command: str) -> None:
    result = run_cli(command, "--help")

    assert 0 == result.code
    assert result.out.startswith(f"usage: real-esrgan {command} ")
    assert f"  real-esrgan {command}" in result.out


def test_version(run_cli: RunCli) -> None:
    result = run_cli("--version")

    assert 0 == result.code
    assert f"real-esrgan {__version__}\n" == result.out


def test_no_command_is_a_usage_error(run_cli: RunCli) -> None:
    result = run_cli()

    assert 2 == result.code
    assert "the following arguments are required: COMMAND" in result.err


def test_importing_the_library_does_not_import_the_cli() -> None:
    """The cli needs its extra; the library must work without it. (rich itself may still be
    loaded: httpx imports it for its own command line when it is installed.)"""
    code = (
        "import sys, real_esrgan_async; "
        "print(sorted(m for m in sys.modules if m.startswith('real_esrgan_async.cli')))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "[]\n" == completed.stdout
