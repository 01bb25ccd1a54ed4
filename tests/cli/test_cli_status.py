"""``real-esrgan status REQUEST_ID``: one status call, printed for people or as JSON."""

from __future__ import annotations

import time
from datetime import datetime

import httpx
import pytest
from cli_helpers import KEY, RunCli, gateway_args
from scripted_gateway import BASE, scripted_gateway

from real_esrgan_async.testing import RunningEmulator


def _completed_job(gateway: RunningEmulator) -> str:
    """Submit a job straight to the emulator and wait (in the emulator) until it completes."""
    return _finished_job(gateway, "tiny.png", "COMPLETED")


def _finished_job(gateway: RunningEmulator, sample: str, status: str) -> str:
    """Submit a job for `sample` straight to the emulator; wait there until it reaches `status`."""
    response = httpx.post(
        gateway.base_url + "/real-esrgan/v1/real-esrgan/generate",
        json={"image": gateway.sample_url(sample), "scale": 2},
        headers={"Ocp-Apim-Subscription-Key": KEY},
        trust_env=False,
    )
    assert 202 == response.status_code, response.text
    request_id: str = response.json()["request_id"]
    deadline = time.monotonic() + 10
    while (job := gateway.emulator.job(request_id)) is None or job.status != status:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    return request_id


def test_status_prints_the_state_of_a_completed_job(
    run_cli: RunCli, shared_gateway: RunningEmulator
) -> None:
    request_id = _completed_job(shared_gateway)

    result = run_cli("status", request_id, *gateway_args(shared_gateway))

    assert 0 == result.code, result.err
    fields = dict(line.split(maxsplit=1) for line in result.out.splitlines())
    assert request_id == fields["request_id"]
    assert "COMPLETED" == fields["status"]
    assert "-" == fields["error"]
    assert fields["media_url"].startswith(shared_gateway.base_url)
    assert "image/png" == fields["media_type"]
    assert "" == result.err


def test_status_json_is_one_document_with_parsed_timestamps(
    run_cli: RunCli, shared_gateway: RunningEmulator
) -> None:
    request_id = _completed_job(shared_gateway)

    result = run_cli("status", request_id, "--json", *gateway_args(shared_gateway))

    assert 0 == result.code, result.err
    state = result.json()
    assert (request_id, "COMPLETED", None) == (state["request_id"], state["status"], state["error"])
    assert 1 == len(state["media_urls"])
    created = datetime.fromisoformat(state["created_at"])
    completed = datetime.fromisoformat(state["completed_at"])
    assert created.tzinfo is not None
    assert created <= completed


def test_status_of_an_unknown_id_exits_1_with_the_gateways_answer(
    run_cli: RunCli, shared_gateway: RunningEmulator
) -> None:
    result = run_cli("status", "real-esrgan_no-such-job", *gateway_args(shared_gateway))

    assert 1 == result.code
    assert result.err.startswith("real-esrgan: error: gateway answered 404")
    assert "" == result.out


def test_status_of_a_failed_job_exits_1_after_printing_its_state(
    run_cli: RunCli, shared_gateway: RunningEmulator
) -> None:
    request_id = _finished_job(shared_gateway, "corrupt.png", "FAILED")

    result = run_cli("status", request_id, *gateway_args(shared_gateway))

    assert 1 == result.code
    fields = dict(line.split(maxsplit=1) for line in result.out.splitlines())
    assert (request_id, "FAILED") == (fields["request_id"], fields["status"])
    assert "could not decode the input image" == fields["hint"]


@pytest.mark.parametrize(("status", "code"), [("ERROR", 1), ("FAILED", 1), ("PROCESSING", 0)])
def test_status_exits_1_for_a_job_that_ended_without_output_and_0_for_one_still_running(
    run_cli: RunCli, status: str, code: int
) -> None:
    with scripted_gateway(status=status, error="CUDA out of memory"):
        result = run_cli(
            "status", "real-esrgan_00000000", "--json", "--base-url", BASE, "--api-key", KEY
        )

    assert code == result.code, result.err
    assert status == result.json()["status"]
