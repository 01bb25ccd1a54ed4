"""One worker process of the fleet tests: upscale its items by idempotency key, report each.

Usage: python fleet_worker.py BASE_URL API_KEY REDIS_URL PREFIX BACKEND ITEMS OUT

ITEMS is a JSON list of [key, image URL]; for each one the worker appends a
JSON line to OUT, flushed at once (a SIGKILL loses none already written):
``{"key", "request_id", "outcome"}``, where outcome is ``"completed"``,
``"ambiguous"`` or the error's class name.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio

from real_esrgan_async import (
    AmbiguousSubmitError,
    AsyncRealESRGAN,
    PollPolicy,
    RealESRGANError,
    RedisStore,
    RetryPolicy,
)

CONCURRENCY = 4
#: Short, so that a key whose worker was killed mid-POST turns AMBIGUOUS quickly.
LEASE = 1.0


async def main(argv: list[str]) -> None:
    base_url, api_key, redis_url, prefix, _backend, items_path, out_path = argv
    items = json.loads(Path(items_path).read_text())
    # Opened for the whole run and flushed per line: a SIGKILL loses no written outcome.
    out = Path(out_path).open("a", encoding="utf-8")  # noqa: ASYNC230, SIM115
    limiter = anyio.Semaphore(CONCURRENCY)
    client = AsyncRealESRGAN(
        api_key,
        base_url=base_url,
        retry=RetryPolicy(base_delay=0.01, max_delay=0.05),
        poll=PollPolicy(initial_delay=0.02, min_interval=0.005, max_interval=0.05),
        store=RedisStore(redis_url, prefix=prefix, lease=LEASE),
    )

    async def one(key: str, image: str) -> None:
        async with limiter:
            request_id = None
            try:
                state = await client.upscale(image, scale=2, idempotency_key=key)
                request_id, outcome = state.request_id, "completed"
            except AmbiguousSubmitError:
                outcome = "ambiguous"
            except RealESRGANError as exc:
                request_id = getattr(exc, "request_id", None)
                outcome = type(exc).__name__
            line = {"key": key, "request_id": request_id, "outcome": outcome}
            out.write(json.dumps(line) + "\n")
            out.flush()

    async with client, anyio.create_task_group() as tasks:
        for key, image in items:
            tasks.start_soon(one, key, image)
    out.close()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1:], backend=sys.argv[5])
