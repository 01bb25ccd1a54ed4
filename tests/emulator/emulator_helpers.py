"""Helpers shared by the emulator tests: requests as a client sends them, and a webhook receiver.

The receiver is a plain threaded ``http.server`` on 127.0.0.1, independent of the emulator.
"""

from __future__ import annotations

import collections
import functools
import http.server
import io
import json
import ssl
import threading
import time
from collections.abc import Iterable
from typing import Any

import anyio
import attrs
import httpx
from PIL import Image

from real_esrgan_async.testing import EmulatorConfig, RunningEmulator

SUBMIT_PATH = "/real-esrgan/v1/real-esrgan/generate"
TERMINAL = frozenset(("COMPLETED", "FAILED", "ERROR"))
STATUS_KEYS = [
    "request_id",
    "status",
    "model_id",
    "error",
    "output",
    "created_at",
    "updated_at",
    "completed_at",
]
ISO_Z = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z"
SPACE = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}"
WAIT_TIMEOUT = 20.0


def fast_config(**overrides: Any) -> EmulatorConfig:
    """A reproducible, fast emulator with no random failures unless a test asks for them."""
    options: dict[str, Any] = {
        "time_scale": 0.001,
        "seed": 1234,
        "error_rate": 0.0,
        "cold_start_rate": 0.0,
    }
    options.update(overrides)
    return EmulatorConfig(**options)


def key_headers(gateway: RunningEmulator, **extra: str) -> dict[str, str]:
    """The documented submit headers."""
    return {
        "Ocp-Apim-Subscription-Key": gateway.api_key,
        "Content-Type": "application/json",
        "Cache-Control": "no-cache",
        **extra,
    }


@functools.cache
def _tls() -> ssl.SSLContext:
    # Loading the CA bundle takes ~40 ms; every test client would pay it again.
    return ssl.create_default_context()


def sync_client() -> httpx.Client:
    """A client that ignores proxy settings of the host (all traffic is loopback)."""
    return httpx.Client(trust_env=False, timeout=10.0, verify=_tls())


def async_client() -> httpx.AsyncClient:
    """The async counterpart of ``sync_client``."""
    return httpx.AsyncClient(trust_env=False, timeout=10.0, verify=_tls())


def submit(
    client: httpx.Client,
    gateway: RunningEmulator,
    image: str,
    headers: dict[str, str] | None = None,
    **fields: Any,
) -> httpx.Response:
    """POST a submit with ``image`` and the other body fields."""
    return client.post(
        gateway.base_url + SUBMIT_PATH,
        json={"image": image, **fields},
        headers=headers if headers is not None else key_headers(gateway),
    )


def wait_terminal(
    client: httpx.Client, gateway: RunningEmulator, request_id: str
) -> dict[str, Any]:
    """Poll until the job is terminal; return the last status body."""
    deadline = time.monotonic() + WAIT_TIMEOUT
    while True:
        response = client.get(
            f"{gateway.base_url}/v2/requests/status/{request_id}", headers=key_headers(gateway)
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["status"] in TERMINAL:
            return body
        assert time.monotonic() < deadline, f"{request_id} still {body['status']}"
        time.sleep(0.01)


async def await_terminal(
    client: httpx.AsyncClient, gateway: RunningEmulator, request_id: str
) -> dict[str, Any]:
    """The async counterpart of ``wait_terminal``."""
    with anyio.fail_after(WAIT_TIMEOUT):
        while True:
            response = await client.get(
                f"{gateway.base_url}/v2/requests/status/{request_id}",
                headers=key_headers(gateway),
            )
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            if body["status"] in TERMINAL:
                return body
            await anyio.sleep(0.01)


def run_job(
    client: httpx.Client, gateway: RunningEmulator, image: str, **fields: Any
) -> dict[str, Any]:
    """Submit and wait for the terminal status."""
    response = submit(client, gateway, image, **fields)
    assert response.status_code == 202, response.text
    return wait_terminal(client, gateway, response.json()["request_id"])


def image_of(data: bytes) -> Image.Image:
    """Decode an image (fully loaded)."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def wait_until(predicate: Any, timeout: float = WAIT_TIMEOUT) -> None:
    """Poll ``predicate()`` until true (for counters updated by background work)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


@attrs.frozen
class Call:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float  # time.time()

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


class Receiver:
    """A webhook receiver on 127.0.0.1 answering a scripted sequence of statuses (then 200)."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._statuses: collections.deque[int] = collections.deque()
        self._condition = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with receiver._condition:
                    receiver.calls.append(
                        Call(self.path, dict(self.headers.items()), body, time.time())
                    )
                    status = receiver._statuses.popleft() if receiver._statuses else 200
                    receiver._condition.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.01,), daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """The receiver's base URL (any path is accepted)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def answer(self, statuses: Iterable[int]) -> None:
        """Answer the next POSTs with ``statuses``, then 200."""
        with self._condition:
            self._statuses.extend(statuses)

    def wait_for(self, count: int, timeout: float = WAIT_TIMEOUT) -> list[Call]:
        """Wait until at least ``count`` POSTs arrived; return all so far."""
        with self._condition:
            arrived = self._condition.wait_for(lambda: len(self.calls) >= count, timeout)
            assert arrived, f"expected {count} callbacks, got {len(self.calls)}"
            return list(self.calls)

    def close(self) -> None:
        """Stop serving and release the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@attrs.define
class SlowInput:
    """An input server whose responses are held until ``release()``: for "not before fetched"."""

    server: http.server.ThreadingHTTPServer
    release_event: threading.Event
    requested: threading.Event
    thread: threading.Thread

    @property
    def url(self) -> str:
        """The held input's URL."""
        return f"http://127.0.0.1:{self.server.server_address[1]}/held.png"

    def release(self) -> None:
        """Let the held responses go."""
        self.release_event.set()

    def close(self) -> None:
        """Stop serving."""
        self.release_event.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def slow_input(payload: bytes) -> SlowInput:
    """Serve ``payload`` as PNG, each response held until released."""
    release = threading.Event()
    requested = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requested.set()
            release.wait(WAIT_TIMEOUT)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    return SlowInput(server, release, requested, thread)


def png_bytes(image: Image.Image) -> bytes:
    """Encode ``image`` as PNG."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()
