"""Fixtures of the CLI tests: `main()` run in-process against the emulator on loopback.

Every run goes through `run_cli`, which also checks the one rule that holds for
every command: the API key never appears on stdout or stderr.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import KEY, Result, RunCli, fast_config

from real_esrgan_async.cli import main
from real_esrgan_async.testing import RunningEmulator, running_emulator


@pytest.fixture(autouse=True)
def _no_ambient_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests say which key and gateway they use; the developer's shell does not."""
    monkeypatch.delenv("REAL_ESRGAN_API_KEY", raising=False)
    monkeypatch.delenv("REAL_ESRGAN_BASE_URL", raising=False)


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> RunCli:
    """Run ``main(argv)`` and capture its streams; assert that no key was printed."""

    def run(*argv: str | Path, secrets: tuple[str, ...] = (KEY,)) -> Result:
        capsys.readouterr()  # start from clean streams
        code = main([str(arg) for arg in argv])
        out, err = capsys.readouterr()
        for secret in secrets:
            assert secret not in out
            assert secret not in err
        return Result(code, out, err)

    return run


@pytest.fixture(scope="module")
def shared_gateway() -> Iterator[RunningEmulator]:
    """A fast emulator for the tests of a module that do not count its jobs."""
    with running_emulator(fast_config()) as gateway:
        yield gateway
