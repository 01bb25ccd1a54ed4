"""``real-esrgan batch`` keeps a journal: a rerun after a crash resumes and pays nothing twice."""

from __future__ import annotations

import io
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import RunCli, fast_config, gateway_args, png_size

from real_esrgan_async import SQLiteJournal
from real_esrgan_async.testing import RunningEmulator, running_emulator

CLI = "import sys; from real_esrgan_async.cli import main; sys.exit(main())"


def write_list(path: Path, gateway: RunningEmulator, tag: str, count: int = 4) -> list[str]:
    urls = [f"{gateway.sample_url('pattern.png')}?{tag}={n}" for n in range(count)]
    path.write_text("\n".join(urls) + "\n", encoding="utf-8")
    return urls


def states(journal: Path) -> list[str]:
    """The entries' states, read while the command may still be writing (WAL allows it)."""
    if not journal.exists():
        return []
    db = sqlite3.connect(journal)
    try:
        rows = db.execute("SELECT state FROM inputs ORDER BY idx").fetchall()
    except sqlite3.OperationalError:  # created, and its schema not yet
        return []
    finally:
        db.close()
    return [state for (state,) in rows]


def test_by_default_the_journal_sits_beside_the_output_folder_and_a_rerun_skips_saved_outputs(
    run_cli: RunCli, tmp_path: Path
) -> None:
    with running_emulator(fast_config()) as gateway:
        listing = tmp_path / "urls.txt"
        write_list(listing, gateway, "a")
        out = tmp_path / "out"
        args = ["batch", listing, "--scale", "2", "--out", out, *gateway_args(gateway)]

        first = run_cli(*args)
        second = run_cli(*args, "--json")

        assert (0, 0) == (first.code, second.code), first.err + second.err
        assert (tmp_path / "out.urls.txt.journal").is_file()
        summary = second.json()["summary"]
        assert (4, 4, 4, 0) == (
            summary["completed"],
            summary["resumed"],
            summary["skipped"],
            summary["jobs_submitted"],
        )
        assert 4 == gateway.emulator.stats().submits_received  # the rerun paid nothing
        assert 4 == len(list(out.iterdir()))


def test_a_batch_killed_with_jobs_in_flight_resumes_without_paying_again(
    run_cli: RunCli, tmp_path: Path
) -> None:
    # Jobs last about a second: all four are in flight when the command is killed.
    with running_emulator(fast_config(time_scale=0.4)) as gateway:
        listing = tmp_path / "urls.txt"
        write_list(listing, gateway, "k")
        out = tmp_path / "out"
        journal = tmp_path / "batch.journal"
        args = ["batch", str(listing), "--out", str(out), "--journal", str(journal)]
        args += gateway_args(gateway)
        crashed = subprocess.Popen(
            [sys.executable, "-c", CLI, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 20
            while states(journal) != ["submitted"] * 4 and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            crashed.send_signal(signal.SIGKILL)
            crashed.wait()
        assert ["submitted"] * 4 == states(journal)
        assert not list(out.glob("*.png"))

        resumed = run_cli(*args)

        assert 0 == resumed.code, resumed.err
        assert "4 inputs submitted by an earlier run, 0 already saved" in resumed.out
        assert 4 == gateway.emulator.stats().submits_received
        assert 4 == len([png_size(path) for path in out.glob("*.png")])
        assert ["completed"] * 4 == states(journal)


def test_another_list_on_the_same_journal_is_refused_before_anything_is_paid(
    run_cli: RunCli, shared_gateway: RunningEmulator, tmp_path: Path
) -> None:
    journal = tmp_path / "batch.journal"
    first_list, second_list = tmp_path / "first.txt", tmp_path / "second.txt"
    write_list(first_list, shared_gateway, "first")
    write_list(second_list, shared_gateway, "second")
    common = ["--out", tmp_path / "out", "--journal", journal, *gateway_args(shared_gateway)]
    assert 0 == run_cli("batch", first_list, *common).code
    submitted = shared_gateway.emulator.stats().submits_received

    result = run_cli("batch", second_list, *common)

    assert 2 == result.code
    assert "the journal belongs to another batch" in result.err
    assert "pass --journal PATH" in result.err
    assert submitted == shared_gateway.emulator.stats().submits_received


def test_a_journal_in_use_is_refused_with_the_holder(
    run_cli: RunCli, shared_gateway: RunningEmulator, tmp_path: Path
) -> None:
    listing = tmp_path / "urls.txt"
    write_list(listing, shared_gateway, "locked")
    journal = tmp_path / "batch.journal"
    submitted = shared_gateway.emulator.stats().submits_received
    with SQLiteJournal(journal):
        result = run_cli(
            "batch", listing, "--journal", journal, "--out", tmp_path, *gateway_args(shared_gateway)
        )
    assert 2 == result.code
    assert f"is in use by process {os.getpid()}" in result.err
    assert submitted == shared_gateway.emulator.stats().submits_received


def test_no_journal_is_kept_with_no_journal_or_for_stdin(
    run_cli: RunCli,
    shared_gateway: RunningEmulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stream cannot be replayed: a journal for stdin only when --journal asks for one."""
    listing = tmp_path / "urls.txt"
    urls = write_list(listing, shared_gateway, "none", count=1)
    common = ["--out", tmp_path / "out", *gateway_args(shared_gateway)]
    assert 0 == run_cli("batch", listing, "--no-journal", *common).code
    monkeypatch.setattr("sys.stdin", io.StringIO(urls[0] + "\n"))
    assert 0 == run_cli("batch", "-", *common).code
    assert [] == list(tmp_path.glob("*.journal*"))


def test_a_finished_batch_closes_its_journal_and_says_every_input_is_saved(
    run_cli: RunCli, shared_gateway: RunningEmulator, tmp_path: Path
) -> None:
    listing = tmp_path / "urls.txt"
    write_list(listing, shared_gateway, "done", count=2)
    journal = tmp_path / "batch.journal"

    result = run_cli(
        "batch", listing, "--journal", journal, "--out", tmp_path / "out",
        *gateway_args(shared_gateway),
    )  # fmt: skip

    assert 0 == result.code, result.err
    assert (
        f"  every input is saved: the journal {journal} has nothing left to resume\n" in result.out
    )
    with SQLiteJournal(journal):  # closed and unlocked: this process can take it again
        pass


def test_a_batch_with_inputs_not_saved_does_not_say_every_input_is_saved(
    run_cli: RunCli, shared_gateway: RunningEmulator, tmp_path: Path
) -> None:
    listing = tmp_path / "urls.txt"
    listing.write_text(shared_gateway.sample_url("corrupt.png") + "\n", encoding="utf-8")
    journal = tmp_path / "batch.journal"

    result = run_cli(
        "batch", listing, "--journal", journal, "--out", tmp_path / "out", "--json",
        *gateway_args(shared_gateway),
    )  # fmt: skip

    assert 1 == result.code
    assert "every input is saved" not in result.out
    assert str(journal) == result.json()["summary"]["journal"]
