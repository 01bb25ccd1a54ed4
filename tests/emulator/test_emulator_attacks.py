"""Attacks on the emulator itself: what it fetches, where it POSTs, whom it answers, what it holds.

The emulator accepts a published key and fetches whatever a submit names, so each way it could be
turned against the machine it runs on is tried here: inputs and callbacks aimed off loopback
(directly or through a redirect), a page re-pointing its own name at 127.0.0.1 (DNS rebinding:
the request carries the page's ``Host``), and outputs piling up in memory.
"""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from emulator_helpers import (
    Receiver,
    async_client,
    fast_config,
    key_headers,
    run_job,
    submit,
    sync_client,
    wait_until,
)

from real_esrgan_async.testing import running_emulator
from real_esrgan_async.testing._hosts import (
    RefusedHostError,
    host_header_allowed,
    is_loopback_host,
    open_checked,
)
from real_esrgan_async.testing._images import Upscaled
from real_esrgan_async.testing._state import EmulatorState
from real_esrgan_async.testing._validation import SubmitRequest

# TEST-NET addresses (RFC 5737): never routed, so a request that slipped through would hang, not
# reach anyone; the refusal happens before any connection is tried.
REMOTE_IMAGE = "http://192.0.2.10/cat.png"
REMOTE_HOOK = "https://203.0.113.7/hook"
REFUSAL = "Failed to download input image: the emulator fetches from loopback hosts only"


class Redirector:
    """A loopback server answering every GET and POST with ``status`` and ``Location``."""

    def __init__(self, status: int, location: str) -> None:
        self.hits = 0

        redirector = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                self.rfile.read(length)
                redirector.hits += 1
                self.send_response(status)
                self.send_header("Location", location.replace("{port}", str(redirector.port)))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self._answer()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.01,), daemon=True
        )
        self._thread.start()

    def url(self, path: str) -> str:
        """A URL on this server."""
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture
def redirect_off_loopback() -> Iterator[Redirector]:
    """Redirects every request to a TEST-NET host."""
    server = Redirector(302, REMOTE_IMAGE)
    try:
        yield server
    finally:
        server.close()


# -- the host rules, with plain strings ---------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("localhost.", True),
        ("0.0.0.0", False),
        ("10.0.0.1", False),
        ("169.254.169.254", False),
        ("::ffff:10.0.0.1", False),
        ("2130706433", False),
        ("127.0.0.1.nip.io", False),
        ("localhost.evil.example", False),
        ("example.com", False),
        ("", False),
    ],
)
def test_only_loopback_literals_and_localhost_count_as_loopback(host: str, expected: bool) -> None:
    """Names are never resolved: a name that points at 127.0.0.1 is still a remote name."""
    assert expected == is_loopback_host(host)


@pytest.mark.parametrize(
    ("header", "port", "expected"),
    [
        ("127.0.0.1:8000", 8000, True),
        ("localhost:8000", 8000, True),
        ("[::1]:8000", 8000, True),
        ("127.0.0.1", 80, True),
        ("rebound.example:8000", 8000, False),
        ("rebound.example", 80, False),
        ("127.0.0.1:8001", 8000, False),
        ("127.0.0.1", 8000, False),
        ("[::1]x:8000", 8000, False),
        ("[::1:8000", 8000, False),
        ("127.0.0.1:80a", 80, False),
        ("127.0.0.1:\uff18\uff10", 80, False),  # fullwidth digits
        ("", 8000, False),
        (None, 8000, False),
        ("localhost:1234", None, True),
        ("rebound.example:1234", None, False),
    ],
)
def test_host_header_must_name_the_served_loopback_port(
    header: str | None, port: int | None, expected: bool
) -> None:
    """A ``Host`` other than a loopback name with the port the connection arrived on is refused."""
    assert expected == host_header_allowed(header, port)


# -- redirects, hop by hop (no sockets: a mock transport) ---------------------------------------


