"""The gateway's HTTP API as the emulator serves it: paths, headers, status codes and bodies."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from typing import Any

import pytest
from emulator_helpers import (
    ISO_Z,
    SPACE,
    STATUS_KEYS,
    SUBMIT_PATH,
    async_client,
    await_terminal,
    fast_config,
    image_of,
    key_headers,
    run_job,
    submit,
    sync_client,
    wait_terminal,
    wait_until,
)

from real_esrgan_async.testing import RunningEmulator, running_emulator

REQUEST_ID = re.compile(
    r"real-esrgan_[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
)


@pytest.mark.anyio
async def test_submit_poll_complete_download_over_loopback(shared_gateway: RunningEmulator) -> None:
    """Submit answers 202 with the documented keys; polling reaches COMPLETED with the
    reference's status keys in order; the media URL serves a PNG twice the input's size."""
    gateway = shared_gateway
    async with async_client() as client:
        response = await client.post(
            gateway.base_url + SUBMIT_PATH,
            json={"image": gateway.sample_url("photo.jpg"), "scale": 2},
            headers=key_headers(gateway),
        )
        assert 202 == response.status_code
        accepted = response.json()
        assert ["request_id", "status", "polling_url"] == list(accepted)
        assert REQUEST_ID.fullmatch(accepted["request_id"])
        assert "QUEUED" == accepted["status"]
        expected_polling = f"{gateway.base_url}/v2/requests/status/{accepted['request_id']}"
        assert expected_polling == accepted["polling_url"]

        body = await await_terminal(client, gateway, accepted["request_id"])
        assert STATUS_KEYS == list(body)
        assert accepted["request_id"] == body["request_id"]
        assert "COMPLETED" == body["status"]
        assert "real-esrgan" == body["model_id"]
        assert body["error"] is None
        media_url = f"{gateway.base_url}/media/{accepted['request_id']}/output.png"
        assert {"media_url": [media_url], "media_type": "image/png"} == body["output"]
        for key in ("created_at", "updated_at", "completed_at"):
            assert re.fullmatch(ISO_Z, body[key]), body[key]
        assert body["updated_at"] == body["completed_at"]

        media = await client.get(media_url)
        assert 200 == media.status_code
        assert "image/png" == media.headers["content-type"]
        assert (256, 192) == image_of(media.content).size


def test_documented_curl_example_against_the_emulator(shared_gateway: RunningEmulator) -> None:
    """The reference's submit example, sent with the real curl binary with only the host
    changed, is accepted with a 202 and the documented JSON."""
    gateway = shared_gateway
    image = gateway.sample_url("photo.jpg")
    result = subprocess.run(
        [
            "/usr/bin/curl",
            "--silent",
            "--show-error",
            "--noproxy",
            "*",
            "--write-out",
            "\n%{http_code}",
            "--request",
            "POST",
            f"{gateway.base_url}/real-esrgan/v1/real-esrgan/generate",
            "--header",
            f"Ocp-Apim-Subscription-Key: {gateway.api_key}",
            "--header",
            "Content-Type: application/json",
            "--header",
            "Cache-Control: no-cache",
            "--data",
            json.dumps({"image": image, "scale": 4, "face_enhance": True}),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    payload, status = result.stdout.rsplit("\n", 1)
    assert "202" == status
    accepted = json.loads(payload)
    assert ["request_id", "status", "polling_url"] == list(accepted)
    assert REQUEST_ID.fullmatch(accepted["request_id"])
    assert "QUEUED" == accepted["status"]
    assert accepted["polling_url"].endswith("/v2/requests/status/" + accepted["request_id"])
    with sync_client() as client:
        body = wait_terminal(client, gateway, accepted["request_id"])
        assert "COMPLETED" == body["status"]
        media = client.get(body["output"]["media_url"][0])
    # face_enhance drops nothing from an RGB photo; the output is 4x.
    assert ((512, 384), "RGB") == (image_of(media.content).size, image_of(media.content).mode)


def test_request_ids_are_uuid7_in_creation_order(gateway: RunningEmulator) -> None:
    """Request ids are ``real-esrgan_`` + a version-7 UUID whose order is creation order, and
    whose timestamp is the creation time."""
    with sync_client() as client:
        ids = [
            submit(client, gateway, gateway.sample_url("tiny.png")).json()["request_id"]
            for _ in range(20)
        ]
    assert sorted(ids) == ids
    assert len(set(ids)) == len(ids)
    for request_id in ids:
        assert REQUEST_ID.fullmatch(request_id)
        assert 7 == uuid.UUID(request_id.removeprefix("real-esrgan_")).version
    assert ids == gateway.emulator.request_ids()


@pytest.mark.parametrize(
    "headers",
    [{}, {"Ocp-Apim-Subscription-Key": "wrong"}, {"Authorization": "Bearer emulator-key"}],
    ids=["missing", "wrong", "other-header"],
)
def test_submit_and_status_without_a_valid_key_are_401(
    shared_gateway: RunningEmulator, headers: dict[str, str]
) -> None:
    """Submit and status answer 401 ``Unauthorized`` without the key header's right value."""
    gateway = shared_gateway
    with sync_client() as client:
        accepted = submit(client, gateway, gateway.sample_url("tiny.png")).json()
        before = gateway.emulator.stats()
        refused = submit(client, gateway, gateway.sample_url("tiny.png"), headers=headers)
        status = client.get(accepted["polling_url"], headers=headers)
    for response in (refused, status):
        assert 401 == response.status_code
        assert "Unauthorized" == response.json()["error"]
        assert ["error", "message"] == list(response.json())
    after = gateway.emulator.stats()
    assert before.jobs_created == after.jobs_created
    assert before.unauthorized + 2 == after.unauthorized


