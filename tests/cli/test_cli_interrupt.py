"""Ctrl+C during a run: it stops cleanly, exits 130 and prints every unfinished paid id."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest
from cli_helpers import RunCli, fast_config, gateway_args

from real_esrgan_async.testing import RunningEmulator, running_emulator


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_ctrl_c_stops_the_run_and_prints_the_unfinished_request_ids(
    run_cli: RunCli, tmp_path: Path, backend: str
) -> None:
    # Real time: the jobs run for seconds, so they are all in flight at the interrupt.
    with running_emulator(fast_config(time_scale=1.0)) as gateway:
        urls = [gateway.sample_url("tiny.png")] * 3

        def press_ctrl_c_once_all_are_submitted() -> None:
            deadline = time.monotonic() + 10
            while len(gateway.emulator.request_ids()) < len(urls):
                if time.monotonic() > deadline:
                    return  # never interrupt pytest itself; the assertions below fail instead
                time.sleep(0.005)
            os.kill(os.getpid(), signal.SIGINT)

        presser = threading.Thread(target=press_ctrl_c_once_all_are_submitted, daemon=True)
        presser.start()
        result = run_cli(
            "upscale", *urls, "--out", tmp_path, "--backend", backend, *gateway_args(gateway)
        )
        presser.join()
        paid = gateway.emulator.request_ids()

    assert 130 == result.code
    assert 3 == len(paid)
    assert "real-esrgan: error: interrupted: nothing more was submitted" in result.err
    assert "3 paid jobs not seen finished" in result.err
    for request_id in paid:
        assert f"  {request_id}\n" in result.err
    assert "0 of 3 inputs upscaled" in result.out
    assert "unfinished 3" in result.out
    assert [] == list(tmp_path.iterdir())  # no partial file left behind


def test_after_ctrl_c_the_message_says_a_rerun_resumes_and_the_rerun_pays_nothing_twice(
    run_cli: RunCli, tmp_path: Path
) -> None:
    with running_emulator(fast_config(time_scale=0.4)) as gateway:
        listing = tmp_path / "urls.txt"
        urls = [f"{gateway.sample_url('pattern.png')}?n={n}" for n in range(3)]
        listing.write_text("\n".join(urls) + "\n", encoding="utf-8")
        journal = tmp_path / "out.urls.txt.journal"  # the default, beside --out
        args = ["batch", listing, "--out", tmp_path / "out", *gateway_args(gateway)]
        presser = threading.Thread(target=_press_ctrl_c_once, args=(gateway, 3), daemon=True)
        presser.start()
        interrupted = run_cli(*args)
        presser.join()

        resumed = run_cli(*args)
        submits = gateway.emulator.stats().submits_received

    assert 130 == interrupted.code
    assert (
        f"rerun the same command to resume: the journal {journal} keeps every paid job "
        "(polled again, never paid twice) and skips the outputs already saved\n"
    ) in interrupted.err
    assert 0 == resumed.code, resumed.err
    assert "3 of 3 inputs upscaled" in resumed.out
    assert 3 == submits


def test_a_stop_without_a_journal_says_a_rerun_starts_over(
    run_cli: RunCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stdin keeps no journal: the wallet stops the run, and the message says what a rerun does."""
    with running_emulator(fast_config(wallet_balance=0.002)) as gateway:
        monkeypatch.setattr("sys.stdin", io.StringIO(f"{gateway.sample_url('tiny.png')}\n" * 3))
        result = run_cli(
            "batch", "-", "--concurrency", "1", "--out", tmp_path, *gateway_args(gateway)
        )

    assert 3 == result.code
    assert "no journal was kept (upscale, stdin, or --no-journal): rerunning the command " in (
        result.err
    )
    assert "rerun the same command to resume" not in result.err


def _press_ctrl_c_once(gateway: RunningEmulator, jobs: int) -> None:
    """Send this process SIGINT once the emulator holds `jobs` jobs."""
    deadline = time.monotonic() + 10
    while len(gateway.emulator.request_ids()) < jobs:
        if time.monotonic() > deadline:
            return  # never interrupt pytest itself; the test's assertions fail instead
        time.sleep(0.005)
    os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_every_paid_id_is_in_the_json_after_ctrl_c_at_random_moments(
    run_cli: RunCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """A batch from stdin (no journal): each job the gateway created is reported, as a
    result (saved, or finished and not saved) or as an unfinished id, whenever Ctrl+C comes."""
    rng = random.Random(20261201)
    for attempt in range(4):
        with running_emulator(fast_config(time_scale=0.02)) as gateway:
            urls = [f"{gateway.sample_url('pattern.png')}?n={n}" for n in range(24)]
            monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(urls) + "\n"))
            delay = rng.uniform(0.05, 0.6)

            def press_ctrl_c(delay: float = delay, gateway: RunningEmulator = gateway) -> None:
                deadline = time.monotonic() + 10
                while not gateway.emulator.request_ids():
                    if time.monotonic() > deadline:
                        return
                    time.sleep(0.002)
                time.sleep(delay)
                os.kill(os.getpid(), signal.SIGINT)

            presser = threading.Thread(target=press_ctrl_c, daemon=True)
            presser.start()
            result = run_cli(
                "batch", "-", "--out", tmp_path / str(attempt), "--json", "--concurrency", "8",
                "--backend", backend, *gateway_args(gateway),
            )  # fmt: skip
            presser.join()
            paid = set(gateway.emulator.request_ids())
        document = json.loads(result.out)
        reported = {r["request_id"] for r in document["results"] if r["request_id"]}
        reported |= set(document["summary"]["unfinished_request_ids"])
        assert paid == reported, (attempt, result.code)