def _redirecting_transport(seen: list[str]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.path == "/start":
            return httpx.Response(302, headers={"Location": "http://127.0.0.1:9/next"})
        if request.url.path == "/next":
            return httpx.Response(307, headers={"Location": "http://192.0.2.10/away"})
        return httpx.Response(200, content=b"arrived")

    return httpx.MockTransport(handle)


@pytest.mark.anyio
async def test_a_redirect_off_loopback_is_refused_before_it_is_followed() -> None:
    """Loopback -> loopback -> TEST-NET: the first two hops are sent, the third is refused
    before any request leaves for it."""
    seen: list[str] = []
    async with httpx.AsyncClient(transport=_redirecting_transport(seen)) as client:
        request = client.build_request("GET", "http://127.0.0.1:9/start")
        with pytest.raises(RefusedHostError) as refused:
            await open_checked(client, request, allow_remote_hosts=False)
    assert ["http://127.0.0.1:9/start", "http://127.0.0.1:9/next"] == seen
    assert "http://192.0.2.10/away" == refused.value.url


@pytest.mark.anyio
async def test_allow_remote_hosts_follows_every_hop() -> None:
    """With the opt-in, the same chain is followed to its end."""
    seen: list[str] = []
    async with httpx.AsyncClient(transport=_redirecting_transport(seen)) as client:
        request = client.build_request("GET", "http://127.0.0.1:9/start")
        response = await open_checked(client, request, allow_remote_hosts=True)
        body = await response.aread()
        await response.aclose()
    assert 3 == len(seen)
    assert (200, b"arrived") == (response.status_code, body)


@pytest.mark.anyio
async def test_a_redirect_loop_ends() -> None:
    """A server redirecting to itself forever is given up after the redirect limit."""
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(302, headers={"Location": "/again"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as client:
        request = client.build_request("GET", "http://127.0.0.1:9/again")
        with pytest.raises(httpx.TooManyRedirects):
            await open_checked(client, request, allow_remote_hosts=False, max_redirects=3)
    assert 4 == len(seen)


# -- inputs, over loopback ---------------------------------------------------------------------


def test_an_input_off_loopback_fails_without_being_fetched() -> None:
    """An image URL on a TEST-NET host FAILs at once with a message saying why and how to
    allow it; the job is not left waiting on a connection."""
    with running_emulator(fast_config()) as gateway, sync_client() as client:
        body = run_job(client, gateway, REMOTE_IMAGE)
    assert "FAILED" == body["status"]
    assert body["error"].startswith(REFUSAL)
    assert body["error"].endswith(f"refused {REMOTE_IMAGE} for url: {REMOTE_IMAGE}")
    assert "allow_remote_hosts=True" in body["error"]


def test_an_input_redirecting_off_loopback_fails_naming_the_hop(
    redirect_off_loopback: Redirector,
) -> None:
    """A loopback input that redirects to a TEST-NET host: the redirect is refused."""
    url = redirect_off_loopback.url("/cat.png")
    with running_emulator(fast_config()) as gateway, sync_client() as client:
        body = run_job(client, gateway, url)
    assert "FAILED" == body["status"]
    assert body["error"].startswith(REFUSAL)
    assert body["error"].endswith(f"refused {REMOTE_IMAGE} for url: {url}")
    assert 1 == redirect_off_loopback.hits


def test_an_input_redirecting_within_loopback_is_still_fetched() -> None:
    """Redirects are not refused as such: one to the emulator's own sample is followed."""
    with running_emulator(fast_config()) as gateway, sync_client() as client:
        redirector = Redirector(301, gateway.sample_url("tiny.png"))
        try:
            body = run_job(client, gateway, redirector.url("/moved.png"))
        finally:
            redirector.close()
    assert "COMPLETED" == body["status"]


# -- webhooks, over loopback -------------------------------------------------------------------


def test_a_callback_off_loopback_is_refused_and_not_retried() -> None:
    """An https callback to a TEST-NET host is accepted (as the gateway would) but never sent:
    counted once as refused, not as a failure to retry."""
    config = fast_config(fetch_inputs=False, time_scale=0.0, webhook_retry_delay=0.0)
    with running_emulator(config) as gateway, sync_client() as client:
        response = submit(
            client,
            gateway,
            gateway.sample_url("tiny.png"),
            headers=key_headers(gateway, **{"X-Webhook-URL": REMOTE_HOOK}),
        )
        wait_until(lambda: gateway.emulator.stats().webhooks_refused == 1)
        stats = gateway.emulator.stats()
    assert 202 == response.status_code
    assert (1, 0, 0, 0) == (
        stats.webhooks_refused,
        stats.webhooks_delivered,
        stats.webhooks_failed,
        stats.webhooks_abandoned,
    )


def test_a_callback_redirected_off_loopback_is_refused() -> None:
    """A loopback receiver answering 307 to a TEST-NET host: the POST is not followed there."""
    redirector = Redirector(307, REMOTE_HOOK)
    config = fast_config(fetch_inputs=False, time_scale=0.0, allow_http_webhooks=True)
    try:
        with running_emulator(config) as gateway, sync_client() as client:
            submit(
                client,
                gateway,
                gateway.sample_url("tiny.png"),
                headers=key_headers(gateway, **{"X-Webhook-URL": redirector.url("/hook")}),
            )
            wait_until(lambda: gateway.emulator.stats().webhooks_refused == 1)
            stats = gateway.emulator.stats()
    finally:
        redirector.close()
    assert (1, 0, 1) == (stats.webhooks_refused, stats.webhooks_delivered, redirector.hits)


def test_a_callback_redirected_within_loopback_is_delivered(receiver: Receiver) -> None:
    """A 307 to another loopback receiver is followed, body and method kept."""
    redirector = Redirector(307, receiver.url)
    config = fast_config(fetch_inputs=False, time_scale=0.0, allow_http_webhooks=True)
    try:
        with running_emulator(config) as gateway, sync_client() as client:
            accepted = submit(
                client,
                gateway,
                gateway.sample_url("tiny.png"),
                headers=key_headers(gateway, **{"X-Webhook-URL": redirector.url("/hook")}),
            ).json()
            calls = receiver.wait_for(1)
            wait_until(lambda: gateway.emulator.stats().webhooks_delivered == 1)
    finally:
        redirector.close()
    assert (accepted["request_id"], "COMPLETED") == (
        calls[0].json()["request_id"],
        calls[0].json()["status"],
    )


# -- whom it answers: DNS rebinding -------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    "host", ["rebound.example:{port}", "rebound.example", "127.0.0.1:1", "192.168.1.5:{port}"]
)
async def test_a_rebound_host_header_gets_421_and_creates_nothing(host: str) -> None:
    """A request carrying a page's own name (or another port) is answered 421 before the key
    is even looked at, and no job is created."""
    with running_emulator(fast_config(fetch_inputs=False)) as gateway:
        async with async_client() as client:
            response = await client.post(
                gateway.base_url + "/real-esrgan/v1/real-esrgan/generate",
                json={"image": gateway.sample_url("tiny.png")},
                headers={**key_headers(gateway), "Host": host.format(port=gateway.port)},
            )
            stats_response = await client.get(
                gateway.base_url + "/_emulator/stats",
                headers={"Host": host.format(port=gateway.port)},
            )
        stats = gateway.emulator.stats()
    assert (421, "Misdirected Request") == (response.status_code, response.json()["error"])
    assert 421 == stats_response.status_code
    assert (0, 0) == (stats.submits_received, stats.jobs_created)


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["127.0.0.1", "localhost"])
async def test_loopback_names_with_the_served_port_are_answered(name: str) -> None:
    """The names a local client uses are accepted."""
    with running_emulator(fast_config(fetch_inputs=False)) as gateway:
        async with async_client() as client:
            response = await client.get(
                gateway.base_url + "/_emulator/stats",
                headers={"Host": f"{name}:{gateway.port}"},
            )
    assert 200 == response.status_code


def test_a_request_without_host_gets_421() -> None:
    """HTTP/1.0 allows leaving ``Host`` out; the emulator then cannot tell who is asking."""
    with (
        running_emulator(fast_config(fetch_inputs=False)) as gateway,
        socket.create_connection((gateway.host, gateway.port), timeout=10) as sock,
    ):
        sock.sendall(b"GET /_emulator/stats HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 421 ")


# -- what it holds: outputs under a byte cap ---------------------------------------------------


def _completed(state: EmulatorState, now: float, size: int) -> str:
    request = SubmitRequest(image="https://example.com/a.png", scale=1, face_enhance=False)
    job: Any = state.try_create(now, 1.78e9, request, base_url="http://gw", webhook=None)
    state.finish(job, now, Upscaled(png=b"x" * size, input_pixels=1, output_pixels=1))
    return str(job.request_id)


def test_outputs_past_the_byte_cap_evict_the_least_recently_used() -> None:
    """With a 1,000-byte cap and 400-byte outputs, the third output evicts the one least
    recently used (a download counts as a use); evicted outputs are gone like expired ones."""
    state = EmulatorState(fast_config(time_scale=0.0, max_output_bytes=1_000), b"tiny")
    first = _completed(state, 0.0, 400)
    second = _completed(state, 1.0, 400)
    assert state.media(first, 2.0) is not None  # first is now the most recently used
    third = _completed(state, 3.0, 400)
    held = {rid: state.media(rid, 4.0) is not None for rid in (first, second, third)}
    stats = state.snapshot(4.0)
    assert {first: True, second: False, third: True} == held
    assert (800, 1) == (state.held_output_bytes, stats.outputs_evicted)


def test_held_output_bytes_never_exceed_the_cap_over_many_jobs() -> None:
    """A thousand 300-byte outputs under a 10,000-byte cap: at most 10,000 bytes held at any
    time, and exactly the 33 most recent outputs still served."""
    state = EmulatorState(fast_config(time_scale=0.0, max_output_bytes=10_000), b"tiny")
    peak = 0
    ids = []
    for i in range(1_000):
        ids.append(_completed(state, float(i), 300))
        peak = max(peak, state.held_output_bytes)
    served = [rid for rid in ids if state.media(rid, 2_000.0) is not None]
    assert 10_000 >= peak
    assert ids[-33:] == served


def test_expired_outputs_are_released_from_the_count() -> None:
    """An output past its TTL no longer counts against the cap."""
    state = EmulatorState(fast_config(time_scale=0.0, media_ttl=5.0), b"tiny")
    _completed(state, 0.0, 400)
    state.advance(10.0)
    assert 0 == state.held_output_bytes


def test_an_evicted_output_answers_404_over_http() -> None:
    """Over loopback: with a cap smaller than any output, only the most recent is held, so the
    first output is evicted when the second completes and answers 404, as an expired one does."""
    with running_emulator(fast_config(max_output_bytes=1)) as gateway, sync_client() as client:
        first = run_job(client, gateway, gateway.sample_url("tiny.png"))
        second = run_job(client, gateway, gateway.sample_url("pattern.png"))
        gone = client.get(first["output"]["media_url"][0])
        kept = client.get(second["output"]["media_url"][0])
        stats = gateway.emulator.stats()
    assert (404, 200) == (gone.status_code, kept.status_code)
    assert 1 == stats.outputs_evicted
