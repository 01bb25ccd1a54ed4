"""Waiter tokens: the id behind a live token (None once it left), the tokens of an id."""

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


def test_tokens_of_follows_waiters_joining_and_leaving_one_id() -> None:
    scheduler = PollScheduler(PollPolicy(), rng=lambda: 0.5)
    assert () == scheduler.tokens_of("job-1")
    first = scheduler.add_waiter("job-1", now=0.0)
    assert (first,) == scheduler.tokens_of("job-1")
    second = scheduler.add_waiter("job-1", now=0.0)
    third = scheduler.add_waiter("job-1", now=0.0)
    assert (first, second, third) == scheduler.tokens_of("job-1")
    scheduler.remove_waiter(second)
    assert (first, third) == scheduler.tokens_of("job-1")
    scheduler.remove_waiter(first)
    assert (third,) == scheduler.tokens_of("job-1")
    fourth = scheduler.add_waiter("job-1", now=0.0)
    assert [third, fourth] == scheduler.on_state("job-1", terminal=True, now=1.0)
    assert () == scheduler.tokens_of("job-1")
    assert not scheduler.is_tracked("job-1")


def test_the_last_waiter_leaving_drops_the_id() -> None:
    scheduler = PollScheduler(PollPolicy(), rng=lambda: 0.5)
    only = scheduler.add_waiter("job-1", now=0.0)
    scheduler.remove_waiter(only)
    assert not scheduler.is_tracked("job-1")
    assert [] == scheduler.forget("job-1")