def test_media_samples_and_stats_need_no_key(shared_gateway: RunningEmulator) -> None:
    """Media downloads, samples and the admin stats endpoint are served without the key."""
    gateway = shared_gateway
    with sync_client() as client:
        body = run_job(client, gateway, gateway.sample_url("tiny.png"))
        assert 200 == client.get(body["output"]["media_url"][0]).status_code
        assert 200 == client.get(gateway.sample_url("tiny.png")).status_code
        assert 200 == client.get(gateway.base_url + "/_emulator/stats").status_code


def test_every_configured_key_is_accepted() -> None:
    """``api_keys`` is a set: each of its keys is accepted, others are not."""
    with running_emulator(fast_config(api_keys={"key-a", "key-b"})) as gateway, sync_client() as c:
        image = gateway.sample_url("tiny.png")
        codes = [
            submit(c, gateway, image, headers={"Ocp-Apim-Subscription-Key": key}).status_code
            for key in ("key-a", "key-b", "emulator-key")
        ]
    assert [202, 202, 401] == codes


@pytest.mark.parametrize(
    ("content", "mentions"),
    [
        (b"not json", "JSON"),
        (b"[1, 2]", "JSON object"),
        (b"{}", "'image'"),
        (b'{"image": 42}', "'image'"),
        (b'{"image": "/relative/cat.jpg"}', "'image'"),
        (b'{"image": "ftp://example.com/cat.jpg"}', "'image'"),
        (b'{"image": "data:image/png;base64,AAAA"}', "'image'"),
        (b'{"image": "https://"}', "'image'"),
        (b'{"image": "https://example.com/cat.jpg", "scale": 5}', "'scale'"),
        (b'{"image": "https://example.com/cat.jpg", "scale": 0}', "'scale'"),
        (b'{"image": "https://example.com/cat.jpg", "scale": "4"}', "'scale'"),
        (b'{"image": "https://example.com/cat.jpg", "scale": 2.0}', "'scale'"),
        (b'{"image": "https://example.com/cat.jpg", "scale": true}', "'scale'"),
        (b'{"image": "https://example.com/cat.jpg", "face_enhance": "yes"}', "'face_enhance'"),
        (b'{"image": "https://example.com/cat.jpg", "face_enhance": 1}', "'face_enhance'"),
    ],
)
def test_invalid_submit_body_is_400_naming_the_problem(
    shared_gateway: RunningEmulator, content: bytes, mentions: str
) -> None:
    """A body that is not a JSON object, or has a missing/invalid parameter, is refused with
    400 ``Bad Request`` and a message naming what was wrong; no job is created."""
    gateway = shared_gateway
    before = gateway.emulator.stats()
    with sync_client() as client:
        response = client.post(
            gateway.base_url + SUBMIT_PATH, content=content, headers=key_headers(gateway)
        )
    assert 400 == response.status_code
    assert "Bad Request" == response.json()["error"]
    assert mentions in response.json()["message"]
    after = gateway.emulator.stats()
    assert before.jobs_created == after.jobs_created
    assert before.bad_requests + 1 == after.bad_requests


