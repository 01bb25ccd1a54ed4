"""Type-checked by mypy in CI, never executed: the public API as a user writes it.

If a signature changes in a way that breaks callers, `mypy --strict` fails here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from real_esrgan_async import (
    AmbiguousSubmitError,
    AsyncRealESRGAN,
    IdempotencyKeyMismatchError,
    ImageHost,
    ImageHostError,
    InsufficientBalanceError,
    Job,
    JobError,
    JobState,
    JobsUnfinishedError,
    Journal,
    LocalImage,
    Outcome,
    OutputExpiredError,
    PollPolicy,
    PublishedImage,
    RealESRGAN,
    RedisStore,
    RetryPolicy,
    S3ImageHost,
    SQLiteJournal,
    SQLiteStore,
    Stats,
    Status,
    Store,
    StoreError,
    StoreMismatchError,
    StoreUnavailableError,
    SyncUpscaleRun,
    UpscaleRequest,
    UpscaleRun,
    WebhookReceiver,
    parse_webhook,
)


async def crawl(urls: AsyncIterator[str], out: Path) -> Stats:
    async with AsyncRealESRGAN(
        "key",
        base_url="https://gateway.pixazo.ai",
        timeout=httpx.Timeout(30.0),
        retry=RetryPolicy(max_attempts=3),
        poll=PollPolicy(max_interval=15.0),
        max_connections=16,
    ) as client:
        run: UpscaleRun = client.upscale_many(urls, scale=2, max_in_flight=100, job_timeout=600)
        try:
            async with run:
                async for outcome in run:
                    handle(outcome)
                    if outcome.ok and outcome.result is not None:
                        written: bytes | Path = await client.download(outcome.result, out)
                        del written
        except InsufficientBalanceError as exc:
            print(exc.status_code, exc.message, run.unfinished_request_ids)
        return client.stats()


def handle(outcome: Outcome) -> None:
    index: int = outcome.index
    request: UpscaleRequest | None = outcome.request
    error: BaseException | None = outcome.error
    request_id: str | None = outcome.request_id
    del index, request, error, request_id


async def one(client: AsyncRealESRGAN) -> None:
    job: Job = await client.submit("https://example.com/cat.jpg", scale=4, face_enhance=True)
    job = await client.submit(UpscaleRequest("https://example.com/cat.jpg", scale=3))
    state: JobState = await client.status(job)
    state = await client.status(job.request_id)
    terminal: bool = state.status.is_terminal and state.status is not Status.QUEUED
    try:
        state = await client.wait(job, timeout=60)
    except JobError as exc:
        print(exc.request_id, exc.status, exc.error, exc.charged, terminal)
    state = await client.upscale("https://example.com/cat.jpg", scale=2, timeout=120.0)
    data = await client.download(state)
    ids: tuple[str, ...] = client.unfinished_request_ids
    print(data, ids, client.stats().cost_usd)


async def resumable(client: AsyncRealESRGAN, urls: list[str]) -> None:
    journal = SQLiteJournal("crawl.journal")
    run = client.upscale_many(urls, journal=journal, resubmit_ambiguous=False)
    async for outcome in run:
        resumed: bool = outcome.resumed
        saved: str | None = outcome.saved_to
        if outcome.ok and outcome.result is not None and saved is None:
            path = await client.download(outcome.result, f"out/{outcome.index}.png")
            run.mark_saved(outcome, path)
        del resumed
    journal.close()


async def keyed_folder(client: AsyncRealESRGAN, folder: Path, items: dict[str, str]) -> None:
    def key(index: int, url: str) -> str | None:
        return url if index % 2 else None

    async for outcome in client.upscale_many(list(items.values()), idempotency_key=key):
        handle(outcome)
    sources: list[Path | bytes] = [*sorted(folder.iterdir()), b"\x89PNG\r\n\x1a\n"]
    async with client.upscale_many(sources, scale=2, journal=folder / "j") as run:
        async for outcome in run:
            handle(outcome)
    with RealESRGAN("key") as blocking_client:
        for outcome in blocking_client.upscale_many(
            sorted(folder.glob("*.png")), idempotency_key=lambda index, path: path.name
        ):
            handle(outcome)


def webhooks() -> WebhookReceiver:
    client = AsyncRealESRGAN(
        "key",
        webhook_url="https://app.example/hooks",
        webhook_mode="terminal",
        webhook_confirm=True,
    )
    url: str = client.webhook_callback_url()
    state: JobState = parse_webhook(b'{"request_id": "r", "status": "COMPLETED"}')
    del url, state
    return WebhookReceiver(client)


def blocking(urls: list[str], out: Path) -> Stats:
    with RealESRGAN(
        "key",
        base_url="https://gateway.pixazo.ai",
        poll=PollPolicy(max_interval=15.0),
        backend="trio",
        backend_options={"restrict_keyboard_interrupt_to_checkpoints": False},
    ) as client:
        job: Job = client.submit("https://example.com/cat.jpg", scale=4)
        state: JobState = client.status(job.request_id)
        state = client.wait(job, timeout=60.0)
        state = client.upscale(UpscaleRequest("https://example.com/cat.jpg", scale=2))
        data: bytes = client.download(state)
        path: Path = client.download(state, out)
        request: UpscaleRequest = client.make_request("https://example.com/cat.jpg", scale=2)
        run: SyncUpscaleRun = client.upscale_many(urls, journal=out / "batch.journal")
        with run:
            for outcome in run:
                handle(outcome)
                if outcome.ok and outcome.result is not None:
                    run.mark_saved(outcome, client.download(outcome.result, out))
        paid: tuple[str, ...] = run.unfinished_request_ids
        journal: Journal | None = run.journal
        left: tuple[Outcome, ...] = run.unconsumed_outcomes
        del data, path, request, paid, journal, left
        ids: tuple[str, ...] = client.unfinished_request_ids
        del ids
        return client.stats()


def notebook() -> None:
    client = RealESRGAN().open()
    try:
        for outcome in client.upscale_many(iter(["https://example.com/a.jpg"]), ordered=True):
            handle(outcome)
    except JobsUnfinishedError as exc:
        print(exc.request_ids)
    finally:
        client.close()


async def local_files(folder: Path) -> list[JobState]:
    host: ImageHost = S3ImageHost(
        "my-bucket", "real-esrgan/", endpoint_url="https://s3.example.com", expires=3600.0
    )
    states: list[JobState] = []
    async with AsyncRealESRGAN("key", image_host=host) as client:
        for path in sorted(folder.glob("*.jpg")):
            try:
                states.append(await client.upscale(path, scale=2))
            except ImageHostError as exc:
                print(exc)
        states.append(await client.upscale(b"\x89PNG...", scale=4))
    return states


class MyHost:
    async def publish(self, image: LocalImage, *, valid_for: float) -> PublishedImage:
        return PublishedImage(f"https://cdn.example.com/{image.digest}", image.digest, image)

    async def retract(self, published: PublishedImage) -> None:
        del published


def blocking_local(path: Path) -> JobState:
    with RealESRGAN("key", image_host=MyHost()) as client:
        return client.upscale(path)


async def fleet_worker(item_id: str, image: str) -> JobState:
    store: Store = RedisStore(
        "redis://127.0.0.1:6379/0", prefix="crawler", submit_rate=10.0, submit_burst=20
    )
    async with AsyncRealESRGAN(store=store) as client:
        try:
            job: Job = await client.submit(image, idempotency_key=f"{item_id}:submit")
            del job
            return await client.upscale(image, scale=2, idempotency_key=item_id)
        except (AmbiguousSubmitError, OutputExpiredError, IdempotencyKeyMismatchError):
            raise
        except StoreUnavailableError as exc:
            raise StoreError(str(exc)) from exc


def one_machine(item_id: str) -> JobState:
    with RealESRGAN(store=SQLiteStore("keys.db", lease=60.0)) as client:
        return client.upscale("https://example.com/a.jpg", idempotency_key=item_id)


def refused(exc: StoreMismatchError) -> str:
    return str(exc)
