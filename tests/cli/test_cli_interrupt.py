"""Ctrl+C during a run: it stops cleanly, exits 130 and prints every unfinished paid id."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from cli_helpers import RunCli, fast_config, gateway_args

from real_esrgan_async.testing import running_emulator


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
