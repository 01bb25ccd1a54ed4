"""The poll scheduler, with plain numbers: the clock is a float, randomness a lambda."""

from __future__ import annotations

import heapq
import math
import random
import tracemalloc
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from real_esrgan_async._scheduler import PollPolicy, PollScheduler

#: The schedule without a latency target (``target_delay=None``): initial delay, learned
#: quantiles, backoff. Most tests of this file specify it; tests/test_scheduler_target.py
#: specifies the target schedule, the default.
LEGACY = PollPolicy(target_delay=None)


def middle() -> float:
    """An rng whose jitter factor is exactly 1."""
    return 0.5


def check_and_answer(s: PollScheduler, now: float, *, terminal: bool = False) -> list[str]:
    """Run due(now) and feed a non-terminal (or terminal) answer for each id it hands out."""
    ids = s.due(now)
    for request_id in ids:
        s.on_state(request_id, terminal=terminal, now=now)
    return ids


def teach(s: PollScheduler, durations: list[float], *, now: float) -> None:
    """Make `s` learn `durations` exactly: jobs submitted d ago, seen running and done at `now`."""
    for i, d in enumerate(durations):
        request_id = f"teacher-{now}-{i}"
        s.add_waiter(request_id, now=now, submitted_at=now - d)
        s.on_state(request_id, terminal=False, now=now)
        s.on_state(request_id, terminal=True, now=now)


def check_times(s: PollScheduler, request_id: str, until: float) -> list[float]:
    """Follow next_wakeup(), answering "still running", and list when `request_id` is checked."""
    times: list[float] = []
    now = 0.0
    while (wakeup := s.next_wakeup(now)) is not None and wakeup <= until:
        now = wakeup
        if request_id in check_and_answer(s, now):
            times.append(now)
    return times


# -- the schedule of one id ---------------------------------------------------------------


def test_before_learning_the_first_check_comes_after_initial_delay_then_gaps_grow_to_the_cap() -> (
    None
):
    s = PollScheduler(LEGACY, rng=middle)
    s.add_waiter("a", now=0.0)

    # gaps 1, 1.6, 2.56, 4.096, 6.5536, then 10.48576 capped to max_interval 10
    expected = [1.0, 2.6, 5.16, 9.256, 15.8096, 25.8096, 35.8096]
    assert pytest.approx(expected) == check_times(s, "a", until=40.0)


def test_jitter_scales_each_delay_within_plus_or_minus_jitter() -> None:
    low = PollScheduler(PollPolicy(target_delay=None, jitter=0.2), rng=lambda: 0.0)
    high = PollScheduler(PollPolicy(target_delay=None, jitter=0.2), rng=lambda: 0.999999)
    low.add_waiter("a", now=100.0)
    high.add_waiter("a", now=100.0)

    assert pytest.approx(100.8) == low.next_wakeup(100.0)
    assert pytest.approx(101.2, abs=1e-5) == high.next_wakeup(100.0)


def test_delays_are_clamped_to_min_interval_and_the_first_check_to_max_first_check() -> None:
    early = PollScheduler(
        PollPolicy(target_delay=None, initial_delay=0.01, min_interval=0.5), rng=middle
    )
    late = PollScheduler(
        PollPolicy(target_delay=None, initial_delay=100.0, max_interval=100.0), rng=middle
    )
    early.add_waiter("a", now=0.0)
    late.add_waiter("a", now=0.0)

    assert 0.5 == early.next_wakeup(0.0)
    assert 60.0 == late.next_wakeup(0.0)


def test_learned_first_and_second_checks_land_at_the_quantiles_then_gaps_grow() -> None:
    s = PollScheduler(PollPolicy(target_delay=None, first_check_quantile=0.8), rng=middle)
    teach(s, [1.0, 2, 3, 4, 5, 6, 7, 8, 9, 10], now=0.0)
    assert (8.0, 10.0) == s.learned_quantiles  # nearest rank: the 8th and 10th of 10

    s.add_waiter("a", now=100.0)

    # q80 = 8, q97 = 10, then gaps (10 - 8) * 1.6, * 1.6 again, ...
    assert pytest.approx([108.0, 110.0, 113.2, 118.32]) == check_times(s, "a", until=120.0)


def test_a_second_quantile_too_close_to_the_first_falls_back_to_the_backoff_gap() -> None:
    s = PollScheduler(LEGACY, rng=middle)
    teach(s, [5.0] * 8, now=0.0)
    s.add_waiter("a", now=10.0)

    # q97 = q80 = 15: the gap starts at max(q97 - q80, min_interval) = 0.25
    assert pytest.approx([15.0, 15.25, 15.65]) == check_times(s, "a", until=16.0)


def test_with_no_min_interval_a_zero_quantile_spread_backs_off_from_initial_delay() -> None:
    s = PollScheduler(PollPolicy(target_delay=None, min_interval=0.0, min_samples=1), rng=middle)
    teach(s, [5.0], now=0.0)
    s.add_waiter("a", now=10.0)

    # q97 = q80: no second check at the same instant, and no gap of zero either
    assert pytest.approx([15.0, 16.0, 17.6]) == check_times(s, "a", until=18.0)


