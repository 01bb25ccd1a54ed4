"""Local files as inputs, end to end: a real S3 store (SeaweedFS) and the emulator on loopback.

The emulator fetches the presigned URLs the client made; uploads are counted by the
store itself. Every bad input must fail clearly before a job is paid
(`jobs_created` stays 0).
"""

from __future__ import annotations

import io
import logging
import os
import tracemalloc
from pathlib import Path

import anyio
import httpx
import obstore
import pytest
from obstore.store import S3Store
from PIL import Image
from s3_server import FAST_POLL, FAST_RETRY, S3Server

from real_esrgan_async import (
    AsyncRealESRGAN,
    ImageHost,
    ImageHostError,
    InvalidRequestError,
    LocalImage,
    PublishedImage,
    RealESRGAN,
    S3ImageHost,
)
from real_esrgan_async._hosts import inspect_local
from real_esrgan_async.testing import RunningEmulator

pytestmark = pytest.mark.anyio


def png(width: int, height: int, color: tuple[int, int, int] = (30, 120, 200)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def dimensions(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def host_for(server: S3Server, prefix: str, **options: object) -> S3ImageHost:
    return S3ImageHost(server.bucket, prefix, endpoint_url=server.endpoint_url, **options)  # type: ignore[arg-type]


def client_for(gateway: RunningEmulator, host: ImageHost | None) -> AsyncRealESRGAN:
    return AsyncRealESRGAN(
        gateway.api_key,
        base_url=gateway.base_url,
        retry=FAST_RETRY,
        poll=FAST_POLL,
        image_host=host,
    )


def store_of(server: S3Server) -> S3Store:
    return S3Store(
        server.bucket,
        endpoint=server.endpoint_url,
        access_key_id=server.access_key,
        secret_access_key=server.secret_key,
        region="us-east-1",
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )


def keys_under(server: S3Server, prefix: str) -> list[str]:
    return sorted(
        meta["path"] for batch in obstore.list(store_of(server), prefix) for meta in batch
    )


async def test_a_local_file_is_published_fetched_by_the_gateway_upscaled_and_taken_down(
    aws_env: S3Server, prefix: str, emulator: RunningEmulator, tmp_path: Path
) -> None:
    source = tmp_path / "photo.png"
    source.write_bytes(png(32, 24))
    async with client_for(emulator, host_for(aws_env, prefix)) as client:
        state = await client.upscale(source, scale=2)
        output = await client.download(state)
    assert (64, 48) == dimensions(output)
    assert 1 == emulator.emulator.stats().jobs_created
    assert [] == keys_under(aws_env, prefix)  # retracted once the job ended


async def test_bytes_are_published_like_a_file(
    aws_env: S3Server, prefix: str, emulator: RunningEmulator
) -> None:
    async with client_for(emulator, host_for(aws_env, prefix)) as client:
        state = await client.upscale(png(20, 10), scale=3)
        output = await client.download(state)
    assert (60, 30) == dimensions(output)


async def test_submit_takes_a_path_and_the_object_stays_until_the_job_has_ended(
    aws_env: S3Server, prefix: str, emulator: RunningEmulator, tmp_path: Path
) -> None:
    source = tmp_path / "a.png"
    source.write_bytes(png(8, 8))
    async with client_for(emulator, host_for(aws_env, prefix)) as client:
        job = await client.submit(source, scale=2)
        assert 1 == len(keys_under(aws_env, prefix))  # up while the job may still fetch it
        state = await client.wait(job)
        output = await client.download(state)
    assert (16, 16) == dimensions(output)
    assert [] == keys_under(aws_env, prefix)


async def test_a_batch_with_duplicates_uploads_each_distinct_image_once(
    aws_env: S3Server, prefix: str, emulator: RunningEmulator, tmp_path: Path
) -> None:
    """Six inputs, three distinct contents (one of them under two names): three PUTs."""
    contents = [png(10, 10, (255, 0, 0)), png(12, 10, (0, 255, 0)), png(10, 12, (0, 0, 255))]
    paths = []
    for index, data in enumerate([*contents, contents[0]]):
        path = tmp_path / f"in-{index}.png"
        path.write_bytes(data)
        paths.append(path)
    inputs: list[Path | bytes] = [*paths, paths[1], contents[2]]
    puts_before = aws_env.requests("PUT")
    host = host_for(aws_env, prefix)
    sizes: dict[int, tuple[int, int]] = {}
    async with client_for(emulator, host) as client:

        async def one(index: int, image: Path | bytes) -> None:
            state = await client.upscale(image, scale=2)
            sizes[index] = dimensions(await client.download(state))

        async with anyio.create_task_group() as group:
            for index, image in enumerate(inputs):
                group.start_soon(one, index, image)
    assert 3 == aws_env.requests("PUT") - puts_before
    assert 3 == host.uploads
    expected = {0: (20, 20), 1: (24, 20), 2: (20, 24), 3: (20, 20), 4: (24, 20), 5: (20, 24)}
    assert expected == sizes
    assert 6 == emulator.emulator.stats().jobs_created


async def test_an_object_already_in_the_bucket_is_not_uploaded_again(
    aws_env: S3Server, prefix: str, tmp_path: Path
) -> None:
    """With delete_after_use=False, a later run finds the object by HEAD and skips the PUT."""
    source = tmp_path / "kept.png"
    source.write_bytes(png(9, 9))
    image = await inspect_local(source)
    first, second = (host_for(aws_env, prefix, delete_after_use=False) for _ in range(2))
    puts_before = aws_env.requests("PUT")
    one = await first.publish(image, valid_for=60)
    await first.retract(one)
    two = await second.publish(image, valid_for=60)
    assert 1 == aws_env.requests("PUT") - puts_before
    assert (1, 0) == (first.uploads, second.uploads)
    assert one.key == two.key
    assert [one.key] == keys_under(aws_env, prefix)


async def test_a_large_file_is_streamed_in_parts_not_read_into_memory(
    aws_env: S3Server, prefix: str, tmp_path: Path
) -> None:
    """20 MB goes up as a multipart upload; Python never holds more than a chunk of it."""
    source = tmp_path / "big.png"
    with source.open("wb") as file:
        file.write(png(2, 2))
        for _ in range(20):
            file.write(os.urandom(1024 * 1024))
    host = host_for(aws_env, prefix)
    tracemalloc.start()
    try:
        image = await inspect_local(source)
        published = await host.publish(image, valid_for=60)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024
    async with httpx.AsyncClient() as http:
        fetched = await http.get(published.url)
    assert source.read_bytes() == fetched.content
    await host.retract(published)
    assert [] == keys_under(aws_env, prefix)


def make_unreadable(tmp_path: Path, kind: str) -> Path:
    if kind == "missing":
        return tmp_path / "nope.png"
    if kind == "directory":
        return tmp_path
    if kind == "not-an-image":
        path = tmp_path / "notes.png"
        path.write_text("this is a text file, not a picture\n")
        return path
    if kind == "empty":
        path = tmp_path / "empty.jpg"
        path.write_bytes(b"")
        return path
    # Unreadable even by root (who ignores file modes): reading address 0 of this
    # process's memory fails with EIO.
    return Path("/proc/self/mem")


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "does not exist"),
        ("directory", "is a directory"),
        ("unreadable", "cannot be read"),
        ("not-an-image", "is not a PNG, JPEG, WebP, GIF, BMP or TIFF image (it starts with"),
        ("empty", "is not a PNG, JPEG, WebP, GIF, BMP or TIFF image (it is empty)"),
    ],
)
async def test_a_bad_local_file_fails_clearly_before_anything_is_uploaded_or_paid(
    aws_env: S3Server,
    prefix: str,
    emulator: RunningEmulator,
    tmp_path: Path,
    kind: str,
    message: str,
) -> None:
    path = make_unreadable(tmp_path, kind)
    puts_before = aws_env.requests("PUT")
    async with client_for(emulator, host_for(aws_env, prefix)) as client:
        with pytest.raises(InvalidRequestError) as caught:
            await client.upscale(path)
    assert message in str(caught.value)
    assert repr(str(path)) in str(caught.value)
    assert 0 == emulator.emulator.stats().jobs_created
    assert 0 == aws_env.requests("PUT") - puts_before


