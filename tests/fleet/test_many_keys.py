"""`upscale_many(idempotency_key=...)`: one paid job per key, against the emulator and a
real store (SQLite, and the session's Valkey server).

Each client stands for one process: two clients on one store share nothing but
the store. The emulator's own count of created jobs is what was paid.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from keyed_helpers import FAST_POLL, FAST_RETRY, MakeStore, client_for, paid

from real_esrgan_async import (
    AmbiguousSubmitError,
    AsyncRealESRGAN,
    IdempotencyKeyMismatchError,
    InvalidRequestError,
    Outcome,
    RealESRGAN,
    RedisStore,
    SQLiteJournal,
    SQLiteStore,
    UpscaleRequest,
)
from real_esrgan_async.testing import EmulatorConfig, RunningEmulator, running_emulator

pytestmark = pytest.mark.anyio

WORKER = Path(__file__).with_name("many_worker.py")


def jobs_per_image(gateway: RunningEmulator) -> collections.Counter[str]:
    emulator = gateway.emulator
    return collections.Counter(
        job.image for rid in emulator.request_ids() if (job := emulator.job(rid)) is not None
    )


def batch(gateway: RunningEmulator, distinct: int, duplicates: int) -> list[tuple[str, str]]:
    """`distinct` (key, url) items, then `duplicates` of them again (as a queue redelivers)."""
    base = gateway.sample_urls()[0]
    items = [(f"item-{i}", f"{base}?k={i}") for i in range(distinct)]
    return items + [items[i * 3 % distinct] for i in range(duplicates)]


def key_of(items: list[tuple[str, str]]) -> Callable[[int, object], str]:
    return lambda index, _image: items[index][0]


async def collect(
    client: AsyncRealESRGAN, items: list[tuple[str, str]], **options: object
) -> list[Outcome]:
    outcomes = []
    async with client.upscale_many(
        [url for _, url in items],
        scale=2,
        idempotency_key=key_of(items),
        **options,  # type: ignore[arg-type]
    ) as run:
        async for outcome in run:
            outcomes.append(outcome)
    return sorted(outcomes, key=lambda o: o.index)


async def test_duplicate_keys_in_one_run_pay_once_and_share_the_outcome(
    emulator: RunningEmulator, make_store: MakeStore
) -> None:
    """20 inputs, 4 of them keys seen earlier in the run: 16 paid jobs, 20 outcomes."""
    items = batch(emulator, 16, 4)
    async with client_for(emulator, make_store()) as client:
        outcomes = await collect(client, items)
    assert list(range(20)) == [o.index for o in outcomes]
    assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok]
    assert 16 == paid(emulator)
    assert 1 == max(jobs_per_image(emulator).values())
    by_key: dict[str, set[str | None]] = collections.defaultdict(set)
    for outcome in outcomes:
        by_key[items[outcome.index][0]].add(outcome.request_id)
    assert all(1 == len(ids) for ids in by_key.values())


async def test_two_processes_running_overlapping_batches_pay_once_per_key(
    emulator: RunningEmulator, make_store: MakeStore
) -> None:
    items = batch(emulator, 12, 0)
    first, second = items[:8], items[4:]  # keys 4..7 in both
    results: dict[str, list[Outcome]] = {}

    async def worker(name: str, mine: list[tuple[str, str]]) -> None:
        async with client_for(emulator, make_store()) as client:
            results[name] = await collect(client, mine)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(worker, "a", first)
        tasks.start_soon(worker, "b", second)
    assert (8, 8) == (len(results["a"]), len(results["b"]))
    assert all(o.ok for o in [*results["a"], *results["b"]])
    assert 12 == paid(emulator)
    shared_a = {o.request_id for o in results["a"][4:]}
    shared_b = {o.request_id for o in results["b"][:4]}
    assert shared_a == shared_b


async def test_a_rerun_after_an_interrupt_pays_nothing_twice(
    emulator: RunningEmulator, make_store: MakeStore
) -> None:
    """The first run is cancelled with POSTs on the wire; the rerun of the whole batch
    (a new client, as after a restart) pays only for keys never paid."""
    items = batch(emulator, 24, 0)
    async with client_for(emulator, make_store()) as client:
        taken = 0
        with anyio.CancelScope() as scope:
            async with client.upscale_many(
                [url for _, url in items], scale=2, idempotency_key=key_of(items)
            ) as run:
                async for _ in run:
                    taken += 1
                    if taken == 3:
                        scope.cancel()
        paid_before = paid(emulator)
    assert 3 <= paid_before
    async with client_for(emulator, make_store()) as client:
        outcomes = await collect(client, items)
    assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok]
    assert 24 == paid(emulator)
    assert 1 == max(jobs_per_image(emulator).values())
    assert any(o.resumed for o in outcomes)  # answered from the store without a request


async def test_keys_and_a_journal_compose_the_store_deciding_where_the_journal_is_unsure(
    emulator: RunningEmulator, make_store: MakeStore, tmp_path: Path
) -> None:
    """A journal left with PENDING entries (a kill mid-POST) says AMBIGUOUS; with keys the
    store knows better: the rerun waits on the recorded jobs and pays for nothing twice."""
    items = batch(emulator, 10, 2)
    path = tmp_path / "batch.journal"
    async with client_for(emulator, make_store()) as client:
        first = await collect(client, items[:6], journal=path)
    # As if the process had died between the store's record and the journal's:
    with SQLiteJournal(path) as journal:
        journal.record_ambiguous(0, "the process stopped while the submit was in flight")
    async with client_for(emulator, make_store()) as client:
        outcomes = await collect(client, items, journal=path)
    assert all(o.ok for o in [*first, *outcomes]), [o.error for o in outcomes if not o.ok]
    assert 10 == paid(emulator)
    assert first[0].request_id == outcomes[0].request_id
    assert all(o.resumed for o in outcomes[:6])
    with SQLiteJournal(path) as journal:
        counts = journal.counts()
    # The ambiguous entry is settled; a duplicate that asked the store has its own entry, one
    # that followed its twin inside the run has none.
    assert 0 == counts["ambiguous"]
    assert 10 <= counts["completed"] <= 12


async def test_inputs_without_a_key_are_submitted_as_usual(
    emulator: RunningEmulator, make_store: MakeStore
) -> None:
    """A key function returning None leaves that input unkeyed: duplicates then pay twice."""
    url = f"{emulator.sample_urls()[0]}?k=same"
    async with client_for(emulator, make_store()) as client:
        run = client.upscale_many(
            [url, url, url], scale=2, idempotency_key=lambda index, _: None if index else "k"
        )
        outcomes = [o async for o in run]
    assert all(o.ok for o in outcomes)
    assert 3 == paid(emulator)


async def test_one_key_for_two_requests_in_one_run_is_a_mismatch_for_the_second(
    emulator: RunningEmulator, make_store: MakeStore
) -> None:
    base = emulator.sample_urls()[0]
    async with client_for(emulator, make_store()) as client:
        run = client.upscale_many(
            [UpscaleRequest(base, scale=2), UpscaleRequest(base, scale=3)],
            idempotency_key=lambda _index, _image: "one-key",
            ordered=True,
        )
        outcomes = [o async for o in run]
    assert outcomes[0].ok
    assert isinstance(outcomes[1].error, IdempotencyKeyMismatchError)
    assert 1 == paid(emulator)


async def test_keys_without_a_store_are_refused_before_anything_is_paid(
    emulator: RunningEmulator,
) -> None:
    async with client_for(emulator, None) as client:
        with pytest.raises(InvalidRequestError, match="idempotency_key needs a store"):
            client.upscale_many(emulator.sample_urls(), idempotency_key=lambda i, _: str(i))
    assert 0 == paid(emulator)


async def test_a_malformed_derived_key_is_that_inputs_outcome(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    async with client_for(emulator, SQLiteStore(tmp_path / "keys.db")) as client:
        run = client.upscale_many(emulator.sample_urls()[:1], idempotency_key=lambda i, _: "")
        [outcome] = [o async for o in run]
    assert isinstance(outcome.error, InvalidRequestError)
    assert "non-empty str" in str(outcome.error)
    assert 0 == paid(emulator)


def test_the_sync_client_takes_keys_too(emulator: RunningEmulator, tmp_path: Path) -> None:
    items = batch(emulator, 3, 1)
    with (
        RealESRGAN(
            emulator.api_key,
            base_url=emulator.base_url,
            retry=FAST_RETRY,
            poll=FAST_POLL,
            store=SQLiteStore(tmp_path / "keys.db"),
        ) as client,
        client.upscale_many([url for _, url in items], idempotency_key=key_of(items)) as run,
    ):
        outcomes = list(run)
    assert 4 == len(outcomes)
    assert all(o.ok for o in outcomes)
    assert 3 == paid(emulator)


# A real crash: a worker process SIGKILLed mid-run, then the batch run again -------------


def lines(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["redis", "sqlite"])
async def test_a_rerun_after_a_sigkill_pays_nothing_twice(
    anyio_backend: tuple[str, dict[str, object]],
    kind: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """A worker is killed with jobs in flight (and perhaps a POST on the wire); the batch is
    run again: every input gets one outcome, at most one paid job per key, none lost."""
    config = EmulatorConfig(time_scale=0.02, seed=5, error_rate=0.0)
    with running_emulator(config) as gateway:
        items = batch(gateway, 30, 6)
        (tmp_path / "items.json").write_text(json.dumps(items))
        if kind == "redis":
            store_spec = request.getfixturevalue("redis_url")
            prefix = request.getfixturevalue("prefix")
            make: MakeStore = lambda: RedisStore(store_spec, prefix=prefix, lease=1.0)  # noqa: E731
        else:
            store_spec, prefix = str(tmp_path / "keys.db"), ""
            make = lambda: SQLiteStore(store_spec, lease=1.0)  # noqa: E731
        out = tmp_path / "out.jsonl"
        args = [gateway.base_url, gateway.api_key, store_spec, prefix, anyio_backend[0]]
        args += [str(tmp_path / "items.json"), str(out)]
        command = [sys.executable, str(WORKER), *args]
        worker = subprocess.Popen(command, stderr=subprocess.PIPE)  # noqa: ASYNC220 (not awaited)
        with anyio.fail_after(60):
            while len(lines(out)) < 3:
                assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
                await anyio.sleep(0.01)
        os.kill(worker.pid, signal.SIGKILL)
        await anyio.to_thread.run_sync(worker.communicate)
        before = {int(str(line["index"])): line for line in lines(out)}
        async with client_for(gateway, make()) as client:
            outcomes = await collect(client, items)
        per_image = jobs_per_image(gateway)
        total = paid(gateway)
    assert list(range(36)) == [o.index for o in outcomes]
    assert 1 == max(per_image.values())
    assert total == len(per_image) <= 30
    for outcome in outcomes:
        assert outcome.ok or isinstance(outcome.error, AmbiguousSubmitError), outcome.error
        if outcome.index in before and outcome.ok:
            assert before[outcome.index]["request_id"] == outcome.request_id
    completed_keys = {items[o.index][0] for o in outcomes if o.ok}
    assert len(completed_keys) <= total


async def test_the_readme_batch_example_pays_once_per_item_across_reruns(
    emulator: RunningEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The "Batches" example of the README, run as written, twice: one job per item."""
    import re

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("**Batches.**", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None
    namespace: dict[str, object] = {}
    exec(match.group(1), namespace)  # the README's own example
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REAL_ESRGAN_API_KEY", emulator.api_key)
    monkeypatch.setenv("REAL_ESRGAN_BASE_URL", emulator.base_url)
    base = emulator.sample_urls()[0]
    items = {f"item-{i}": f"{base}?k={i}" for i in range(5)}
    upscale_items = namespace["upscale_items"]
    first = await upscale_items(items)  # type: ignore[operator]
    again = await upscale_items(items)  # type: ignore[operator]
    assert all(o.ok for o in [*first, *again])
    assert all(o.resumed for o in again)
    assert 5 == paid(emulator)


async def test_a_duplicate_key_in_flight_follows_its_twin_without_asking_the_store(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    """Inputs pulled while their key's first input is in flight never reach the store: one
    claim per distinct key."""
    claims = 0

    class CountingStore(SQLiteStore):
        def claim(self, key: str, record: str, owner: str, lease: float) -> tuple[bool, str, bool]:
            nonlocal claims
            claims += 1
            return super().claim(key, record, owner, lease)

    base = emulator.sample_urls()[0]
    items = [(f"item-{i % 3}", f"{base}?k={i % 3}") for i in range(9)]
    async with client_for(emulator, CountingStore(tmp_path / "keys.db")) as client:
        outcomes = await collect(client, items)
    assert all(o.ok for o in outcomes)
    assert (3, 3) == (claims, paid(emulator))
    assert 3 == len({o.request_id for o in outcomes})