def test_an_id_scheduled_before_learning_is_rescheduled_with_the_learned_quantiles() -> None:
    s = PollScheduler(PollPolicy(target_delay=None, first_check_quantile=0.8), rng=middle)
    s.add_waiter("early", now=0.0)
    teach(s, [1.0, 2, 3, 4, 5, 6, 7, 8, 9, 10], now=0.5)

    assert [] == s.due(1.0)  # was due at initial_delay; now waits for q80
    assert 8.0 == s.next_wakeup(1.0)
    assert ["early"] == s.due(8.0)


# -- learning -----------------------------------------------------------------------------


def test_duration_is_the_midpoint_between_last_seen_running_and_seen_done() -> None:
    s = PollScheduler(PollPolicy(target_delay=None, min_samples=1), rng=middle)
    s.add_waiter("a", now=0.0)
    s.on_state("a", terminal=False, now=4.0)
    s.on_state("a", terminal=True, now=6.0)

    assert (5.0, 5.0) == s.learned_quantiles


def test_a_job_never_seen_running_counts_from_its_submission() -> None:
    s = PollScheduler(PollPolicy(target_delay=None, min_samples=1), rng=middle)
    s.add_waiter("a", now=10.0, submitted_at=2.0)
    s.on_state("a", terminal=True, now=12.0)  # e.g. a webhook: no check was needed

    assert (5.0, 5.0) == s.learned_quantiles


def test_quantiles_are_unknown_until_min_samples_and_forget_beyond_learn_window() -> None:
    policy = PollPolicy(target_delay=None, min_samples=2, learn_window=2, first_check_quantile=0.5)
    s = PollScheduler(policy, rng=middle)
    teach(s, [1.0], now=0.0)
    assert None is s.learned_quantiles

    teach(s, [2.0, 3.0], now=0.0)  # 1.0 leaves the window

    assert (2.0, 3.0) == s.learned_quantiles


@pytest.mark.parametrize("policy", [LEGACY, PollPolicy()], ids=["legacy", "target"])
def test_an_adopted_id_is_checked_at_once_and_never_learned_from(policy: PollPolicy) -> None:
    """A job another worker (or an earlier run) submitted may be long finished: checking it
    after a fresh job's first delay would make its caller wait for nothing. Its age is
    unknown here, so its end teaches the scheduler nothing either."""
    s = PollScheduler(policy, rng=middle)
    before = s.learned_quantiles
    s.add_waiter("fresh", now=100.0)
    [token] = [s.add_waiter("adopted", now=100.0, adopted=True)]

    assert ["adopted"] == s.due(100.0)  # the fresh one is not due yet
    assert [token] == s.on_state("adopted", terminal=True, now=100.0, duration=0.5)
    assert before == s.learned_quantiles


def test_an_adopted_id_still_running_is_planned_from_that_first_answer() -> None:
    s = PollScheduler(LEGACY, rng=middle)
    s.add_waiter("adopted", now=0.0, adopted=True)
    assert ["adopted"] == check_and_answer(s, 0.0)

    assert s.next_wakeup(0.0) == pytest.approx(LEGACY.initial_delay)


# -- waiters ------------------------------------------------------------------------------


def test_two_waiters_on_one_id_share_one_check_and_one_terminal_state_resolves_both() -> None:
    s = PollScheduler(LEGACY, rng=middle)
    first = s.add_waiter("a", now=0.0)
    second = s.add_waiter("a", now=0.5)

    assert (1, 2) == (s.in_flight, s.waiting)
    assert ["a"] == s.due(1.0)
    assert [first, second] == s.on_state("a", terminal=True, now=1.0)
    assert (0, 0, 1) == (s.in_flight, s.waiting, s.checks_scheduled)


def test_a_terminal_state_from_elsewhere_resolves_without_any_check() -> None:
    s = PollScheduler(LEGACY, rng=middle)
    token = s.add_waiter("a", now=0.0)

    assert [token] == s.on_state("a", terminal=True, now=0.5)
    assert [] == s.due(100.0)
    assert None is s.next_wakeup(100.0)
    assert 0 == s.checks_scheduled


def test_late_and_duplicate_results_are_ignored() -> None:
    s = PollScheduler(LEGACY, rng=middle)
    token = s.add_waiter("a", now=0.0)
    s.due(1.0)

    assert [token] == s.on_state("a", terminal=True, now=1.1)
    assert [] == s.on_state("a", terminal=True, now=1.2)
    assert [] == s.on_state("a", terminal=False, now=1.3)
    assert [] == s.on_state("never-seen", terminal=True, now=1.4)
    s.on_check_failed("a", now=1.5)
    assert (0, 0, None) == (s.in_flight, s.waiting, s.next_wakeup(2.0))


def test_a_running_state_from_elsewhere_ends_a_check_in_progress_and_reschedules() -> None:
    s = PollScheduler(LEGACY, rng=middle)
    s.add_waiter("a", now=0.0)
    assert ["a"] == s.due(1.0)
    assert None is s.next_wakeup(1.0)  # nothing to do until the check is answered

    s.on_state("a", terminal=False, now=1.2)  # a webhook, before the check's own answer
    assert 2.6 == s.next_wakeup(1.2)
    s.on_state("a", terminal=False, now=1.3)  # the check's answer: now a duplicate
    assert 2.6 == s.next_wakeup(1.3)


