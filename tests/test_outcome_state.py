"""`Outcome.state`: the COMPLETED state typed as never None, or the outcome's error raised."""

from __future__ import annotations

import pytest

from real_esrgan_async import JobFailedError, JobState, Outcome, Status


def test_an_ok_outcome_gives_its_state() -> None:
    state = JobState("a", Status.COMPLETED)
    assert state == Outcome(0, None, result=state, request_id="a").state


def test_an_outcome_that_is_not_ok_raises_its_error() -> None:
    error = JobFailedError("a", Status.FAILED, "bad input")
    with pytest.raises(JobFailedError) as caught:
        _ = Outcome(0, None, error=error, request_id="a").state
    assert error is caught.value


def test_an_outcome_with_neither_says_so() -> None:
    with pytest.raises(ValueError, match="outcome 3 has neither a result nor an error"):
        _ = Outcome(3, None).state
