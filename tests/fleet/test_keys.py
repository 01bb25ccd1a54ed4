"""The pure rules of keyed idempotency and of the fleet's token bucket, with plain numbers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from real_esrgan_async import IdempotencyKeyMismatchError, JobState, JournalState, Status
from real_esrgan_async import UpscaleRequest as Req
from real_esrgan_async._exceptions import KeyFormatError
from real_esrgan_async._keys import (
    Bucket,
    KeyRecord,
    Step,
    cooldown_until,
    decide,
    take_token,
)

REQ = Req("https://example.com/a.jpg", scale=2)


def record(state: JournalState, **kwargs: object) -> KeyRecord:
    return KeyRecord(key="k", request=REQ, state=state, owner="o", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("state", "lease_alive", "expected"),
    [
        (JournalState.SUBMITTED, False, Step.WAIT),
        (JournalState.PENDING, True, Step.WAIT_PENDING),
        (JournalState.PENDING, False, Step.LAPSED),
        (JournalState.AMBIGUOUS, True, Step.AMBIGUOUS),
        (JournalState.FAILED, False, Step.RESULT),
        (JournalState.ERROR, False, Step.RESULT),
    ],
)
def test_a_key_found_in_a_state_leads_to_one_step(
    state: JournalState, lease_alive: bool, expected: Step
) -> None:
    """Nobody POSTs a key they did not claim: they wait, replay, or refuse."""
    found = record(state, request_id="r1", finished_at=0.0)
    assert expected == decide(found, claimed=False, request=REQ, lease_alive=lease_alive, now=1.0)


def test_only_the_claimant_posts() -> None:
    assert Step.POST == decide(
        record(JournalState.PENDING), claimed=True, request=REQ, lease_alive=True, now=0.0
    )


def test_a_completed_key_expires_with_its_output_urls() -> None:
    """Within the lifetime the result is handed over; after it, a clear EXPIRED."""
    done = record(JournalState.COMPLETED, request_id="r", finished_at=100.0)
    fresh = decide(done, claimed=False, request=REQ, lease_alive=False, now=100.0 + 3599)
    stale = decide(done, claimed=False, request=REQ, lease_alive=False, now=100.0 + 3600)
    assert (Step.RESULT, Step.EXPIRED) == (fresh, stale)


def test_a_failed_key_never_expires() -> None:
    """A FAILED job has no output to expire: its error is replayed forever."""
    failed = record(JournalState.FAILED, request_id="r", finished_at=0.0)
    assert Step.RESULT == decide(failed, claimed=False, request=REQ, lease_alive=False, now=1e9)


def test_a_key_reused_for_another_request_is_refused_naming_both() -> None:
    other = Req("https://example.com/a.jpg", scale=4)
    with pytest.raises(IdempotencyKeyMismatchError) as caught:
        decide(
            record(JournalState.SUBMITTED), claimed=False, request=other, lease_alive=False, now=0
        )
    assert ("k", True, True) == (
        caught.value.key,
        "scale 2" in str(caught.value),
        "scale 4" in str(caught.value),
    )


def test_a_record_reads_back_equal() -> None:
    state = JobState("r9", Status.COMPLETED, media_urls=("https://cdn.example/o.png",))
    rec = record(JournalState.PENDING).submitted("r9").finished(state, 12.5)
    assert rec == KeyRecord.loads(rec.dumps())


def test_a_record_of_another_format_is_refused() -> None:
    text = record(JournalState.PENDING).dumps().replace('"format":1', '"format":2')
    with pytest.raises(KeyFormatError, match="format 2"):
        KeyRecord.loads(text)


def test_a_full_bucket_gives_its_burst_then_asks_to_wait() -> None:
    """Burst 3 at rate 2/s: three tokens at once, then the fourth waits 0.5 s."""
    bucket = None
    waits = []
    for _ in range(4):
        take = take_token(bucket, now=10.0, rate=2.0, burst=3.0)
        bucket = take.bucket
        waits.append(take.wait)
    assert [0.0, 0.0, 0.0, 0.5] == waits


def test_a_bucket_refills_at_its_rate() -> None:
    empty = Bucket(tokens=0.0, at=10.0)
    assert 0.0 == take_token(empty, now=10.5, rate=2.0, burst=3.0).wait
    # 0.375 s refills 0.75 token: the missing 0.25 takes 0.125 s more.
    assert pytest.approx(0.125) == take_token(empty, now=10.375, rate=2.0, burst=3.0).wait


@given(
    steps=st.lists(st.floats(min_value=0.0, max_value=5.0), min_size=1, max_size=60),
    rate=st.floats(min_value=0.1, max_value=100.0),
    burst=st.integers(min_value=1, max_value=20),
)
def test_a_bucket_never_grants_more_than_burst_plus_rate_times_elapsed(
    steps: list[float], rate: float, burst: int
) -> None:
    """The budget holds over any sequence of requests: granted <= burst + rate * elapsed."""
    bucket = None
    now = 0.0
    granted = 0
    for step in steps:
        now += step
        take = take_token(bucket, now=now, rate=rate, burst=float(burst))
        bucket = take.bucket
        granted += take.wait == 0.0
        assert 0.0 <= bucket.tokens <= burst
    assert granted <= burst + rate * now + 1e-9


def test_the_fleet_pause_only_extends() -> None:
    assert 15.0 == cooldown_until(None, now=10.0, retry_after=5.0)
    assert 30.0 == cooldown_until(30.0, now=10.0, retry_after=5.0)
    assert 40.0 == cooldown_until(30.0, now=10.0, retry_after=30.0)