def test_a_running_state_from_elsewhere_defers_an_imminent_check_by_min_interval() -> None:
    s = PollScheduler(LEGACY, rng=middle)
    s.add_waiter("a", now=0.0)

    s.on_state("a", terminal=False, now=0.9)

    assert pytest.approx(1.15) == s.next_wakeup(0.9)


def test_removing_the_last_waiter_drops_the_id_and_removal_is_idempotent() -> None:
    s = PollScheduler(LEGACY, rng=middle)
    first = s.add_waiter("a", now=0.0)
    second = s.add_waiter("a", now=0.0)

    s.remove_waiter(first)
    assert (1, 1) == (s.in_flight, s.waiting)
    s.remove_waiter(second)
    s.remove_waiter(second)
    assert (0, 0) == (s.in_flight, s.waiting)
    assert [] == s.due(10.0)
    assert [] == s.on_state("a", terminal=True, now=10.0)


def test_forget_returns_the_waiters_of_an_id_and_stops_its_checks() -> None:
    s = PollScheduler(LEGACY, rng=middle)
    tokens = [s.add_waiter("a", now=0.0), s.add_waiter("a", now=0.0)]
    s.add_waiter("b", now=0.0)

    assert tokens == s.forget("a")
    assert [] == s.forget("a")
    assert ["b"] == s.due(1.0)


def test_expired_returns_waiters_whose_deadline_passed_and_drops_ids_left_alone() -> None:
    s = PollScheduler(LEGACY, rng=middle)
    patient = s.add_waiter("a", now=0.0, deadline=50.0)
    hasty = s.add_waiter("a", now=0.0, deadline=0.5)
    alone = s.add_waiter("b", now=0.0, deadline=0.7)

    assert 0.5 == s.next_wakeup(0.0)
    assert [] == s.expired(0.4)
    assert [(hasty, "a"), (alone, "b")] == s.expired(0.7)
    assert [] == s.expired(0.8)
    assert ["a"] == s.due(1.0)
    assert [patient] == s.on_state("a", terminal=True, now=1.0)


# -- failures, pauses and the budget ------------------------------------------------------


def test_a_failed_check_is_retried_after_the_backoff_gap_from_the_failure() -> None:
    s = PollScheduler(LEGACY, rng=middle)
    s.add_waiter("a", now=0.0)
    s.due(1.0)

    s.on_check_failed("a", now=3.0)  # e.g. a 2 s timeout
    assert pytest.approx(4.6) == s.next_wakeup(3.0)
    assert ["a"] == s.due(4.6)
    s.on_check_failed("a", now=4.6)
    assert pytest.approx(7.16) == s.next_wakeup(4.6)


def test_a_failed_check_is_not_retried_sooner_than_min_interval() -> None:
    s = PollScheduler(PollPolicy(target_delay=None, initial_delay=0.01, backoff=1.0), rng=middle)
    s.add_waiter("a", now=0.0)
    assert ["a"] == s.due(0.25)

    s.on_check_failed("a", now=0.25)

    assert 0.5 == s.next_wakeup(0.25)


def test_pause_blocks_due_and_moves_next_wakeup_and_never_shortens() -> None:
    s = PollScheduler(LEGACY, rng=middle)
    s.add_waiter("a", now=0.0)

    s.pause_until(30.0)
    s.pause_until(20.0)  # earlier: changes nothing

    assert [] == s.due(29.9)
    assert 30.0 == s.next_wakeup(5.0)
    assert ["a"] == s.due(30.0)


def test_pause_does_not_hold_back_deadlines() -> None:
    s = PollScheduler(LEGACY, rng=middle)
    token = s.add_waiter("a", now=0.0, deadline=5.0)
    s.pause_until(30.0)

    assert 5.0 == s.next_wakeup(0.0)
    assert [(token, "a")] == s.expired(5.0)


def test_the_budget_hands_out_at_most_burst_at_once_then_refills_at_the_rate() -> None:
    s = PollScheduler(LEGACY, rng=middle)  # 50 checks/s, burst 50
    for i in range(1000):
        s.add_waiter(f"id{i}", now=0.0)

    assert 50 == len(s.due(1.0))
    assert [] == s.due(1.0)
    assert pytest.approx(1.02) == s.next_wakeup(1.0)
    assert 1 == len(s.due(1.02))
    assert 25 == len(s.due(1.52))
    assert 50 == len(s.due(100.0))  # a long idle spell refills only up to burst
    assert 126 == s.checks_scheduled


def test_ids_come_out_of_due_in_due_order() -> None:
    s = PollScheduler(LEGACY, rng=middle)
    for request_id, submitted_at in [("c", 3.0), ("a", 1.0), ("b", 2.0)]:
        s.add_waiter(request_id, now=3.0, submitted_at=submitted_at)

    assert ["a", "b", "c"] == s.due(10.0)


