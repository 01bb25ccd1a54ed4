"""Fetching an output image from the media host, safely.

The media host is not the gateway: no API key goes there. What comes back is
checked before it is kept: an image content type, a size cap, and a whole body
(the declared length, or, when none was declared, the image's own end). A file
is written to a short temporary name beside its destination and renamed into
place only when complete; temporary files that a killed run left behind are
swept. No path is built from the gateway's data except a checked file name.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import httpx

from ._exceptions import DownloadError
from ._gateway import USER_AGENT, Gateway
from ._image_end import ImageEnd
from ._models import JobState, Status
from ._retry import Failure, Operation, decide

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
_CHUNK = 64 * 1024
#: The temporary file of a download in progress: short whatever the final name, and
#: recognisable, so that only ours are ever swept.
PART_PREFIX = ".real-esrgan-async-"
PART_PATTERN = re.compile(r"\.real-esrgan-async-[0-9a-f]{12}\.part")
#: A temporary file untouched this long belongs to a run that died (a live download
#: writes to it every few milliseconds).
STALE_PART_AGE = 3600.0
#: What `download(state, folder)` accepts as a file name made from a request_id.
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")

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
        dest = dest / _file_name(state, url)
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


def _file_name(state: JobState, url: str) -> str:
    """``<request_id>.png``, if the id is a plain file name (it is never trusted as a path)."""
    if not _SAFE_NAME.fullmatch(state.request_id):
        raise DownloadError(
            f"request_id {state.request_id[:80]!r} cannot name a file (only letters, digits, "
            "'.', '_' and '-', starting with a letter or digit, are used in file names); pass a "
            "file path as dest",
            url=url,
            request_id=state.request_id,
        )
    return f"{state.request_id}.png"


def _is_image(content_type: str) -> bool:
    """``image/*``, compared as media types are: case-insensitive, parameters allowed."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type.startswith("image/") and len(media_type) > len("image/")


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
                if not _is_image(content_type):
                    raise fail(f"expected an image, got Content-Type {content_type[:80]!r}")
                declared = resp.headers.get("Content-Length")
                if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                    raise fail(f"{declared} bytes is over the limit of {max_bytes}")
                if dest is None:
                    return await _collect(resp, max_bytes, fail)
                return await _write(resp, dest, max_bytes, fail, swept=gateway.swept_folders)
        except httpx.TransportError as exc:
            raise _TransientError(f"{type(exc).__name__}: {exc}") from exc


async def _chunks(resp: httpx.Response, max_bytes: int, fail: _Fail) -> AsyncIterator[bytes]:
    """The body, checked: at most `max_bytes`, and whole (else `fail` before the last chunk)."""
    received = 0
    framed = _framed(resp)
    end = None if framed else ImageEnd()
    last = None
    async for chunk in resp.aiter_bytes(_CHUNK):
        received += len(chunk)
        if received > max_bytes:
            raise fail(f"more than {max_bytes} bytes; refused")
        if end is not None:
            end.feed(chunk)
        # One chunk behind: the last is yielded only once the body is known whole, so a
        # file never holds all of a cut body (and is never renamed into place).
        if last is not None:
            yield last
        last = chunk
    declared = resp.headers.get("Content-Length")
    if declared is not None and declared.strip().isdigit():
        # The declared length counts the bytes on the wire: decoded ones when not encoded.
        encoded = resp.headers.get("Content-Encoding", "identity").lower() != "identity"
        sent = resp.num_bytes_downloaded if encoded else received
        if sent != int(declared) and (sent or not encoded):
            raise fail(
                f"the media host declared {int(declared)} bytes but sent {sent}: the download "
                "was cut short"
            )
    elif end is not None and (reason := end.verdict()) is not None:
        raise fail(
            "the media host declared no length and closed the connection; "
            f"{reason}. Nothing was saved"
        )
    if last is not None:
        yield last


def _framed(resp: httpx.Response) -> bool:
    """Whether the protocol itself marks the body's end (a cut body is then a transport error).

    HTTP/1.x with neither ``Content-Length`` nor chunked encoding ends the body
    by closing the connection, which a cut connection does too.
    """
    if resp.http_version not in ("HTTP/1.0", "HTTP/1.1"):
        return True  # HTTP/2 and later frame every body
    declared = resp.headers.get("Content-Length")
    chunked = "chunked" in resp.headers.get("Transfer-Encoding", "").lower()
    # A declared length is checked against what arrived, in `_chunks`.
    return chunked or declared is not None


async def _collect(resp: httpx.Response, max_bytes: int, fail: _Fail) -> bytes:
    body = bytearray()
    async for chunk in _chunks(resp, max_bytes, fail):
        body += chunk
    return bytes(body)


async def _write(
    resp: httpx.Response, dest: Path, max_bytes: int, fail: _Fail, *, swept: set[str]
) -> Path:
    folder = dest.parent
    # Swept once per folder and client: a scan per download would cost O(n) each in a
    # folder of n outputs.
    sweep = str(folder) not in swept
    try:
        await anyio.to_thread.run_sync(_prepare_folder, folder, sweep)
        swept.add(str(folder))
    except OSError as exc:
        raise fail(f"cannot save it to {dest}: {exc.strerror or exc}") from None
    # Short whatever the final name (a name near the 255-byte limit has no room for a
    # suffix); created exclusively, so a planted file or symlink is never written through.
    partial = folder / f"{PART_PREFIX}{secrets.token_hex(6)}.part"
    try:
        async with await anyio.open_file(partial, "xb") as file:
            async for chunk in _chunks(resp, max_bytes, fail):
                await file.write(chunk)
        # Same directory, so the rename is atomic: the final name only ever holds a whole file.
        await anyio.to_thread.run_sync(os.replace, partial, dest)
    except BaseException as exc:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(lambda: partial.unlink(missing_ok=True))
        if isinstance(exc, OSError):
            # Name the file the caller asked for, never the hidden temporary one.
            raise fail(f"cannot save it to {dest}: {exc.strerror or exc}") from None
        raise
    return dest


def _prepare_folder(folder: Path, sweep: bool) -> None:
    """Create `folder` if missing; sweep the temporary files that killed runs left in it."""
    folder.mkdir(parents=True, exist_ok=True)
    if sweep:
        sweep_stale_parts(folder, now=time.time())


def sweep_stale_parts(folder: Path, *, now: float, age: float = STALE_PART_AGE) -> list[str]:
    """Delete this library's temporary files in `folder` untouched for `age` seconds.

    Only regular files whose whole name matches `PART_PATTERN` are touched;
    symlinks and everything else are left alone. Failures are ignored: the
    sweep is housekeeping, never a reason for a download to fail.

    Returns:
        The names deleted.
    """
    swept: list[str] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return swept
    for entry in entries:
        if not PART_PATTERN.fullmatch(entry.name):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(info.st_mode) and now - info.st_mtime > age:
                os.unlink(entry.path)
                swept.append(entry.name)
        except OSError:
            continue
    return swept
