"""`upscale_many` over local files, end to end: a real S3 store (SeaweedFS), the emulator
fetching the presigned URLs, uploads counted at the store, jobs counted at the emulator.
"""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import anyio
import pytest
from PIL import Image
from s3_server import FAST_POLL, FAST_RETRY, S3Server
from test_s3_host import keys_under, make_unreadable

from real_esrgan_async import (
    AmbiguousSubmitError,
    AsyncRealESRGAN,
    ImageHost,
    InvalidRequestError,
    JournalMismatchError,
    Outcome,
    RealESRGAN,
    S3ImageHost,
    SQLiteJournal,
    SQLiteStore,
    Store,
)
from real_esrgan_async.testing import EmulatorConfig, RunningEmulator, running_emulator

pytestmark = pytest.mark.anyio


def png(width: int, height: int, color: tuple[int, int, int] = (30, 120, 200)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def dimensions(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def host_for(server: S3Server, prefix: str, **options: object) -> S3ImageHost:
    return S3ImageHost(server.bucket, prefix, endpoint_url=server.endpoint_url, **options)  # type: ignore[arg-type]


def client_for(
    gateway: RunningEmulator, host: ImageHost | None, store: Store | None = None
) -> AsyncRealESRGAN:
    return AsyncRealESRGAN(
        gateway.api_key,
        base_url=gateway.base_url,
        retry=FAST_RETRY,
        poll=FAST_POLL,
        image_host=host,
        store=store,
    )


def paid(gateway: RunningEmulator) -> int:
    return gateway.emulator.stats().jobs_created


def folder(tmp_path: Path, count: int, *, twins: int = 0) -> list[Path]:
    """`count` distinct PNGs (image i is (8 + i) x 6), then `twins` copies of the first ones
    under other names."""
    paths = []
    for i in range(count + twins):
        path = tmp_path / f"photo-{i:02d}.png"
        source = i if i < count else i - count
        path.write_bytes(png(8 + source, 6, (source * 20 % 256, 90, 160)))
        paths.append(path)
    return paths


async def all_of(run: object) -> list[Outcome]:
    outcomes = [o async for o in run]  # type: ignore[attr-defined]
    return sorted(outcomes, key=lambda o: o.index)


async def test_a_folder_is_upscaled_outputs_saved_next_to_sources_one_upload_per_content(
    aws_env: S3Server, prefix: str, emulator: RunningEmulator, tmp_path: Path
) -> None:
    """Eight inputs: five distinct files, two copies under other names, and bytes equal to
    one of them: five PUTs at the store, eight paid jobs, eight outputs of twice the size,
    and no object left once the run is over."""
    paths = folder(tmp_path, 5, twins=2)
    inputs: list[Path | bytes] = [*paths, paths[4].read_bytes()]
    puts_before = aws_env.requests("PUT")
    host = host_for(aws_env, prefix)
    async with client_for(emulator, host) as client:
        async with client.upscale_many(inputs, scale=2) as run:
            outcomes = await all_of(run)
        for outcome in outcomes:
            source = paths[outcome.index] if outcome.index < len(paths) else tmp_path / "bytes"
            await client.download(outcome.state, source.with_name(f"{source.stem}.x2.png"))
        assert [] == keys_under(aws_env, prefix)  # each taken down once its job ended
    assert 5 == aws_env.requests("PUT") - puts_before
    assert 8 == paid(emulator)
    for path in paths:
        width, height = dimensions(path)
        assert (2 * width, 2 * height) == dimensions(path.with_name(f"{path.stem}.x2.png"))
    assert all(o.request is not None for o in outcomes)
    images = [o.request.image for o in outcomes if o.request is not None]
    assert all(image.startswith("https://local.invalid/sha256/") for image in images)
    assert images[0] == images[5]  # the same content, the same name


async def test_uploads_are_bounded_by_the_host_and_made_as_each_input_s_turn_comes(
    aws_env: S3Server, prefix: str, emulator: RunningEmulator, tmp_path: Path
) -> None:
    """max_concurrent_uploads=2 holds for the whole run; with two slots, the first outcome is
    handed over before most files were uploaded."""
    running = peak = 0
    lock = threading.Lock()

    class CountingHost(S3ImageHost):
        def _put(self, key: str, image: object) -> None:  # type: ignore[override]
            nonlocal running, peak
            with lock:
                running += 1
                peak = max(peak, running)
            try:
                time.sleep(0.05)
                super()._put(key, image)  # type: ignore[arg-type]
            finally:
                with lock:
                    running -= 1

    paths = folder(tmp_path, 8)
    host = CountingHost(
        aws_env.bucket, prefix, endpoint_url=aws_env.endpoint_url, max_concurrent_uploads=2
    )
    uploads_at_first = None
    outcomes = []
    async with (
        client_for(emulator, host) as client,
        client.upscale_many(paths, scale=2, max_in_flight=2) as run,
    ):
        async for outcome in run:
            if uploads_at_first is None:
                uploads_at_first = host.uploads
            outcomes.append(outcome)
    assert 8 == len(outcomes)
    assert all(o.ok for o in outcomes)
    assert peak <= 2
    assert uploads_at_first is not None
    assert uploads_at_first <= 3  # two slots, and perhaps one more as the first was taken
    assert 8 == host.uploads


async def test_bad_files_get_an_outcome_naming_them_and_nothing_is_paid_for_them(
    aws_env: S3Server, prefix: str, emulator: RunningEmulator, tmp_path: Path
) -> None:
    good = folder(tmp_path, 1)
    bad = {
        kind: make_unreadable(tmp_path, kind)
        for kind in ("missing", "directory", "not-an-image", "empty", "unreadable")
    }
    async with client_for(emulator, host_for(aws_env, prefix)) as client:
        run = client.upscale_many([*good, *bad.values()], scale=2)
        outcomes = await all_of(run)
    assert outcomes[0].ok
    for outcome, path in zip(outcomes[1:], bad.values(), strict=True):
        assert isinstance(outcome.error, InvalidRequestError)
        assert repr(str(path)) in str(outcome.error)
        assert (None, None) == (outcome.request, outcome.request_id)
    assert 1 == paid(emulator)


async def test_local_inputs_without_an_image_host_say_how_to_configure_one(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    paths = folder(tmp_path, 2)
    async with client_for(emulator, None) as client:
        outcomes = await all_of(client.upscale_many([*paths, b"\x89PNG\r\n\x1a\n"]))
    assert 3 == len(outcomes)
    for outcome in outcomes:
        assert isinstance(outcome.error, InvalidRequestError)
        assert "image_host=S3ImageHost(" in str(outcome.error)
    assert 0 == paid(emulator)


@pytest.mark.parametrize("stop", ["break", "exception", "cancel"])
async def test_every_object_is_taken_down_on_every_stop_path(
    aws_env: S3Server, prefix: str, emulator: RunningEmulator, tmp_path: Path, stop: str
) -> None:
    """Objects of inputs never submitted go at once; those of jobs still running go when the
    jobs end (they are still watched while the client is open)."""
    paths = folder(tmp_path, 10)
    async with client_for(emulator, host_for(aws_env, prefix)) as client:
        with anyio.CancelScope() as scope:
            try:
                async with client.upscale_many(paths, scale=2, max_in_flight=4) as run:
                    async for _ in run:
                        if stop == "break":
                            break
                        if stop == "exception":
                            raise LookupError("the consumer failed")
                        scope.cancel()
                        await anyio.sleep(1)  # cancelled here
            except LookupError:
                pass
        with anyio.fail_after(20):  # (the store is polled: it sends no event)
            while client.unfinished_request_ids or keys_under(aws_env, prefix):  # noqa: ASYNC110
                await anyio.sleep(0.02)
    assert [] == keys_under(aws_env, prefix)
    assert paid(emulator) < 10  # the run really stopped early


async def test_an_ambiguous_submit_keeps_its_object(
    aws_env: S3Server, prefix: str, tmp_path: Path
) -> None:
    """The connection is cut after the job was created: the job may still fetch its input."""
    config = EmulatorConfig(time_scale=0.002, seed=7, error_rate=0.0, drop_after_create_rate=1.0)
    [path] = folder(tmp_path, 1)
    with running_emulator(config) as gateway:
        async with client_for(gateway, host_for(aws_env, prefix)) as client:
            [outcome] = await all_of(client.upscale_many([path], scale=2))
    assert isinstance(outcome.error, AmbiguousSubmitError)
    assert "X-Amz-Signature" not in str(outcome.error)  # the signed URL is a secret
    assert "local.invalid/sha256/" in str(outcome.error)
    assert 1 == len(keys_under(aws_env, prefix))


async def test_an_ambiguous_single_submit_names_its_object_without_the_signature(
    aws_env: S3Server, prefix: str, tmp_path: Path
) -> None:
    """`submit` of a file whose POST was cut after the job was created: the error names the
    object (bucket path), never its signed URL, and the object stays up for the job."""
    config = EmulatorConfig(time_scale=0.002, seed=7, error_rate=0.0, drop_after_create_rate=1.0)
    [path] = folder(tmp_path, 1)
    with running_emulator(config) as gateway:
        async with client_for(gateway, host_for(aws_env, prefix)) as client:
            with pytest.raises(AmbiguousSubmitError) as info:
                await client.submit(path, scale=2)
    assert "X-Amz-Signature" not in str(info.value)
    assert "X-Amz-Signature" not in info.value.image
    assert "?<signed>" in info.value.image
    assert info.value.__cause__ is None
    assert 1 == len(keys_under(aws_env, prefix))


async def test_a_journal_knows_files_by_content_and_a_rerun_pays_nothing_twice(
    aws_env: S3Server, prefix: str, emulator: RunningEmulator, tmp_path: Path
) -> None:
    paths = folder(tmp_path, 6)
    journal = tmp_path / "photos.journal"
    async with client_for(emulator, host_for(aws_env, prefix)) as client:
        async with client.upscale_many(paths, scale=2, journal=journal) as run:
            async for _ in run:
                break  # interrupted with jobs in flight
        first = paid(emulator)
        # The rerun (signed URLs differ from the first run's): nothing is paid again.
        async with client.upscale_many(paths, scale=2, journal=journal) as run:
            outcomes = await all_of(run)
    assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok]
    assert 6 == paid(emulator)
    assert first == sum(o.resumed for o in outcomes)
    with SQLiteJournal(journal) as opened:
        images = [entry.request.image for entry in opened.entries()]
    assert all(image.startswith("https://local.invalid/sha256/") for image in images)
    assert not any("X-Amz" in image for image in images)


async def test_a_changed_file_at_an_index_is_a_journal_mismatch(
    aws_env: S3Server, prefix: str, emulator: RunningEmulator, tmp_path: Path
) -> None:
    paths = folder(tmp_path, 3)
    journal = tmp_path / "photos.journal"
    async with client_for(emulator, host_for(aws_env, prefix)) as client:
        await all_of(client.upscale_many(paths, scale=2, journal=journal))
        paths[1].write_bytes(png(30, 30))
        with pytest.raises(JournalMismatchError) as caught:
            await all_of(client.upscale_many(paths, scale=2, journal=journal))
    assert 1 == caught.value.index
    assert "local.invalid/sha256/" in str(caught.value)
    assert 3 == paid(emulator)


async def test_keyed_local_inputs_are_uploaded_and_paid_once_across_runs(
    aws_env: S3Server, prefix: str, emulator: RunningEmulator, tmp_path: Path
) -> None:
    """Keys name the files: a second process over the same files (and a copy) pays for
    nothing and uploads nothing: only the caller that wins a key publishes."""
    paths = folder(tmp_path, 4, twins=1)
    store = tmp_path / "keys.db"
    puts_before = aws_env.requests("PUT")

    def key(_index: int, path: Path) -> str:
        return path.name

    for _ in range(2):
        async with client_for(emulator, host_for(aws_env, prefix), SQLiteStore(store)) as client:
            outcomes = await all_of(client.upscale_many(paths, scale=2, idempotency_key=key))
        assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok]
    assert 5 == paid(emulator)  # five names (keys), one of them a copy: five jobs
    assert 4 == aws_env.requests("PUT") - puts_before  # four contents
    assert [] == keys_under(aws_env, prefix)


def test_the_sync_client_takes_paths_too(
    aws_env: S3Server, prefix: str, emulator: RunningEmulator, tmp_path: Path
) -> None:
    paths = folder(tmp_path, 2)
    with (
        RealESRGAN(
            emulator.api_key,
            base_url=emulator.base_url,
            retry=FAST_RETRY,
            poll=FAST_POLL,
            image_host=host_for(aws_env, prefix),
        ) as client,
        client.upscale_many(paths, scale=3) as run,
    ):
        outcomes = list(run)
    assert [True, True] == [o.ok for o in outcomes]
    assert 2 == paid(emulator)
