"""Preflight against real image hosts on loopback and the emulator, on asyncio and trio.

Each host is a `http.server` in a thread that records every request it saw, so
that a test can say what reached it (and that the API key never did). The
emulator counts POSTs: an input preflight refuses must cost none.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from PIL import Image

from real_esrgan_async import (
    AsyncRealESRGAN,
    InvalidRequestError,
    PollPolicy,
    RealESRGAN,
    RetryPolicy,
    Status,
)
from real_esrgan_async.testing import EmulatorConfig, RunningEmulator, running_emulator
from real_esrgan_async.testing._samples import load_sample

pytestmark = pytest.mark.anyio

FAST_RETRY = RetryPolicy(base_delay=0.01, max_delay=0.05)
FAST_POLL = PollPolicy(initial_delay=0.02, min_interval=0.005, max_interval=0.05)


def png(width: int, height: int, *, noise: bool = False) -> bytes:
    image = Image.effect_noise((width, height), 64) if noise else Image.new("L", (width, height))
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


# A ~400 KB image: a host that ignores ranges sends more than preflight reads.
LARGE_OK = png(640, 640, noise=True)
SMALL_OK = png(64, 48)


class ImageHost:
    """Serves `files` on loopback in one of a few behaviours; records what it was asked."""

    def __init__(self, files: dict[str, bytes], behaviour: str) -> None:
        self.files = files
        self.behaviour = behaviour  # "ranges", "no-ranges", "405-ranges", "500"
        self.seen: list[tuple[str, str, dict[str, str]]] = []  # method, path, headers
        host = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                host.seen.append(("HEAD", self.path, dict(self.headers)))
                self.send_error(405)

            def do_GET(self) -> None:
                host.seen.append(("GET", self.path, dict(self.headers)))
                body = host.files.get(self.path.lstrip("/"))
                ranged = self.headers.get("Range")
                if host.behaviour == "500":
                    self.send_error(500)
                elif body is None:
                    self.send_error(404)
                elif ranged and host.behaviour == "405-ranges":
                    self.send_error(405)
                elif ranged and host.behaviour == "ranges":
                    end = min(int(ranged.rpartition("-")[2]), len(body) - 1)
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes 0-{end}/{len(body)}")
                    self._body(body[: end + 1])
                else:
                    self.send_response(200)
                    self._body(body)

            def _body(self, body: bytes) -> None:
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                # (A reader that took its 64 KiB and left closes the connection.)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{name}"

    def header_values(self) -> list[str]:
        return [value for _, _, headers in self.seen for value in headers.values()]

    def preflight_gets(self) -> list[str | None]:
        """The Range header of each GET the client made (the emulator's fetches are not)."""
        return [
            headers.get("Range")
            for method, _, headers in self.seen
            if method == "GET" and headers.get("User-Agent", "").startswith("real-esrgan-async")
        ]


@pytest.fixture
def host_factory() -> Iterator[Callable[[str], ImageHost]]:
    hosts: list[ImageHost] = []

    def make(behaviour: str) -> ImageHost:
        files = {
            "oversized.png": load_sample("oversized.png") or b"",
            "corrupt.png": load_sample("corrupt.png") or b"",
            "page.html": b"<!doctype html><html><body>not found</body></html>",
            "large.png": LARGE_OK,
            "small.png": SMALL_OK,
        }
        host = ImageHost(files, behaviour)
        host.thread.start()
        hosts.append(host)
        return host

    yield make
    for host in hosts:
        host.server.shutdown()
        host.server.server_close()


@pytest.fixture
def emulator() -> Iterator[RunningEmulator]:
    with running_emulator(EmulatorConfig(time_scale=0.002, seed=7, error_rate=0.0)) as running:
        yield running


def client_for(gateway: RunningEmulator, *, preflight: bool = True) -> AsyncRealESRGAN:
    return AsyncRealESRGAN(
        gateway.api_key,
        base_url=gateway.base_url,
        retry=FAST_RETRY,
        poll=FAST_POLL,
        preflight=preflight,
    )


async def test_an_oversized_input_is_refused_with_a_ranged_get_and_no_post(
    emulator: RunningEmulator, host_factory: Callable[[str], ImageHost]
) -> None:
    """1080x2400: refused, the message gives the size and the limit; the gateway saw nothing."""
    host = host_factory("ranges")
    async with client_for(emulator) as client:
        with pytest.raises(InvalidRequestError) as caught:
            await client.submit(host.url("oversized.png"))
    assert "1080x2400 = 2,592,000 pixels" in str(caught.value)
    assert "limit of 2,096,704 pixels" in str(caught.value)
    assert 0 == emulator.emulator.stats().submits_received
    assert ["bytes=0-65535"] == host.preflight_gets()
    assert [] == [v for v in host.header_values() if emulator.api_key in v]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("corrupt.png", "is a broken PNG header: its first chunk is not IHDR"),
        ("page.html", "is not a PNG, JPEG, GIF, BMP, WebP or TIFF image"),
    ],
)
async def test_an_input_that_is_not_an_image_is_refused_with_no_post(
    emulator: RunningEmulator, host_factory: Callable[[str], ImageHost], name: str, reason: str
) -> None:
    """A corrupt PNG, an HTML page: refused, saying what was seen; no POST."""
    host = host_factory("ranges")
    async with client_for(emulator) as client:
        with pytest.raises(InvalidRequestError, match=reason):
            await client.submit(host.url(name))
    assert 0 == emulator.emulator.stats().submits_received


