"""A crawler that the crash test kills with SIGKILL: `upscale_many(journal=...)` plus downloads.

Not a test module (pytest collects ``test_*.py`` only). Run as::

    python tests/journal_crash_driver.py BASE_URL API_KEY INPUTS_FILE JOURNAL OUT_DIR
        [--backend asyncio|trio] [--max-in-flight N] [--resubmit-ambiguous]

It prints one line per event, flushed, so that the test knows where a kill
landed: ``ready``, ``pull <index>`` (the run takes input <index>: a new one
is submitted at once), ``download <index>``, ``saved <index>``, ``skip
<index>``, ``failed <index> <error type>``, ``done``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio

from real_esrgan_async import AsyncRealESRGAN, PollPolicy


def say(*words: object) -> None:
    print(*words, flush=True)


def pulled(images: list[str]) -> Iterator[str]:
    for index, image in enumerate(images):
        say("pull", index)
        yield image


async def crawl(args: argparse.Namespace) -> None:
    images = Path(args.inputs).read_text().split()
    out = Path(args.out)
    poll = PollPolicy(initial_delay=0.05, min_interval=0.02, max_interval=0.2)
    async with AsyncRealESRGAN(args.api_key, base_url=args.base_url, poll=poll) as client:
        run = client.upscale_many(
            pulled(images),
            scale=4,
            max_in_flight=args.max_in_flight,
            journal=args.journal,
            resubmit_ambiguous=args.resubmit_ambiguous,
        )
        async with run:
            say("ready")
            async for outcome in run:
                if not outcome.ok or outcome.result is None:
                    say("failed", outcome.index, type(outcome.error).__name__)
                    continue
                if outcome.saved_to is not None and Path(outcome.saved_to).is_file():
                    say("skip", outcome.index)  # saved by an earlier run
                    continue
                say("download", outcome.index)
                # Written beside the destination and renamed: never a partial file
                # under the final name, whenever the kill lands.
                path = await client.download(outcome.result, out / f"{outcome.index}.png")
                run.mark_saved(outcome, path)
                say("saved", outcome.index)
    say("done")


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("base_url", "api_key", "inputs", "journal", "out"):
        parser.add_argument(name)
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    parser.add_argument("--max-in-flight", type=int, default=4)
    parser.add_argument("--resubmit-ambiguous", action="store_true")
    args = parser.parse_args()
    anyio.run(crawl, args, backend=args.backend)


if __name__ == "__main__":
    sys.exit(main())