def test_next_wakeup_is_none_when_nothing_is_tracked_and_never_in_the_past() -> None:
    s = PollScheduler(LEGACY, rng=middle)
    assert None is s.next_wakeup(0.0)

    s.add_waiter("a", now=0.0)

    assert 5.0 == s.next_wakeup(5.0)


# -- policy validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "error", "allowed"),
    [
        ("jitter", 1.5, ValueError, "a finite number in [0, 1)"),
        ("initial_delay", 0, ValueError, "a finite number > 0"),
        ("min_interval", math.nan, ValueError, "a finite number >= 0"),
        ("max_interval", 0.1, ValueError, "a finite number > 0 and >= min_interval"),
        ("max_first_check", math.inf, ValueError, "a finite number > 0 and >= min_interval"),
        ("backoff", 0.5, ValueError, "a finite number >= 1"),
        ("first_check_quantile", 0, ValueError, "a finite number in (0, 1]"),
        ("second_check_quantile", 0.5, ValueError, "a finite number in [first_check_quantile, 1]"),
        ("min_samples", True, TypeError, "an int >= 1"),
        ("learn_window", 4, ValueError, "an int >= min_samples"),
        ("burst", 1.5, TypeError, "an int >= 1"),
        ("max_checks_per_second", "50", TypeError, "None or a finite number > 0"),
        ("max_checks_per_second", 0, ValueError, "None or a finite number > 0"),
        ("safety_net_interval", 0.1, ValueError, "a finite number > 0 and >= min_interval"),
        ("safety_net_factor", 0.5, ValueError, "a finite number >= 1"),
    ],
)
def test_policy_rejects_bad_knobs_naming_the_field_the_value_and_what_is_allowed(
    name: str, value: object, error: type[Exception], allowed: str
) -> None:
    with pytest.raises(error) as info:
        PollPolicy(**{name: value})  # type: ignore[arg-type]

    assert f"PollPolicy.{name} must be {allowed}, got {value!r}" == str(info.value)


def test_policy_accepts_no_budget_and_ints_for_seconds() -> None:
    policy = PollPolicy(max_checks_per_second=None, initial_delay=2, max_interval=5)

    assert (None, 2, 5) == (policy.max_checks_per_second, policy.initial_delay, policy.max_interval)


# -- the safety net (jobs that report by webhook) -------------------------------------------

SAFETY = PollPolicy(target_delay=None, jitter=0.0, safety_net_interval=60.0, safety_net_factor=2.0)


def test_on_the_safety_net_before_learning_checks_come_every_interval_from_submission() -> None:
    s = PollScheduler(SAFETY, rng=middle)
    s.add_waiter("a", now=5.0, safety_net=True)

    assert [65.0, 125.0, 185.0] == check_times(s, "a", until=200.0)


def test_on_the_safety_net_the_first_check_comes_at_the_second_quantile_times_the_factor() -> None:
    s = PollScheduler(SAFETY, rng=middle)
    teach(s, [10.0] * 8, now=0.0)
    s.add_waiter("a", now=100.0, safety_net=True)

    # q97 = 10: first at 100 + 2 * 10, then every 60 s
    assert [120.0, 180.0, 240.0] == check_times(s, "a", until=250.0)


def test_on_the_safety_net_the_first_check_is_never_later_than_the_interval() -> None:
    s = PollScheduler(SAFETY, rng=middle)
    teach(s, [50.0] * 8, now=0.0)
    s.add_waiter("a", now=100.0, safety_net=True)

    assert [160.0, 220.0] == check_times(s, "a", until=230.0)


def test_an_id_put_on_the_safety_net_before_learning_keeps_its_planned_check() -> None:
    """Learning does not scan the heap: it is found at the interval, not at 2 * q97."""
    s = PollScheduler(SAFETY, rng=middle)
    s.add_waiter("a", now=0.0, safety_net=True)
    teach(s, [5.0] * 8, now=1.0)

    assert [60.0, 120.0] == check_times(s, "a", until=130.0)


def test_a_terminal_callback_resolves_a_safety_net_job_with_no_check_at_all() -> None:
    s = PollScheduler(SAFETY, rng=middle)
    token = s.add_waiter("a", now=0.0, safety_net=True)

    assert [token] == s.on_state("a", terminal=True, now=12.0)
    assert (0, 0, None) == (s.checks_scheduled, s.in_flight, s.next_wakeup(12.0))


def test_a_sign_of_life_puts_the_safety_net_check_a_full_interval_later() -> None:
    s = PollScheduler(SAFETY, rng=middle)
    s.add_waiter("a", now=0.0, safety_net=True)
    s.on_state("a", terminal=False, now=30.0)  # a sync-mode callback

    assert 90.0 == s.next_wakeup(30.0)
    s.on_state("a", terminal=False, now=31.0)  # and another: never earlier than before
    assert 91.0 == s.next_wakeup(31.0)


def test_an_earlier_state_after_the_terminal_one_changes_nothing() -> None:
    s = PollScheduler(SAFETY, rng=middle)
    s.add_waiter("a", now=0.0, safety_net=True)
    s.on_state("a", terminal=True, now=10.0)

    assert [] == s.on_state("a", terminal=False, now=11.0)  # a reordered sync callback
    assert (0, None) == (s.in_flight, s.next_wakeup(11.0))