async def test_a_host_that_ignores_ranges_still_works(
    emulator: RunningEmulator, host_factory: Callable[[str], ImageHost]
) -> None:
    """200 with the whole body: the header is read from its first 64 KiB; the job runs."""
    host = host_factory("no-ranges")
    async with client_for(emulator) as client:
        with pytest.raises(InvalidRequestError, match="over the model's limit"):
            await client.submit(host.url("oversized.png"))
        result = await client.upscale(host.url("large.png"), scale=2)
    assert Status.COMPLETED == result.status
    assert 1 == emulator.emulator.stats().submits_received
    assert ["bytes=0-65535", "bytes=0-65535"] == host.preflight_gets()


async def test_a_host_that_answers_405_to_ranges_and_head_is_read_without_a_range(
    emulator: RunningEmulator, host_factory: Callable[[str], ImageHost]
) -> None:
    """A 405 to the ranged GET: one plain GET follows, and its header is judged."""
    host = host_factory("405-ranges")
    async with client_for(emulator) as client:
        with pytest.raises(InvalidRequestError, match="over the model's limit"):
            await client.submit(host.url("oversized.png"))
        result = await client.upscale(host.url("small.png"), scale=2)
    assert Status.COMPLETED == result.status
    assert 1 == emulator.emulator.stats().submits_received
    assert ["bytes=0-65535", None, "bytes=0-65535", None] == host.preflight_gets()


async def test_a_host_that_errors_refuses_nothing_the_gateway_decides(
    emulator: RunningEmulator,
    host_factory: Callable[[str], ImageHost],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 500 from the image host: the job is submitted (and paid); the reason is at DEBUG."""
    host = host_factory("500")
    caplog.set_level("DEBUG", logger="real_esrgan_async")
    async with client_for(emulator) as client:
        job = await client.submit(host.url("oversized.png"))
    assert [job.request_id] == emulator.emulator.request_ids()
    assert any("its host answered 500" in r.getMessage() for r in caplog.records)


async def test_an_unreachable_host_refuses_nothing(emulator: RunningEmulator) -> None:
    """Nothing listens on the port: no verdict, the POST goes out."""
    async with client_for(emulator) as client:
        await client.submit("http://127.0.0.1:9/nothing-listens.png")
    assert 1 == emulator.emulator.stats().submits_received


async def test_the_fan_out_turns_a_refusal_into_that_inputs_outcome(
    emulator: RunningEmulator, host_factory: Callable[[str], ImageHost]
) -> None:
    """Three inputs, two refused: their outcomes carry the refusal; one POST in all."""
    host = host_factory("ranges")
    urls = [host.url("small.png"), host.url("oversized.png"), host.url("corrupt.png")]
    async with client_for(emulator) as client:
        outcomes = {o.request.image: o async for o in client.upscale_many(urls, scale=2)}
    assert outcomes[urls[0]].error is None
    assert isinstance(outcomes[urls[1]].error, InvalidRequestError)
    assert isinstance(outcomes[urls[2]].error, InvalidRequestError)
    assert 1 == emulator.emulator.stats().submits_received


async def test_the_inputs_size_reaches_the_scheduler(
    emulator: RunningEmulator, host_factory: Callable[[str], ImageHost]
) -> None:
    """The megapixels read at submit are what the wait hands the poller."""
    host = host_factory("ranges")
    seen: list[float | None] = []
    async with client_for(emulator) as client:
        poller = client.session().poller
        watch = poller.watch

        def recording(*args: Any, **kwargs: Any) -> int:
            seen.append(kwargs.get("megapixels"))
            return watch(*args, **kwargs)

        poller.watch = recording  # type: ignore[method-assign]
        await client.upscale(host.url("small.png"), scale=2)
    assert [64 * 48 / 1e6] == seen


async def test_without_preflight_the_input_is_not_fetched_by_the_client(
    emulator: RunningEmulator, host_factory: Callable[[str], ImageHost]
) -> None:
    """Off (the default): the oversized input is submitted, and paid for, as before."""
    host = host_factory("ranges")
    async with client_for(emulator, preflight=False) as client:
        await client.submit(host.url("oversized.png"))
    assert 1 == emulator.emulator.stats().submits_received
    assert [] == host.preflight_gets()


def test_the_sync_client_preflights_too(
    emulator: RunningEmulator, host_factory: Callable[[str], ImageHost]
) -> None:
    """`RealESRGAN(preflight=True)` refuses the same input, with no POST."""
    host = host_factory("ranges")
    with (
        RealESRGAN(emulator.api_key, base_url=emulator.base_url, preflight=True) as client,
        pytest.raises(InvalidRequestError, match="over the model's limit"),
    ):
        client.submit(host.url("oversized.png"))
    assert 0 == emulator.emulator.stats().submits_received


def test_the_option_is_checked() -> None:
    """`preflight` must be a bool: the message says what was given."""
    with pytest.raises(InvalidRequestError, match="preflight"):
        AsyncRealESRGAN("key", preflight="yes")  # type: ignore[arg-type]