def test_scale_defaults_to_4(shared_gateway: RunningEmulator) -> None:
    """Without ``scale`` the output is 4x (an 8x8 input gives 32x32)."""
    with sync_client() as client:
        body = run_job(client, shared_gateway, shared_gateway.sample_url("tiny.png"))
        media = client.get(body["output"]["media_url"][0])
    assert (32, 32) == image_of(media.content).size


def test_disabled_model_is_400_model_not_found() -> None:
    """With ``model_enabled=False`` every submit gets the queue system's 400 body verbatim."""
    with running_emulator(fast_config(model_enabled=False)) as gateway, sync_client() as client:
        response = submit(client, gateway, gateway.sample_url("tiny.png"))
        stats = gateway.emulator.stats()
    assert 400 == response.status_code
    expected = {
        "error": "Model not found",
        "message": "Model 'real-esrgan' not found or is disabled",
    }
    assert expected == response.json()
    assert 0 == stats.jobs_created


def test_unknown_request_id_is_404(shared_gateway: RunningEmulator) -> None:
    """Polling an id the gateway never issued answers 404 with an error body."""
    with sync_client() as client:
        response = client.get(
            shared_gateway.base_url + "/v2/requests/status/real-esrgan_nope",
            headers=key_headers(shared_gateway),
        )
    assert 404 == response.status_code
    assert {"error": "Not Found", "message": "Request 'real-esrgan_nope' not found"} == (
        response.json()
    )


def test_urls_are_built_on_the_requests_own_host(shared_gateway: RunningEmulator) -> None:
    """``polling_url`` and ``media_url`` use the Host the client used (here ``localhost``)."""
    base = f"http://localhost:{shared_gateway.port}"
    with sync_client() as client:
        accepted = client.post(
            base + SUBMIT_PATH,
            json={"image": shared_gateway.sample_url("tiny.png")},
            headers=key_headers(shared_gateway),
        ).json()
        assert accepted["polling_url"].startswith(base + "/v2/requests/status/")
        body = wait_terminal(client, shared_gateway, accepted["request_id"])
        status = client.get(accepted["polling_url"], headers=key_headers(shared_gateway)).json()
    assert body["output"]["media_url"][0].startswith(shared_gateway.base_url + "/media/")
    assert status["output"]["media_url"][0].startswith(base + "/media/")


@pytest.mark.parametrize(
    ("timestamp_format", "created", "completed"),
    [("iso", ISO_Z, ISO_Z), ("space", SPACE, SPACE), ("mixed", ISO_Z, SPACE)],
)
def test_timestamp_format_knob(timestamp_format: Any, created: str, completed: str) -> None:
    """``timestamp_format`` picks ISO 8601 with ms and Z, the space form, or a mix of both."""
    config = fast_config(timestamp_format=timestamp_format, fetch_inputs=False)
    with running_emulator(config) as gateway, sync_client() as client:
        body = run_job(client, gateway, "https://example.com/cat.jpg")
    assert re.fullmatch(created, body["created_at"])
    assert re.fullmatch(created, body["updated_at"])
    assert re.fullmatch(completed, body["completed_at"])