async def test_a_local_input_without_an_image_host_says_how_to_configure_one(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    source = tmp_path / "x.png"
    source.write_bytes(png(4, 4))
    async with client_for(emulator, None) as client:
        with pytest.raises(InvalidRequestError) as caught:
            await client.submit(source)
    assert "image_host=S3ImageHost(" in str(caught.value)
    assert "real-esrgan-async[s3]" in str(caught.value)
    assert 0 == emulator.emulator.stats().jobs_created


class _LateHost:
    """A host whose URL is stale by the time it is handed over (a slow link, a skewed clock)."""

    def __init__(self, inner: S3ImageHost, *, tamper: bool = False) -> None:
        self.inner = inner
        self.tamper = tamper
        self.retracted: list[str] = []

    async def publish(self, image: LocalImage, *, valid_for: float) -> PublishedImage:
        published = await self.inner.publish(image, valid_for=1)
        if self.tamper:
            return PublishedImage(
                published.url.replace("X-Amz-Signature=", "X-Amz-Signature=00"),
                published.key,
                image,
            )
        await anyio.sleep(2.5)  # past the URL's 1 s lifetime: the store now refuses it
        return published

    async def retract(self, published: PublishedImage) -> None:
        self.retracted.append(published.key)
        await self.inner.retract(published)


@pytest.mark.parametrize(
    ("tamper", "code"), [(False, "(AccessDenied)"), (True, "(SignatureDoesNotMatch)")]
)
async def test_an_expired_or_forbidden_url_fails_before_the_job_is_paid(
    aws_env: S3Server,
    prefix: str,
    emulator: RunningEmulator,
    tmp_path: Path,
    tamper: bool,
    code: str,
) -> None:
    source = tmp_path / "x.png"
    source.write_bytes(png(4, 4))
    # The tampered URL must not expire meanwhile: its refusal is the signature's alone.
    host = _LateHost(host_for(aws_env, prefix, expires=60 if tamper else 1), tamper=tamper)
    async with client_for(emulator, host) as client:
        with pytest.raises(ImageHostError) as caught:
            await client.upscale(source)
    assert "answered 403" in str(caught.value)
    assert code in str(caught.value)
    assert "nothing was paid" in str(caught.value)
    assert "X-Amz-Signature" not in str(caught.value)
    assert 0 == emulator.emulator.stats().jobs_created
    assert 1 == len(host.retracted)
    assert [] == keys_under(aws_env, prefix)


async def test_a_host_whose_urls_expire_before_the_job_may_start_is_refused_before_upload(
    aws_env: S3Server, prefix: str, emulator: RunningEmulator, tmp_path: Path
) -> None:
    source = tmp_path / "x.png"
    source.write_bytes(png(4, 4))
    puts_before = aws_env.requests("PUT")
    async with client_for(emulator, host_for(aws_env, prefix, expires=60)) as client:
        with pytest.raises(InvalidRequestError) as caught:
            await client.upscale(source)
    assert "S3ImageHost.expires is 60 s, but the URL must stay valid for 900 s" in str(caught.value)
    assert 0 == aws_env.requests("PUT") - puts_before
    assert 0 == emulator.emulator.stats().jobs_created


async def test_wrong_credentials_fail_the_upload_clearly_and_are_never_echoed(
    aws_env: S3Server,
    prefix: str,
    emulator: RunningEmulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = "not-the-secret-key-at-all-0123456789"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    source = tmp_path / "x.png"
    source.write_bytes(png(4, 4))
    caplog.set_level(logging.DEBUG)
    async with client_for(emulator, host_for(aws_env, prefix)) as client:
        with pytest.raises(ImageHostError) as caught:
            await client.upscale(source)
    assert f"could not publish {str(source)!r} to bucket 'inputs'" in str(caught.value)
    assert wrong not in str(caught.value)
    assert wrong not in caplog.text
    assert 0 == emulator.emulator.stats().jobs_created


async def test_signed_urls_are_logged_without_their_query(
    aws_env: S3Server, prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = tmp_path / "x.png"
    source.write_bytes(png(4, 4))
    caplog.set_level(logging.DEBUG, logger="real_esrgan_async.hosts")
    host = host_for(aws_env, prefix)
    published = await host.publish(await inspect_local(source), valid_for=60)
    await host.retract(published)
    assert "X-Amz-Signature=" in published.url
    assert f"as {published.url.partition('?')[0]}?<signed>" in caplog.text
    assert "X-Amz" not in caplog.text
    assert aws_env.access_key not in caplog.text


def test_the_sync_client_upscales_a_local_file(
    aws_env: S3Server, prefix: str, emulator: RunningEmulator, tmp_path: Path
) -> None:
    source = tmp_path / "photo.png"
    source.write_bytes(png(16, 8))
    with RealESRGAN(
        emulator.api_key,
        base_url=emulator.base_url,
        retry=FAST_RETRY,
        poll=FAST_POLL,
        image_host=host_for(aws_env, prefix),
    ) as client:
        state = client.upscale(source, scale=4)
        output = client.download(state)
    assert (64, 32) == dimensions(output)


def test_s3_image_host_options_are_checked_with_what_is_allowed() -> None:
    cases = {
        "S3ImageHost.bucket must be a bucket name (no slash), got 'a/b'": {"bucket": "a/b"},
        "S3ImageHost.expires must be a finite number in [1, 604800] seconds, got 0": {"expires": 0},
        "S3ImageHost.max_concurrent_uploads must be an int >= 1, got 0": {
            "max_concurrent_uploads": 0
        },
        "S3ImageHost.delete_after_use must be a bool (True or False), got 1": {
            "delete_after_use": 1
        },
        "S3ImageHost.endpoint_url must be None or an http(s) URL, got 'ftp://x'": {
            "endpoint_url": "ftp://x"
        },
    }
    for expected, options in cases.items():
        arguments: dict[str, object] = {"bucket": "b", **options}
        with pytest.raises(InvalidRequestError) as caught:
            S3ImageHost(**arguments)  # type: ignore[arg-type]
        assert expected == str(caught.value)


def test_the_client_refuses_an_image_host_that_is_not_one() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        AsyncRealESRGAN("key", image_host="s3://bucket/prefix")  # type: ignore[arg-type]
    assert "AsyncRealESRGAN.image_host must be None or a ImageHost, got str" in str(caught.value)


def test_make_request_says_local_inputs_go_through_submit(tmp_path: Path) -> None:
    client = AsyncRealESRGAN("key")
    with pytest.raises(InvalidRequestError) as caught:
        client.make_request(tmp_path / "x.png")
    assert "is local: submit and upscale publish it through the client's image_host" in str(
        caught.value
    )
