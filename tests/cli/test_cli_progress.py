"""The progress bar: drawn on a terminal only, with a total when the inputs can be counted."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from cli_helpers import KEY, RunCli, gateway_args

from real_esrgan_async.cli import _progress
from real_esrgan_async.cli._output import Output
from real_esrgan_async.testing import RunningEmulator


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """stderr counts as a terminal, so that the bar is drawn."""
    monkeypatch.setattr(_progress, "is_terminal", lambda output: True)


@pytest.mark.usefixtures("terminal")
def test_the_progress_bar_draws_on_a_terminal_and_notes_print_above_it(
    run_cli: RunCli,
    shared_gateway: RunningEmulator,
    tmp_path: Path,
) -> None:
    urls = [shared_gateway.sample_url("tiny.png"), "ftp://example.com/x.png"]

    result = run_cli("upscale", *urls, "--out", tmp_path, *gateway_args(shared_gateway))

    assert 1 == result.code
    assert "upscaling" in result.err
    assert "\x1b[" in result.err  # drawn with terminal control sequences
    assert "#1 ftp://example.com/x.png: rejected: image must be" in result.err
    assert KEY not in result.err
    assert "1 of 2 inputs upscaled" in result.out


def test_json_never_draws_a_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_progress, "is_terminal", lambda output: True)
    output = Output(io.StringIO(), io.StringIO())
    assert not _progress.wants_progress(output, json=True)
    assert _progress.wants_progress(output, json=False)


@pytest.mark.usefixtures("terminal")
def test_a_batch_file_is_counted_first_so_the_bar_shows_a_total(
    run_cli: RunCli, shared_gateway: RunningEmulator, tmp_path: Path
) -> None:
    """3 URLs among comments and blank lines: the bar counts to 3 (a stream's shows "?")."""
    listing = tmp_path / "urls.txt"
    url = shared_gateway.sample_url("tiny.png")
    listing.write_text(f"# three\n{url}\n\n{url}  # again\n#{url}\n{url}\n", encoding="utf-8")

    result = run_cli("batch", listing, "--out", tmp_path / "out", *gateway_args(shared_gateway))

    assert 0 == result.code, result.err
    assert "/3" in result.err  # done/total
    assert "/?" not in result.err
    assert "3 of 3 inputs upscaled" in result.out
