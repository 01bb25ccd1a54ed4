"""Attack: a media host (or a network) that cuts, disguises or races an output download.

A download is whole or refused: a declared length is checked, and a body whose
end only a closed connection marks is checked for the image's own end. It is
written under a short temporary name, swept if a killed run left it behind,
into folders created as needed, and its errors name the file the caller asked for.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio.abc
import httpx
import pytest
from attack_helpers import (
    BASE,
    KEY,
    MEDIA,
    Handler,
    client_over,
    raw_server,
    read_request_head,
    split_every,
)
from PIL import Image

from real_esrgan_async import AsyncRealESRGAN, DownloadError, JobState, Status
from real_esrgan_async._download import PART_PATTERN, STALE_PART_AGE

pytestmark = pytest.mark.anyio

STATE = JobState("real-esrgan_1", Status.COMPLETED, media_urls=(MEDIA,))


def image(fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 60)).save(buffer, fmt)
    return buffer.getvalue()


def serving(body: bytes) -> Handler:
    async def media(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"Content-Type": "image/png"})

    return media


async def download_from(handler: Handler, dest: Path | None) -> bytes | Path:
    client, http = client_over(handler)
    async with http, client:
        if dest is None:
            return await client.download(STATE)
        return await client.download(STATE, dest)


def over_loopback(http: httpx.AsyncClient) -> AsyncRealESRGAN:
    """A client whose downloads go through `http`'s real transport (a real connection close)."""
    return AsyncRealESRGAN(KEY, base_url=BASE, http_client=http)


# A body cut short -------------------------------------------------------------------------


def close_delimited(body: bytes) -> Callable[[anyio.abc.SocketStream], Awaitable[None]]:
    """A server that sends `body` with neither Content-Length nor chunked, then closes."""

    async def serve(stream: anyio.abc.SocketStream) -> None:
        await read_request_head(stream)
        await stream.send(
            b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nConnection: close\r\n\r\n" + body
        )

    return serve


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
@pytest.mark.parametrize("to_file", [True, False], ids=["file", "bytes"])
async def test_a_body_cut_short_on_a_close_delimited_connection_is_refused(
    tmp_path: Path, fmt: str, to_file: bool
) -> None:
    whole = image(fmt)
    async with raw_server(close_delimited(whole[: len(whole) * 2 // 3])) as base:
        state = JobState("real-esrgan_1", Status.COMPLETED, media_urls=(f"{base}/out",))
        async with httpx.AsyncClient() as http, over_loopback(http) as client:
            with pytest.raises(DownloadError, match="cut short") as info:
                await client.download(state, tmp_path / "out.png" if to_file else None)

    assert "Nothing was saved" in str(info.value)
    assert [] == os.listdir(tmp_path)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
async def test_a_whole_body_on_a_close_delimited_connection_is_saved(
    tmp_path: Path, fmt: str
) -> None:
    whole = image(fmt)
    async with (
        raw_server(close_delimited(whole)) as base,
        httpx.AsyncClient() as http,
        over_loopback(http) as client,
    ):
        state = JobState("real-esrgan_1", Status.COMPLETED, media_urls=(f"{base}/out",))
        written = await client.download(state, tmp_path / "out.png")

    assert whole == written.read_bytes()


async def test_a_body_shorter_than_its_declared_length_is_refused(tmp_path: Path) -> None:
    """Over a transport that does not enforce Content-Length itself (a proxy, a mock)."""
    whole = image()

    async def media(request: httpx.Request) -> httpx.Response:
        headers = {"Content-Type": "image/png", "Content-Length": str(len(whole))}
        return httpx.Response(200, headers=headers, stream=httpx.ByteStream(whole[:100]))

    with pytest.raises(DownloadError, match=f"declared {len(whole)} bytes but sent 100"):
        await download_from(media, tmp_path / "out.png")
    assert [] == os.listdir(tmp_path)


@pytest.mark.parametrize(
    "content_type", ["IMAGE/PNG", "image/png; charset=binary", " Image/WebP ;q=1"]
)
async def test_media_types_are_compared_case_insensitively(content_type: str) -> None:
    whole = image()

    async def media(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=whole, headers={"Content-Type": content_type})

    assert whole == await download_from(media, None)


@pytest.mark.parametrize("content_type", ["imagex/png", "image/", "text/html; image/png", ""])
async def test_what_is_not_an_image_type_is_still_refused(content_type: str) -> None:
    async def media(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=image(), headers={"Content-Type": content_type})

    with pytest.raises(DownloadError, match="expected an image"):
        await download_from(media, None)


# The temporary file --------------------------------------------------------------------------


async def test_the_temporary_name_stays_short_beside_a_name_at_the_limit(tmp_path: Path) -> None:
    """A final name of 254 bytes leaves no room for a suffix; the temporary name is its own."""
    whole = image()
    seen: list[list[str]] = []

    class Body(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            for piece in split_every(whole, 16):
                seen.append(os.listdir(tmp_path))  # what is on disk mid-download
                yield piece

    async def media(request: httpx.Request) -> httpx.Response:
        headers = {"Content-Type": "image/png", "Content-Length": str(len(whole))}
        return httpx.Response(200, headers=headers, stream=Body())

    dest = tmp_path / ("n" * 250 + ".png")
    written = await download_from(media, dest)

    assert (dest, whole) == (written, dest.read_bytes())
    temporary = {name for names in seen for name in names}
    assert 1 == len(temporary)
    [name] = temporary
    assert PART_PATTERN.fullmatch(name)
    assert len(name) < 40


def age(path: Path, seconds: float) -> Path:
    old = time.time() - seconds
    os.utime(path, (old, old), follow_symlinks=False)
    return path


async def test_stale_temporary_files_of_killed_runs_are_swept_and_nothing_else(
    tmp_path: Path,
) -> None:
    stale = tmp_path / ".real-esrgan-async-0123456789ab.part"
    stale.write_bytes(b"half")
    age(stale, STALE_PART_AGE + 60)
    fresh = tmp_path / ".real-esrgan-async-ba9876543210.part"  # another run, still writing
    fresh.write_bytes(b"live")
    foreign = tmp_path / ".photo.jpg.part"  # someone else's
    foreign.write_bytes(b"theirs")
    age(foreign, 10 * STALE_PART_AGE)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"keep")
    link = tmp_path / ".real-esrgan-async-aaaaaaaaaaaa.part"
    link.symlink_to(victim)
    age(link, 10 * STALE_PART_AGE)

    await download_from(serving(image()), tmp_path / "out.png")

    assert sorted([fresh.name, foreign.name, victim.name, link.name, "out.png"]) == sorted(
        os.listdir(tmp_path)
    )
    assert b"keep" == victim.read_bytes()


async def test_missing_parent_folders_are_created(tmp_path: Path) -> None:
    dest = tmp_path / "out" / "batch-1" / "x.png"
    written = await download_from(serving(image()), dest)
    assert dest == written
    assert dest.is_file()


async def test_an_error_names_the_final_path_not_the_temporary_file(tmp_path: Path) -> None:
    blocker = tmp_path / "out"
    blocker.write_text("a file where a folder is wanted")
    dest = blocker / "x.png"

    with pytest.raises(DownloadError) as info:
        await download_from(serving(image()), dest)

    assert f"cannot save it to {dest}" in str(info.value)
    assert ".part" not in str(info.value)
    assert ["out"] == os.listdir(tmp_path)
