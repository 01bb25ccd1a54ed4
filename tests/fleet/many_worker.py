"""A worker process that upscales a batch with `upscale_many` and idempotency keys.

Usage: python many_worker.py BASE_URL API_KEY STORE PREFIX BACKEND ITEMS OUT

STORE is a ``redis://`` URL (keys under PREFIX) or the path of an SQLite store.
ITEMS is a JSON list of [key, image URL]; for each outcome the worker appends a
JSON line to OUT, flushed at once (a SIGKILL loses none already written):
``{"index", "key", "request_id", "outcome"}``, where outcome is ``"completed"``
or the error's class name.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio

from real_esrgan_async import (
    AsyncRealESRGAN,
    PollPolicy,
    RedisStore,
    RetryPolicy,
    SQLiteStore,
    Store,
)

#: Short, so that a key whose worker was killed mid-POST turns AMBIGUOUS quickly.
LEASE = 1.0


def store_for(spec: str, prefix: str) -> Store:
    if spec.startswith("redis://"):
        return RedisStore(spec, prefix=prefix, lease=LEASE)
    return SQLiteStore(spec, lease=LEASE)


async def main(argv: list[str]) -> None:
    base_url, api_key, store, prefix, _backend, items_path, out_path = argv
    items = json.loads(Path(items_path).read_text())
    keys = [key for key, _ in items]
    out = Path(out_path).open("a", encoding="utf-8")  # noqa: ASYNC230, SIM115
    client = AsyncRealESRGAN(
        api_key,
        base_url=base_url,
        retry=RetryPolicy(base_delay=0.01, max_delay=0.05),
        poll=PollPolicy(initial_delay=0.02, min_interval=0.005, max_interval=0.05),
        store=store_for(store, prefix),
    )
    async with client:
        run = client.upscale_many(
            [url for _, url in items],
            scale=2,
            max_in_flight=8,
            idempotency_key=lambda index, _url: keys[index],
        )
        async with run:
            async for outcome in run:
                result = "completed" if outcome.ok else type(outcome.error).__name__
                line = {
                    "index": outcome.index,
                    "key": keys[outcome.index],
                    "request_id": outcome.request_id,
                    "outcome": result,
                }
                out.write(json.dumps(line) + "\n")
                out.flush()
    out.close()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1:], backend=sys.argv[5])