def test_wallet_refuses_with_402_when_it_cannot_pay() -> None:
    """$0.004 pays for two jobs; the third submit gets the documented 402 body; a top-up
    lets the next one through."""
    config = fast_config(wallet_balance=0.004, fetch_inputs=False)
    with running_emulator(config) as gateway, sync_client() as client:
        codes = [submit(client, gateway, f"https://example.com/{i}.png") for i in range(3)]
        assert [202, 202, 402] == [response.status_code for response in codes]
        expected = {
            "error": "Insufficient Balance",
            "message": "Your wallet does not have enough balance.",
        }
        assert expected == codes[2].json()
        stats = gateway.emulator.stats()
        assert (2, 1, 0.0, 0.004) == (
            stats.jobs_created,
            stats.insufficient_balance,
            stats.wallet_balance,
            stats.amount_charged,
        )
        gateway.emulator.top_up(0.002)
        assert 202 == submit(client, gateway, "https://example.com/3.png").status_code
        assert 0.0 == gateway.emulator.stats().wallet_balance


def test_error_jobs_are_refunded() -> None:
    """A job that ends in ERROR (a transient CUDA OOM) gives its $0.002 back."""
    config = fast_config(wallet_balance=0.002, error_rate=1.0, fetch_inputs=False)
    with running_emulator(config) as gateway, sync_client() as client:
        body = run_job(client, gateway, "https://example.com/cat.png")
        stats = gateway.emulator.stats()
        again = submit(client, gateway, "https://example.com/cat.png")
    assert "ERROR" == body["status"]
    assert body["error"].startswith("CUDA out of memory. Tried to allocate ")
    assert body["output"] is None
    assert (0.002, 0.002, 0.002, 1) == (
        stats.wallet_balance,
        stats.amount_charged,
        stats.amount_refunded,
        stats.jobs_errored,
    )
    assert 202 == again.status_code


def test_rate_limit_is_429_with_retry_after() -> None:
    """Beyond ``rate_limit`` creations per window, submits get 429, a ``Retry-After`` in whole
    seconds rounded up to when the window frees, and the message in the provider's words."""
    config = fast_config(rate_limit=2, rate_limit_window=30.0, fetch_inputs=False)
    with running_emulator(config) as gateway, sync_client() as client:
        responses = [submit(client, gateway, f"https://example.com/{i}.png") for i in range(3)]
        stats = gateway.emulator.stats()
    assert [202, 202, 429] == [response.status_code for response in responses]
    limited = responses[2]
    assert "30" == limited.headers["Retry-After"]
    expected = {"error": "Too Many Requests", "message": "Rate limit exceeded, resets in ~30s"}
    assert expected == limited.json()
    assert (2, 1) == (stats.jobs_created, stats.rate_limited)


def test_rate_limit_window_frees_when_retry_after_says() -> None:
    """A client waiting ``Retry-After`` seconds is let in again (1 s window)."""
    config = fast_config(rate_limit=1, rate_limit_window=1.0, fetch_inputs=False)
    with running_emulator(config) as gateway, sync_client() as client:
        assert 202 == submit(client, gateway, "https://example.com/a.png").status_code
        limited = submit(client, gateway, "https://example.com/b.png")
        assert 429 == limited.status_code
        assert "1" == limited.headers["Retry-After"]
        wait_until(
            lambda: submit(client, gateway, "https://example.com/b.png").status_code == 202,
            timeout=float(limited.headers["Retry-After"]) + 5,
        )


def test_posts_are_counted_per_input_url(shared_gateway: RunningEmulator) -> None:
    """``submits_by_image`` counts every POST naming an image, refused ones included."""
    gateway = shared_gateway
    image = gateway.sample_url("tiny.png") + "?unique=" + uuid.uuid4().hex
    with sync_client() as client:
        codes = [
            submit(client, gateway, image, scale=9).status_code,
            submit(client, gateway, image, headers={}).status_code,
            submit(client, gateway, image).status_code,
        ]
    assert [400, 401, 202] == codes
    assert 3 == gateway.emulator.stats().submits_by_image[image]
