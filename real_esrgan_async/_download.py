"""Fetching an output image from the media host, safely.

The media host is not the gateway: no API key goes there. What comes back is
checked (an image content type, a size cap) before it is kept, and a file is
written beside its destination and renamed into place only when complete.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import httpx

from ._exceptions import DownloadError
from ._gateway import USER_AGENT, Gateway
from ._models import JobState, Status
from ._retry import Failure, Operation, decide

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
_CHUNK = 64 * 1024

_Fail = Callable[[str], DownloadError]


async def download(
    gateway: Gateway, state: JobState, dest: Path | None, *, max_bytes: int
) -> bytes | Path:
    """Download `state`'s output into memory or to `dest`: see `AsyncRealESRGAN.download`."""
    url = state.media_url
    if state.status is not Status.COMPLETED or url is None:
        raise DownloadError(
            f"job {state.request_id} has no output to download (status {state.status.value})",
            url=url or "",
            request_id=state.request_id,
        )
    if dest is not None and await anyio.Path(dest).is_dir():
        dest = dest / f"{state.request_id}.png"
    attempt = 0
    while True:
        attempt += 1
        try:
            return await _fetch_once(gateway, state, url, dest, max_bytes)
        except _TransientError as exc:
            decision = decide(
                gateway.retry, Operation.READ, Failure.NO_ANSWER, attempt=attempt, rng=gateway.rng()
            )
            if not decision.retry:
                raise DownloadError(
                    f"downloading the output of job {state.request_id} failed: {exc}",
                    url=url,
                    request_id=state.request_id,
                ) from exc.__cause__
            gateway.counters.retries += 1
            await anyio.sleep(decision.delay)


class _TransientError(Exception):
    """A failure worth another try (the media host is free to ask)."""


async def _fetch_once(
    gateway: Gateway, state: JobState, url: str, dest: Path | None, max_bytes: int
) -> bytes | Path:
    def fail(message: str) -> DownloadError:
        return DownloadError(
            f"output of job {state.request_id}: {message}", url=url, request_id=state.request_id
        )

    async with gateway.limiter:
        try:
            async with gateway.http.stream("GET", url, headers={"User-Agent": USER_AGENT}) as resp:
                if resp.status_code >= 500:
                    raise _TransientError(f"media host answered {resp.status_code}")
                if resp.status_code in (403, 404, 410):
                    raise fail(
                        f"media host answered {resp.status_code}: the URL has expired or is "
                        "wrong (output URLs are temporary; download promptly)"
                    )
                if not resp.is_success:
                    raise fail(f"media host answered {resp.status_code}")
                content_type = resp.headers.get("Content-Type", "")
                if not content_type.startswith("image/"):
                    raise fail(f"expected an image, got Content-Type {content_type!r}")
                declared = resp.headers.get("Content-Length")
                if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                    raise fail(f"{declared} bytes is over the limit of {max_bytes}")
                if dest is None:
                    return await _collect(resp, max_bytes, fail)
                return await _write(resp, dest, max_bytes, fail)
        except httpx.TransportError as exc:
            raise _TransientError(f"{type(exc).__name__}: {exc}") from exc


async def _chunks(resp: httpx.Response, max_bytes: int, fail: _Fail) -> AsyncIterator[bytes]:
    received = 0
    async for chunk in resp.aiter_bytes(_CHUNK):
        received += len(chunk)
        if received > max_bytes:
            raise fail(f"more than {max_bytes} bytes; refused")
        yield chunk


async def _collect(resp: httpx.Response, max_bytes: int, fail: _Fail) -> bytes:
    body = bytearray()
    async for chunk in _chunks(resp, max_bytes, fail):
        body += chunk
    return bytes(body)


async def _write(resp: httpx.Response, dest: Path, max_bytes: int, fail: _Fail) -> Path:
    partial = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.part")
    try:
        async with await anyio.open_file(partial, "wb") as file:
            async for chunk in _chunks(resp, max_bytes, fail):
                await file.write(chunk)
        # Same directory, so the rename is atomic: the final name only ever holds a whole file.
        await anyio.to_thread.run_sync(os.replace, partial, dest)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(lambda: partial.unlink(missing_ok=True))
        raise
    return dest