def test_a_failed_safety_net_check_is_retried_after_the_backoff_gap_then_slows_again() -> None:
    s = PollScheduler(SAFETY, rng=middle)
    s.add_waiter("a", now=0.0, safety_net=True)
    assert ["a"] == s.due(60.0)
    s.on_check_failed("a", now=60.5)

    assert 61.5 == s.next_wakeup(60.5)  # initial_delay after the failure
    assert ["a"] == check_and_answer(s, 61.5)
    assert 121.5 == s.next_wakeup(61.5)


def test_a_waiter_without_the_safety_net_takes_the_id_off_it() -> None:
    """Its caller was promised ordinary polling: the webhook may not be ours."""
    s = PollScheduler(SAFETY, rng=middle)
    s.add_waiter("a", now=0.0, safety_net=True)
    s.add_waiter("a", now=0.5)

    assert [1.0, 2.6] == pytest.approx(check_times(s, "a", until=3.0))


def test_a_waiter_with_the_safety_net_does_not_slow_an_id_polled_normally() -> None:
    s = PollScheduler(SAFETY, rng=middle)
    s.add_waiter("a", now=0.0)
    s.add_waiter("a", now=0.5, safety_net=True)

    assert 1.0 == s.next_wakeup(0.5)


def test_safety_net_ids_and_normal_ids_keep_their_own_schedules() -> None:
    s = PollScheduler(SAFETY, rng=middle)
    s.add_waiter("hooked", now=0.0, safety_net=True)
    s.add_waiter("polled", now=0.0)

    assert pytest.approx([1.0, 2.6, 5.16]) == check_times(s, "polled", until=6.0)
    s2 = PollScheduler(SAFETY, rng=middle)
    s2.add_waiter("hooked", now=0.0, safety_net=True)
    s2.add_waiter("polled", now=0.0)
    assert [60.0] == check_times(s2, "hooked", until=61.0)


def test_safety_net_jitter_only_shortens_the_interval() -> None:
    jittery = PollPolicy(target_delay=None, jitter=0.2, safety_net_interval=60.0)
    low = PollScheduler(jittery, rng=lambda: 0.0)
    high = PollScheduler(jittery, rng=lambda: 0.999999)
    low.add_waiter("a", now=0.0, safety_net=True)
    high.add_waiter("a", now=0.0, safety_net=True)

    assert 60.0 == low.next_wakeup(0.0)
    assert pytest.approx(48.0, abs=1e-4) == high.next_wakeup(0.0)


def test_is_tracked_follows_the_waiters() -> None:
    s = PollScheduler(SAFETY, rng=middle)
    token = s.add_waiter("a", now=0.0, safety_net=True)
    assert (True, False) == (s.is_tracked("a"), s.is_tracked("b"))
    s.remove_waiter(token)
    assert not s.is_tracked("a")


@settings(max_examples=100, deadline=None)
@given(
    durations=st.lists(st.floats(0.5, 300.0), min_size=1, max_size=20),
    delivered=st.lists(st.booleans(), min_size=20, max_size=20),
    interval=st.sampled_from([5.0, 30.0, 60.0]),
    jitter=st.sampled_from([0.0, 0.1, 0.5]),
    seed=st.integers(0, 2**32 - 1),
    target=st.sampled_from([None, 5.0]),
)
def test_on_the_safety_net_a_lost_callback_is_found_within_an_interval_at_one_check_per_interval(
    durations: list[float],
    delivered: list[bool],
    interval: float,
    jitter: float,
    seed: int,
    target: float | None,
) -> None:
    """Checks of a job come at most `interval` apart, about one per interval; a job whose
    callback is lost is found by a check at most `interval` after it ended."""
    policy = PollPolicy(
        target_delay=target,
        jitter=jitter,
        safety_net_interval=interval,
        max_checks_per_second=None,
    )
    s = PollScheduler(policy, rng=random.Random(seed).random)
    done = {f"j{i}": d for i, d in enumerate(durations)}
    callbacks = sorted((d, f"j{i}") for i, d in enumerate(durations) if delivered[i])
    for request_id in done:
        s.add_waiter(request_id, now=0.0, safety_net=True)
    checks: dict[str, list[float]] = {request_id: [] for request_id in done}
    found: dict[str, float] = {}
    now = 0.0
    while s.in_flight:
        wakeup = s.next_wakeup(now)
        assert wakeup is not None
        if callbacks and callbacks[0][0] <= wakeup:
            now, request_id = callbacks.pop(0)
            if s.on_state(request_id, terminal=True, now=now):
                found[request_id] = now
            continue
        now = wakeup
        for request_id in s.due(now):
            checks[request_id].append(now)
            if s.on_state(request_id, terminal=now >= done[request_id], now=now):
                found[request_id] = now

    for request_id, ended in done.items():
        gaps = [b - a for a, b in zip([0.0, *checks[request_id]], checks[request_id], strict=False)]
        assert all(gap <= interval + 1e-9 for gap in gaps)
        # (+ 2: an early first check at the learned quantile, and the one that finds it)
        assert len(checks[request_id]) <= math.ceil(ended / (interval * (1 - jitter))) + 2
        assert ended <= found[request_id] <= ended + interval + 1e-9


