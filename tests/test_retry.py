"""The pure retry and cooldown decisions, checked with plain numbers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from real_esrgan_async import RetryPolicy
from real_esrgan_async._cooldown import Cooldown
from real_esrgan_async._retry import (
    Decision,
    Failure,
    Operation,
    backoff_delay,
    decide,
    parse_retry_after,
)

POLICY = RetryPolicy(max_attempts=4, base_delay=1.0, max_delay=10.0, max_retry_after=60.0)


@pytest.mark.parametrize("failure", [Failure.NO_ANSWER, Failure.SERVER_ERROR])
def test_an_ambiguous_submit_is_never_retried(failure: Failure) -> None:
    """A job may exist: sending the POST again could pay twice."""
    assert Decision(retry=False, ambiguous=True) == decide(
        POLICY, Operation.SUBMIT, failure, attempt=1, rng=0.5
    )


def test_a_submit_that_never_connected_is_retried_with_backoff() -> None:
    assert Decision(retry=True, delay=0.5) == decide(
        POLICY, Operation.SUBMIT, Failure.NOT_SENT, attempt=1, rng=0.5
    )


def test_a_rate_limited_submit_is_retried_and_the_cooldown_does_the_waiting() -> None:
    assert Decision(retry=True, delay=0.0) == decide(
        POLICY, Operation.SUBMIT, Failure.RATE_LIMITED, attempt=0, rate_limited=1, rng=0.5
    )


def test_rate_limited_attempts_have_their_own_budget() -> None:
    policy = RetryPolicy(max_rate_limited=3)
    decisions = [
        decide(policy, Operation.READ, Failure.RATE_LIMITED, attempt=0, rate_limited=n, rng=0.5)
        for n in (1, 2, 3)
    ]
    assert [True, True, False] == [d.retry for d in decisions]


@pytest.mark.parametrize("failure", [Failure.NOT_SENT, Failure.NO_ANSWER, Failure.SERVER_ERROR])
def test_reads_retry_transient_failures_until_the_attempts_run_out(failure: Failure) -> None:
    retries = [
        decide(POLICY, Operation.READ, failure, attempt=n, rng=0.0).retry for n in (1, 2, 3, 4)
    ]
    assert [True, True, True, False] == retries


@pytest.mark.parametrize("operation", list(Operation))
def test_client_errors_are_never_retried(operation: Operation) -> None:
    assert Decision(retry=False) == decide(
        POLICY, operation, Failure.CLIENT_ERROR, attempt=1, rng=0.5
    )


def test_backoff_ceiling_doubles_up_to_the_cap() -> None:
    """With rng at its top, the delay is the ceiling itself: 1, 2, 4, 8, then the 10 s cap."""
    assert [1.0, 2.0, 4.0, 8.0, 10.0, 10.0] == [
        backoff_delay(POLICY, attempt, rng=1.0) for attempt in range(1, 7)
    ]


def test_full_jitter_scales_the_ceiling() -> None:
    assert (0.0, 2.0, 5.0) == (
        backoff_delay(POLICY, 3, rng=0.0),
        backoff_delay(POLICY, 3, rng=0.5),
        backoff_delay(POLICY, 9, rng=0.5),
    )


@given(attempt=st.integers(1, 50), rng=st.floats(0, 1, exclude_max=True))
def test_backoff_never_exceeds_the_cap(attempt: int, rng: float) -> None:
    assert 0 <= backoff_delay(POLICY, attempt, rng) <= POLICY.max_delay


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("7", 7.0),
        ("0.25", 0.25),
        ("-3", 0.0),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),
        ("soon", None),
        ("nan", None),
    ],
)
def test_retry_after_reads_seconds_and_http_dates(
    header: str | None, expected: float | None
) -> None:
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert expected == parse_retry_after(header, now=now)


def test_policy_validation_says_what_is_allowed() -> None:
    with pytest.raises(ValueError, match="max_attempts must be an int >= 1, got 0"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(
        ValueError, match=r"RetryPolicy\.base_delay must be a finite number > 0, got -1"
    ):
        RetryPolicy(base_delay=-1)


def test_cooldown_honours_retry_after_up_to_the_cap() -> None:
    cooldown = Cooldown(POLICY)
    assert 105.0 == cooldown.on_rate_limited(100.0, 5.0)
    assert 3.0 == cooldown.remaining(102.0)
    assert 0.0 == cooldown.remaining(106.0)
    assert 200.0 + 60.0 == Cooldown(POLICY).on_rate_limited(200.0, 3600.0)


def test_cooldown_only_ever_extends() -> None:
    cooldown = Cooldown(POLICY)
    cooldown.on_rate_limited(100.0, 30.0)
    assert 130.0 == cooldown.on_rate_limited(101.0, 1.0)


def test_cooldown_without_retry_after_doubles_per_429_in_a_row_and_resets_on_success() -> None:
    policy = RetryPolicy(default_cooldown=1.0)
    cooldown = Cooldown(policy)
    assert [1.0, 2.0, 4.0] == [cooldown.on_rate_limited(0.0, None) for _ in range(3)]
    cooldown.on_success()
    assert 11.0 == cooldown.on_rate_limited(10.0, None)


def test_a_429_to_a_request_sent_before_the_pause_does_not_extend_it() -> None:
    """The stragglers of a refused burst must not push every window later."""
    cooldown = Cooldown(POLICY)
    assert 105.0 == cooldown.on_rate_limited(100.0, 5.0, sent_at=99.9)
    assert 105.0 == cooldown.on_rate_limited(100.3, 5.0, sent_at=99.95)
    # A request sent after the pause began and refused again does extend it.
    assert 110.5 == cooldown.on_rate_limited(105.5, 5.0, sent_at=105.2)


def test_a_late_429_after_the_pause_ended_starts_a_new_one() -> None:
    cooldown = Cooldown(POLICY)
    cooldown.on_rate_limited(100.0, 5.0, sent_at=99.0)
    assert 112.0 == cooldown.on_rate_limited(107.0, 5.0, sent_at=98.0)
