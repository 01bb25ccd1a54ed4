"""Per-job progress events: emitted by the ledger, once per change, for jobs of ours only."""

from __future__ import annotations

import collections

import pytest

from real_esrgan_async import AsyncRealESRGAN, EventKind, JobEvent, JobState, PollPolicy, Status
from real_esrgan_async._ledger import Ledger
from real_esrgan_async.testing import EmulatorConfig, running_emulator

EMULATOR_POLL = PollPolicy(initial_delay=0.002, min_interval=0.001, max_interval=0.01)


class Clock:
    """A fake clock: each reading is one second later."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def ledger_with_events() -> tuple[Ledger, list[JobEvent]]:
    events: list[JobEvent] = []
    return Ledger(on_event=events.append, clock=Clock()), events


def test_a_job_is_submitted_seen_processing_once_and_finished_once() -> None:
    ledger, events = ledger_with_events()
    ledger.record_submitted("a", webhook=False)
    for status in (Status.QUEUED, Status.PROCESSING, Status.PROCESSING):
        ledger.record_state(JobState("a", status))
    finished = JobState("a", Status.FAILED, error="bad input")
    ledger.record_state(finished)  # terminal states are the poller's `on_terminal`'s
    ledger.record_terminal(finished)
    ledger.record_terminal(finished)  # seen again (a duplicate callback): no news
    assert [
        JobEvent("a", EventKind.SUBMITTED, Status.QUEUED, 1.0),
        JobEvent("a", EventKind.STATUS, Status.PROCESSING, 2.0),
        JobEvent("a", EventKind.FINISHED, Status.FAILED, 3.0, error="bad input"),
    ] == events


def test_jobs_that_are_not_ours_make_no_events() -> None:
    ledger, events = ledger_with_events()
    ledger.record_state(JobState("stranger", Status.PROCESSING))
    ledger.record_terminal(JobState("stranger", Status.COMPLETED))
    assert [] == events


def test_a_resubmission_names_the_job_it_replaces() -> None:
    ledger, events = ledger_with_events()
    ledger.record_resubmitted("old", "new")
    assert [JobEvent("new", EventKind.RESUBMITTED, Status.QUEUED, 1.0, "old")] == events
    assert 1 == ledger.stats().resubmitted


def test_an_adopted_job_reports_its_changes_too() -> None:
    ledger, events = ledger_with_events()
    ledger.adopt("a")  # a job of an earlier run, polled again
    ledger.record_state(JobState("a", Status.PROCESSING))
    assert [JobEvent("a", EventKind.STATUS, Status.PROCESSING, 1.0)] == events


@pytest.mark.anyio
async def test_each_emulator_job_is_submitted_then_finished_once_in_order() -> None:
    events: list[JobEvent] = []
    config = EmulatorConfig(time_scale=0.001, seed=3, fetch_inputs=False, error_rate=0.0)
    with running_emulator(config) as emulator:
        images = [f"{emulator.base_url}/samples/cat.png?n={n}" for n in range(20)]
        async with AsyncRealESRGAN(
            emulator.api_key, base_url=emulator.base_url, poll=EMULATOR_POLL, on_event=events.append
        ) as client:
            outcomes = [o async for o in client.upscale_many(images)]
    per_job: dict[str, list[EventKind]] = collections.defaultdict(list)
    for event in events:
        per_job[event.request_id].append(event.kind)
    assert {o.request_id for o in outcomes} == set(per_job)
    for kinds in per_job.values():
        assert (EventKind.SUBMITTED, EventKind.FINISHED) == (kinds[0], kinds[-1])
        assert 1 == kinds.count(EventKind.FINISHED)
    assert sorted(e.at for e in events) == [e.at for e in events]
