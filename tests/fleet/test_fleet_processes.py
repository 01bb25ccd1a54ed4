"""Four worker processes, one emulator, one Valkey: at most one paid job per key.

The inputs overlap (20% of the items are keys another worker also has, as a
queue redelivers them) and one worker is SIGKILLed mid-run, then started again
on its whole list (the queue redelivers everything it had not acknowledged).
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from real_esrgan_async.testing import EmulatorConfig, running_emulator

WORKER = Path(__file__).with_name("fleet_worker.py")
WORKERS = 4
DISTINCT = 40
DUPLICATES = 10  # 20% of the 50 items are keys another worker also has


def items_per_worker(base: str) -> list[list[tuple[str, str]]]:
    """Forty distinct keys dealt round-robin, plus ten dealt again to another worker."""
    keys = [(f"item-{i}", f"{base}?k={i}") for i in range(DISTINCT)]
    lists: list[list[tuple[str, str]]] = [[] for _ in range(WORKERS)]
    for i, item in enumerate(keys):
        lists[i % WORKERS].append(item)
    for i in range(DUPLICATES):
        lists[(i + 1) % WORKERS].append(keys[i * 4 % DISTINCT])  # never the key's own worker
    return lists


def start(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(WORKER), *args], stderr=subprocess.PIPE)


def lines(path: Path) -> list[dict[str, str | None]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_four_workers_with_one_killed_pay_once_per_key(
    backend: str, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    config = EmulatorConfig(time_scale=0.02, seed=3, error_rate=0.0)
    with running_emulator(config) as gateway:
        base = gateway.sample_urls()[0]
        lists = items_per_worker(base)
        args = []
        for n, items in enumerate(lists):
            (tmp_path / f"items-{n}.json").write_text(json.dumps(items))
            args.append(
                [
                    gateway.base_url,
                    gateway.api_key,
                    redis_url,
                    prefix,
                    backend,
                    str(tmp_path / f"items-{n}.json"),
                    str(tmp_path / f"out-{n}.jsonl"),
                ]
            )
        workers = [start(a) for a in args]
        # Kill worker 0 once it has handed over a few results: mid-run, jobs in flight.
        deadline = time.monotonic() + 60
        while len(lines(tmp_path / "out-0.jsonl")) < 3 and time.monotonic() < deadline:
            assert workers[0].poll() is None, workers[0].stderr.read() if workers[0].stderr else ""
            time.sleep(0.01)
        os.kill(workers[0].pid, signal.SIGKILL)
        workers[0].communicate()  # reaps it and closes its pipe
        reported_before_kill = len(lines(tmp_path / "out-0.jsonl"))
        workers[0] = start(args[0])  # the queue redelivers its whole list
        for worker in workers:
            _, err = worker.communicate(timeout=150)
            assert 0 == worker.returncode, err.decode()[-2000:]
        emulator = gateway.emulator
        jobs_per_image = collections.Counter(
            job.image for rid in emulator.request_ids() if (job := emulator.job(rid)) is not None
        )
        paid = emulator.stats().jobs_created

    outcomes: dict[str, list[dict[str, str | None]]] = collections.defaultdict(list)
    for n in range(WORKERS):
        for line in lines(tmp_path / f"out-{n}.jsonl"):
            outcomes[str(line["key"])].append(line)

    # Every key has an outcome; every item of a live worker got exactly one.
    assert DISTINCT == len(outcomes)
    handed = sum(len(v) for v in outcomes.values())
    assert len(lists[0]) + sum(len(items) for items in lists[1:]) + reported_before_kill == handed
    # At most one paid job per key (per input image), never more, whoever asked.
    assert 1 == max(jobs_per_image.values())
    assert paid == len(jobs_per_image)
    assert paid <= DISTINCT
    # All callers of a key saw the same job; a key is only ever ambiguous or one id.
    for key, seen in outcomes.items():
        ids = {line["request_id"] for line in seen if line["outcome"] == "completed"}
        assert len(ids) <= 1, (key, seen)
        assert {line["outcome"] for line in seen} <= {"completed", "ambiguous"}, (key, seen)
    # A key not ambiguous ended COMPLETED with a paid job: nothing lost.
    completed = {key for key, seen in outcomes.items() if seen[0]["outcome"] == "completed"}
    ambiguous = set(outcomes) - completed
    assert paid >= len(completed)
    assert paid <= len(completed) + len(ambiguous)