# -- memory -------------------------------------------------------------------------------


def test_ten_thousand_ids_with_deadlines_cost_well_under_600_bytes_each() -> None:
    ids = [f"real-esrgan_019d{i:08x}-0000-0000-0000-000000000000" for i in range(10_000)]
    times = [i / 2000 for i in range(10_000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        s = PollScheduler(PollPolicy(max_checks_per_second=None), rng=random.Random(0).random)
        for request_id, now in zip(ids, times, strict=True):
            s.add_waiter(request_id, now=now, deadline=now + 3600)
        check_and_answer(s, 70.0)  # each id checked once (by max_first_check) and rescheduled
        per_id = (tracemalloc.get_traced_memory()[0] - before) / len(ids)
    finally:
        tracemalloc.stop()

    assert 10_000 == s.checks_scheduled
    assert per_id < 500


# -- simulations --------------------------------------------------------------------------

EXTRA = 0.01  # the simulated shell wakes up to this much after next_wakeup()


@attrs.frozen
class Job:
    """A job as the gateway sees it, and how the outside world touches it."""

    submit: float
    duration: float | None  # None: stuck, never finishes
    # each waiter: (joins, after submit; its deadline, after joining; leaves, after joining)
    waiters: list[tuple[float, float | None, float | None]]
    pings: list[float]  # "still running" from elsewhere (sync webhooks), at submit + each
    webhooks: list[float]  # the terminal state from elsewhere, at completion + each (duplicates)

    @property
    def done_at(self) -> float:
        return math.inf if self.duration is None else self.submit + self.duration


@attrs.define
class Lifetime:
    """One stretch during which an id is tracked (it has waiters)."""

    job: Job
    start: float
    end: float | None = None
    checks: list[float] = attrs.Factory(list)  # when due() handed it out
    observations: list[float] = attrs.Factory(list)  # checks and "still running" from elsewhere


@attrs.define
class Simulation:
    """Drives a PollScheduler like the I/O shell would and checks its promises on the way."""

    policy: PollPolicy
    jobs: list[Job]
    seed: int
    pauses: list[tuple[float, float]] = attrs.Factory(list)  # (at, for how long)
    failure_rate: float = 0.0
    max_latency: float = 0.0
    horizon: float = 200.0
    r: random.Random = attrs.field(init=False)
    s: PollScheduler = attrs.field(init=False)
    events: list[tuple[float, int, str, Any]] = attrs.Factory(list)
    live: dict[int, tuple[str, float | None]] = attrs.Factory(dict)  # token -> (id, deadline)
    by_id: dict[str, list[int]] = attrs.Factory(dict)
    resolved: dict[int, str] = attrs.Factory(dict)  # token -> how
    lifetimes: dict[str, Lifetime] = attrs.Factory(dict)
    all_lifetimes: list[Lifetime] = attrs.Factory(list)
    checks: list[float] = attrs.Factory(list)
    paused_until: float = -math.inf

    def __attrs_post_init__(self) -> None:
        self.r = random.Random(self.seed)
        self.s = PollScheduler(self.policy, rng=self.r.random)
        for j, job in enumerate(self.jobs):
            for w, (joins, _, _) in enumerate(job.waiters):
                self.push(job.submit + joins, "add", (j, w))
            for after in job.pings:
                self.push(job.submit + after, "ping", j)
            for after in job.webhooks:
                self.push(job.done_at + after, "webhook", j)
        for at, length in self.pauses:
            self.push(at, "pause", at + length)

    def push(self, when: float, kind: str, what: Any) -> None:
        heapq.heappush(self.events, (when, len(self.events) + self.s.checks_scheduled, kind, what))

    def resolve(self, request_id: str, tokens: list[int], how: str, now: float) -> None:
        if how in ("state", "forgotten"):  # all the waiters of the id, in the order they came
            assert self.by_id[request_id] == tokens
        for token in tokens:
            assert token not in self.resolved, f"token {token} resolved twice"
            del self.live[token]
            self.by_id[request_id].remove(token)
            self.resolved[token] = how
        if not self.by_id[request_id]:
            del self.by_id[request_id]
            self.lifetimes.pop(request_id).end = now

    def state(self, request_id: str, job: Job, now: float) -> None:
        """Feed the truth about `job` as of `now`."""
        terminal = now >= job.done_at
        tokens = self.s.on_state(request_id, terminal=terminal, now=now)
        if terminal and request_id in self.by_id:
            self.resolve(request_id, tokens, "state", now)
        else:
            assert [] == tokens
            if request_id in self.lifetimes:
                self.lifetimes[request_id].observations.append(now)

    def handle(self, now: float, kind: str, what: Any) -> None:
        if kind == "add":
            j, w = what
            job = self.jobs[j]
            _, deadline, leaves = job.waiters[w]
            request_id = f"id{j}"
            absolute = None if deadline is None else now + deadline
            token = self.s.add_waiter(
                request_id, now=now, deadline=absolute, submitted_at=job.submit
            )
            assert token not in self.live
            assert token not in self.resolved
            if request_id not in self.lifetimes:
                self.lifetimes[request_id] = Lifetime(job, now)
                self.all_lifetimes.append(self.lifetimes[request_id])
            self.live[token] = (request_id, absolute)
            self.by_id.setdefault(request_id, []).append(token)
            if leaves is not None:
                self.push(now + leaves, "leave", token)
        elif kind == "leave":
            left = self.live.get(what)
            self.s.remove_waiter(what)  # idempotent when it was already resolved
            if left is not None:
                self.resolve(left[0], [what], "left", now)
        elif kind in ("ping", "webhook"):
            job = self.jobs[what]
            if kind == "webhook" or now < job.done_at:
                self.state(f"id{what}", job, now)
        elif kind == "pause":
            self.s.pause_until(what)
            self.paused_until = max(self.paused_until, what)
        else:  # the answer to a check
            request_id, failed = what
            if failed:
                self.s.on_check_failed(request_id, now=now)
            else:
                self.state(request_id, self.jobs[int(request_id[2:])], now)

    def run(self) -> Simulation:
        now, idle_at = 0.0, None
        for _ in range(100_000):
            wakeup = self.s.next_wakeup(now)
            deadlines = [d for _, d in self.live.values() if d is not None]
            if deadlines:  # (5) the shell is woken for every deadline
                assert wakeup is not None
                assert wakeup <= max(now, min(deadlines))
            if wakeup is not None:
                assert wakeup >= now
                wakeup += EXTRA * self.r.random() if self.r.random() < 0.5 else 0.0
            upcoming = min(self.events[0][0] if self.events else math.inf, wakeup or math.inf)
            if upcoming > self.horizon:
                break
            now = max(now, upcoming)
            progress = False
            while self.events and self.events[0][0] <= now:
                _, _, kind, what = heapq.heappop(self.events)
                self.handle(now, kind, what)
                progress = True
            for token, request_id in self.s.expired(now):
                waited_on, deadline = self.live[token]
                assert request_id == waited_on
                assert deadline is not None
                assert deadline <= now
                self.resolve(request_id, [token], "expired", now)
                progress = True
            assert all(d is None or d > now for _, d in self.live.values())  # (5)
            ids = self.s.due(now)
            if now < self.paused_until:  # (6)
                assert [] == ids
            for request_id in ids:
                progress = True
                lifetime = self.lifetimes[request_id]
                if lifetime.checks:  # (2)
                    assert now - lifetime.checks[-1] >= self.policy.min_interval - 1e-9
                lifetime.checks.append(now)
                lifetime.observations.append(now)
                self.checks.append(now)
                failed = self.r.random() < self.failure_rate
                latency = self.max_latency * self.r.random() if self.r.random() < 0.5 else 0.0
                if latency:
                    self.push(now + latency, "answer", (request_id, failed))
                else:
                    self.handle(now, "answer", (request_id, failed))
            assert (len(self.by_id), len(self.live)) == (self.s.in_flight, self.s.waiting)
            assert progress or idle_at != now, f"busy loop at {now}"
            idle_at = None if progress else now
        else:
            raise AssertionError("the simulation did not end")
        for request_id in list(self.by_id):
            self.resolve(request_id, self.s.forget(request_id), "forgotten", self.horizon)
        # (1) every token resolved exactly once
        assert (0, 0) == (self.s.in_flight, self.s.waiting)
        assert set(range(1, len(self.resolved) + 1)) == set(self.resolved)
        return self


durations = st.floats(-1.0, 3.6).map(math.exp)  # lognormal-ish: 0.4 s to 37 s
jobs = st.lists(
    st.builds(
        Job,
        submit=st.floats(0, 60),
        duration=st.one_of(st.none(), durations),
        waiters=st.lists(
            st.tuples(
                st.floats(0, 20),
                st.one_of(st.none(), st.floats(0, 60)),
                st.one_of(st.none(), st.floats(0, 60)),
            ),
            min_size=1,
            max_size=3,
        ),
        pings=st.lists(st.floats(0, 60), max_size=3),
        webhooks=st.lists(st.floats(0, 5), max_size=2),
    ),
    min_size=1,
    max_size=20,
)
policies = st.builds(
    PollPolicy,
    initial_delay=st.sampled_from([0.5, 1.0, 3.0]),
    min_interval=st.sampled_from([0.1, 0.25, 1.0]),
    max_interval=st.sampled_from([5.0, 10.0]),
    max_first_check=st.sampled_from([20.0, 60.0]),
    backoff=st.sampled_from([1.2, 1.6, 3.0]),
    jitter=st.sampled_from([0.0, 0.1, 0.5]),
    min_samples=st.sampled_from([1, 3, 8]),
    learn_window=st.sampled_from([8, 64]),
    max_checks_per_second=st.sampled_from([None, 1.0, 5.0, 50.0]),
    burst=st.sampled_from([1, 5, 50]),
    # Both schedules; the budget fixed (its growth is specified in test_scheduler_target.py).
    target_delay=st.sampled_from([None, 2.0, 5.0]),
    budget_increase=st.just(0.0),
)
seeds = st.integers(0, 2**32 - 1)


@settings(max_examples=100, deadline=None)
@given(
    policy=policies,
    jobs=jobs,
    seed=seeds,
    pauses=st.lists(st.tuples(st.floats(0, 150), st.floats(0, 40)), max_size=3),
    failure_rate=st.sampled_from([0.0, 0.2]),
    max_latency=st.sampled_from([0.0, 2.0]),
)
def test_simulation_resolves_every_token_once_and_respects_intervals_budget_pause_deadlines(
    policy: PollPolicy,
    jobs: list[Job],
    seed: int,
    pauses: list[tuple[float, float]],
    failure_rate: float,
    max_latency: float,
) -> None:
    """Properties (1), (2), (5) and (6) are asserted while it runs; (4) is checked here."""
    sim = Simulation(policy, jobs, seed, pauses, failure_rate, max_latency).run()

    rate = policy.max_checks_per_second
    if rate is not None:  # (4) in any window of w seconds: checks <= burst + rate * w
        lowest = math.inf
        for k, t in enumerate(sim.checks):
            lowest = min(lowest, k - rate * t)
            assert k - rate * t - lowest <= policy.burst - 1 + 1e-6


@settings(max_examples=100, deadline=None)
@given(
    policy=policies.map(lambda p: attrs.evolve(p, max_checks_per_second=None)),
    jobs=jobs,
    seed=seeds,
    failure_rate=st.sampled_from([0.0, 0.2]),
)
def test_without_pause_or_budget_an_unfinished_job_is_checked_at_least_every_max_interval(
    policy: PollPolicy, jobs: list[Job], seed: int, failure_rate: float
) -> None:
    """(3): after the first check, no news about a running job is older than max_interval."""
    sim = Simulation(policy, jobs, seed, failure_rate=failure_rate).run()

    for lifetime in sim.all_lifetimes:
        end = min(sim.horizon if lifetime.end is None else lifetime.end, lifetime.job.done_at)
        if not lifetime.checks or lifetime.checks[0] > end:
            continue
        seen = [t for t in lifetime.observations if lifetime.checks[0] <= t <= end]
        for before, after in zip(seen, [*seen[1:], end], strict=True):
            assert after - before <= policy.max_interval + EXTRA + 1e-9


def realistic_run(seed: int, jobs: int = 2000, per_second: float = 2.0) -> dict[str, float]:
    """Jobs timed like the hosted gateway, checked with the default policy; no wall clock."""
    r = random.Random(seed)
    s = PollScheduler(LEGACY, rng=r.random)
    submitted: list[tuple[float, float]] = []  # (submitted at, done at)
    t = 0.0
    for _ in range(jobs):
        t += r.expovariate(per_second)
        duration = r.lognormvariate(math.log(1.5), 0.6) + r.uniform(8.0, 12.0)
        if r.random() < 0.03:  # a cold start
            duration += r.uniform(20.0, 90.0)
        submitted.append((t, t + duration))
    checks = [0] * jobs
    found = [math.nan] * jobs
    learned = [False] * jobs
    now, k = 0.0, 0
    while k < jobs or s.in_flight:
        wakeup = s.next_wakeup(now)
        now = min(submitted[k][0] if k < jobs else math.inf, math.inf if wakeup is None else wakeup)
        while k < jobs and submitted[k][0] <= now:
            learned[k] = s.learned_quantiles is not None
            s.add_waiter(str(k), now=now, submitted_at=submitted[k][0])
            k += 1
        for request_id in s.due(now):
            i = int(request_id)
            checks[i] += 1
            if s.on_state(request_id, terminal=now >= submitted[i][1], now=now):
                found[i] = now
    delays = sorted(found[i] - submitted[i][1] for i in range(jobs))
    late = [i for i in range(jobs) if learned[i]]
    return {
        "checks_per_job": sum(checks) / jobs,
        "first_or_second": sum(checks[i] <= 2 for i in late) / len(late),
        "first": sum(checks[i] == 1 for i in late) / len(late),
        "delay_p50": delays[jobs // 2],
        "delay_p95": delays[jobs * 95 // 100],
    }


def test_with_realistic_timings_jobs_take_few_checks_and_are_found_promptly() -> None:
    figures = realistic_run(seed=2024)

    assert figures["checks_per_job"] <= 1.5
    assert figures["first_or_second"] >= 0.8
    assert figures["delay_p95"] <= 10.0


def test_a_known_duration_is_learned_instead_of_the_midpoint() -> None:
    """The gateway's timestamps give the true run time; the midpoint would halve it."""
    policy = PollPolicy(target_delay=None, min_samples=1, jitter=0.0, first_check_quantile=0.5)
    scheduler = PollScheduler(policy, rng=lambda: 0.5)
    scheduler.add_waiter("a", now=0.0)
    scheduler.on_state("a", terminal=True, now=10.0, duration=9.0)
    assert (9.0, 9.0) == scheduler.learned_quantiles
