"""`PollScheduler.request_id_of`: the id behind a live waiter token, None once it left."""

from __future__ import annotations

from real_esrgan_async._scheduler import PollPolicy, PollScheduler


def test_request_id_of_a_live_token_then_none_once_it_left() -> None:
    scheduler = PollScheduler(PollPolicy(), rng=lambda: 0.5)
    first = scheduler.add_waiter("job-1", now=0.0)
    second = scheduler.add_waiter("job-2", now=0.0)
    assert "job-1" == scheduler.request_id_of(first)
    assert "job-2" == scheduler.request_id_of(second)
    assert [first] == scheduler.on_state("job-1", terminal=True, now=1.0)
    assert scheduler.request_id_of(first) is None
    scheduler.remove_waiter(second)
    assert scheduler.request_id_of(second) is None
