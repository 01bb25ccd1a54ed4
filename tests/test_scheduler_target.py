"""The latency-target schedule, the budget's growth, expect_finish, heartbeats: plain numbers."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from real_esrgan_async._scheduler import (
    PROFILES,
    PollPolicy,
    PollScheduler,
    kaplan_meier,
    next_check,
    nominal_processing,
)


def middle() -> float:
    """An rng whose jitter factor is exactly 1."""
    return 0.5


def answer(s: PollScheduler, now: float, **state: object) -> list[str]:
    """Run due(now) and feed each id it hands out the same non-terminal state."""
    ids = s.due(now)
    for request_id in ids:
        s.on_state(request_id, terminal=False, now=now, **state)  # type: ignore[arg-type]
    return ids


# -- policy ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "error", "allowed"),
    [
        ("target_delay", 0, ValueError, "None or a finite number > 0"),
        ("target_delay", "5", TypeError, "None or a finite number > 0"),
        ("target_quantile", 1.0, ValueError, "a finite number in [0.5, 1)"),
        ("budget_increase", -1.0, ValueError, "a finite number >= 0"),
    ],
)
def test_policy_rejects_bad_target_knobs_naming_the_field_the_value_and_what_is_allowed(
    name: str, value: object, error: type[Exception], allowed: str
) -> None:
    with pytest.raises(error) as info:
        PollPolicy(**{name: value})  # type: ignore[arg-type]

    assert f"PollPolicy.{name} must be {allowed}, got {value!r}" == str(info.value)


def test_the_default_is_a_5_s_target_and_profiles_name_targets() -> None:
    assert 5.0 == PollPolicy().target_delay
    assert {"interactive": 2.0, "balanced": 5.0, "frugal": 20.0} == {
        name: PollPolicy.profile(name).target_delay for name in PROFILES
    }
    assert 30.0 == PollPolicy.profile("frugal", max_interval=30.0).max_interval


def test_with_a_target_max_interval_defaults_to_room_for_the_tail_and_an_explicit_one_holds() -> (
    None
):
    assert (10.0, 40.0, 80.0, 0.05) == (
        PollPolicy(target_delay=None).max_interval,
        PollPolicy().max_interval,
        PollPolicy(target_delay=20.0).max_interval,
        PollPolicy(max_interval=0.05, min_interval=0.01).max_interval,
    )


def test_an_explicit_max_interval_bounds_the_first_check_of_a_target_schedule_too() -> None:
    """A test's fast policy (or a caller's bound on staleness) still rules."""
    s = PollScheduler(PollPolicy(max_interval=0.05, min_interval=0.01), rng=middle)
    s.add_waiter("a", now=0.0)

    assert 0.05 == s.next_wakeup(0.0)
    assert ["a"] == answer(s, 0.05, queued=False, queue_wait=0.0)
    assert pytest.approx(0.1) == s.next_wakeup(0.05)


def test_an_unknown_profile_is_refused_with_the_names_allowed() -> None:
    with pytest.raises(ValueError, match="profile name") as info:
        PollPolicy.profile("fast")

    expected = (
        "PollPolicy.profile name must be one of 'interactive', 'balanced', 'frugal', got 'fast'"
    )
    assert expected == str(info.value)


def test_a_size_that_is_not_a_positive_finite_number_is_refused() -> None:
    s = PollScheduler(rng=middle)
    for bad in (0.0, -1.0, math.nan, math.inf, True):
        with pytest.raises(ValueError, match="megapixels must be None or a finite number > 0"):
            s.add_waiter("a", now=0.0, megapixels=bad)
    assert 0 == s.in_flight


# -- the pure pieces ------------------------------------------------------------------------


def test_next_check_comes_the_delay_after_all_but_a_share_of_the_running_jobs_finish() -> None:
    points = [10.0, 20.0, 30.0, 40.0]

    assert 15.0 == next_check(points, 0.0, 0.0, 5.0, 0.0)
    assert 35.0 == next_check(points, 0.0, 0.0, 5.0, 0.5)  # lets 2 of 4 be seen late
    assert 135.0 == next_check(points, 100.0, 125.0, 5.0, 0.0)  # 10 and 20 are past
    assert 145.0 == next_check(points, 100.0, 125.0, 5.0, 0.99)  # never past the last
    assert None is next_check(points, 100.0, 140.0, 5.0, 0.0)  # it outlived them all


def test_kaplan_meier_counts_jobs_still_running_so_short_early_finishers_do_not_bias_it() -> None:
    prior = [10.0] * 8
    finished = [2.0] * 50  # the short jobs finish first...
    running = [30.0] * 50  # ...while as many still run at 30 s

    naive = kaplan_meier(prior, finished, [], 10)
    censored = kaplan_meier(prior, finished, running, 10)

    assert 2.0 == naive[5]  # the median of what finished: half the truth at least
    assert 10.0 == censored[5]  # the running ones keep the median above 2 s
    assert 2.0 == censored[0]


def test_kaplan_meier_with_only_exact_durations_gives_their_quantiles() -> None:
    durations = [float(v) for v in range(1, 1001)]
    points = kaplan_meier(durations, durations, [], 4)

    assert [125.0, 375.0, 625.0, 875.0] == pytest.approx(points, abs=1.0)


def test_nominal_processing_follows_the_calibrated_model() -> None:
    assert pytest.approx(2.7 + 12.8 + 16 * 0.09) == nominal_processing(1.0)


# -- the schedule of one id -----------------------------------------------------------------


def test_no_check_of_a_fresh_job_comes_before_the_target_nor_after_max_first_check() -> None:
    s = PollScheduler(PollPolicy(target_delay=5.0), rng=middle)
    s.add_waiter("a", now=0.0)

    first = s.next_wakeup(0.0)

    assert first is not None
    # The prior says no job finishes in under ~7 s: checking sooner would only cost.
    assert 5.0 + 7.0 <= first <= 60.0


def test_a_job_still_queued_after_20_s_is_a_cold_start_checked_after_its_processing() -> None:
    policy = PollPolicy(target_delay=5.0, max_first_check=20.0, max_interval=120.0)
    s = PollScheduler(policy, rng=middle)
    s.add_waiter("a", now=0.0)
    assert ["a"] == answer(s, 20.0, queued=True)

    after_queued = s.next_wakeup(20.0)

    # Even the smallest input (0.3 MP) takes ~7 s to process once it leaves the queue,
    # and a cold start lasts up to 90 s.
    assert after_queued is not None
    assert 20.0 + nominal_processing(0.3) * 0.8 + 5.0 <= after_queued <= 20.0 + 90.0 + 5.0


def test_a_known_processing_start_plans_from_the_processing_time_alone() -> None:
    """Seen PROCESSING since 1 s at age 12: the next check is where processing times of
    more than 11 s thin out, plus the target; not where whole jobs of 12 s+ do."""
    s = PollScheduler(PollPolicy(target_delay=5.0, jitter=0.0), rng=middle)
    s.add_waiter("a", now=0.0)
    late = PollScheduler(PollPolicy(target_delay=5.0, jitter=0.0), rng=middle)
    late.add_waiter("a", now=0.0)
    first = s.next_wakeup(0.0)
    assert first is not None

    answer(s, first, queued=False, queue_wait=1.0)
    answer(late, first, queued=False, queue_wait=first - 0.5)  # started just now

    early_start, late_start = s.next_wakeup(first), late.next_wakeup(first)
    assert early_start is not None
    assert late_start is not None
    assert first + 5.0 <= early_start < late_start


def test_a_given_size_narrows_the_first_check_to_that_size_processing_time() -> None:
    policy = PollPolicy(target_delay=5.0, jitter=0.0)
    first, second = PollScheduler(policy, rng=middle), PollScheduler(policy, rng=middle)
    first.add_waiter("small", now=0.0, megapixels=0.3)
    second.add_waiter("large", now=0.0, megapixels=2.0)

    small, large = first.next_wakeup(0.0), second.next_wakeup(0.0)

    assert small is not None
    assert large is not None
    assert nominal_processing(0.3) * 0.8 + 5.0 <= small < nominal_processing(0.3) + 5.0 + 2.0
    assert nominal_processing(2.0) * 0.8 + 5.0 <= large


def test_jobs_seen_late_raise_the_share_each_check_may_miss_and_jobs_on_time_lower_it() -> None:
    policy = PollPolicy(target_delay=5.0)
    late, on_time = PollScheduler(policy, rng=middle), PollScheduler(policy, rng=middle)
    start = late.miss_share
    for i in range(50):
        for s, seen_after in ((late, 20.0), (on_time, 1.0)):
            s.add_waiter(f"j{i}", now=0.0)
            s.due(100.0)
            s.on_state(f"j{i}", terminal=True, now=100.0, duration=100.0 - seen_after)

    assert on_time.miss_share > start > late.miss_share


# -- expect_finish and heartbeats -----------------------------------------------------------

SAFETY = PollPolicy(jitter=0.0, safety_net_interval=60.0, min_interval=0.25)


def test_expect_finish_rechecks_at_a_short_bounded_backoff_then_returns_to_the_plan() -> None:
    s = PollScheduler(SAFETY, rng=middle)
    s.add_waiter("a", now=0.0, safety_net=True)
    s.on_state("a", terminal=False, now=10.0, queued=False)  # the lagging confirmation

    s.expect_finish("a", now=10.0)
    times = []
    now = 10.0
    for _ in range(6):
        wakeup = s.next_wakeup(now)
        assert wakeup is not None
        now = wakeup
        assert ["a"] == answer(s, now, queued=False)
        times.append(now)

    assert [10.5, 11.5, 13.5, 17.5, 21.5] == times[:5]
    assert times[5] == pytest.approx(21.5 + 60.0)  # back to the safety net's interval


def test_expect_finish_during_a_check_applies_to_the_check_after_its_answer() -> None:
    s = PollScheduler(SAFETY, rng=middle)
    s.add_waiter("a", now=0.0, safety_net=True)
    assert ["a"] == s.due(60.0)

    s.expect_finish("a", now=60.1)
    s.on_state("a", terminal=False, now=60.2, queued=False)

    assert pytest.approx(60.7) == s.next_wakeup(60.2)


def test_expect_finish_of_an_id_not_tracked_changes_nothing() -> None:
    s = PollScheduler(SAFETY, rng=middle)
    s.expect_finish("ghost", now=1.0)

    assert (0, None) == (s.in_flight, s.next_wakeup(1.0))


def test_heartbeats_never_postpone_the_safety_net_check_past_two_intervals() -> None:
    """A forger sending PROCESSING forever delays the check by one interval at most."""
    s = PollScheduler(SAFETY, rng=middle)
    s.add_waiter("a", now=0.0, safety_net=True)
    checks: list[float] = []
    now = 0.0
    while now < 400.0:
        now += 10.0
        s.on_state("a", terminal=False, now=now, queued=False)  # a heartbeat every 10 s
        if "a" in answer(s, now, queued=False):
            checks.append(now)

    assert [120.0, 240.0, 360.0] == checks


# -- the budget -----------------------------------------------------------------------------


def test_the_budget_grows_while_it_holds_checks_back_and_halves_on_a_429() -> None:
    s = PollScheduler(
        PollPolicy(target_delay=None, max_checks_per_second=50.0, budget_increase=10.0),
        rng=middle,
    )
    for i in range(1000):
        s.add_waiter(f"id{i}", now=0.0)

    assert 50 == len(s.due(1.0))  # held back from here on
    s.due(2.0)
    assert 60.0 == s.checks_per_second  # + 10 checks/s per second held
    s.on_rate_limited(2.0)
    assert 30.0 == s.checks_per_second
    assert [] == s.due(2.0)  # the bucket shrank with it


def test_the_budget_does_not_grow_when_nothing_is_held_back_and_never_halves_below_one() -> None:
    s = PollScheduler(PollPolicy(max_checks_per_second=4.0, burst=100), rng=middle)
    s.add_waiter("a", now=0.0)
    s.due(100.0)
    s.due(200.0)
    assert 4.0 == s.checks_per_second
    for _ in range(5):
        s.on_rate_limited(300.0)
    assert 1.0 == s.checks_per_second


def test_a_fixed_budget_stays_fixed_and_no_budget_ignores_429s() -> None:
    fixed = PollScheduler(PollPolicy(budget_increase=0.0, burst=1), rng=middle)
    unlimited = PollScheduler(PollPolicy(max_checks_per_second=None), rng=middle)
    for i in range(10):
        fixed.add_waiter(f"id{i}", now=0.0)
    fixed.due(100.0)
    fixed.due(101.0)
    unlimited.on_rate_limited(1.0)

    assert (50.0, None) == (fixed.checks_per_second, unlimited.checks_per_second)


# -- properties -----------------------------------------------------------------------------


def calibrated_jobs(n: int, seed: int, rate: float) -> list[tuple[float, float, float, float]]:
    """(submitted, queue wait, processing, megapixels), as the domain notes model them."""
    r = random.Random(seed)
    jobs = []
    t = 0.0
    for _ in range(n):
        t += r.expovariate(rate)
        megapixels = 0.3 * (2 / 0.3) ** r.random()
        wait = r.lognormvariate(math.log(1.5), 0.6)
        if r.random() < 0.03:
            wait += r.uniform(20.0, 90.0)
        jobs.append(
            (t, wait, nominal_processing(megapixels) * r.lognormvariate(0, 0.1), megapixels)
        )
    return jobs


def drive(
    policy: PollPolicy, jobs: list[tuple[float, float, float, float]], *, sizes: bool, seed: int
) -> tuple[list[int], list[float], list[list[float]]]:
    """Drive a scheduler with a simulated clock; return checks, delays and check times per job."""
    r = random.Random(seed)
    s = PollScheduler(policy, rng=r.random)
    times: list[list[float]] = [[] for _ in jobs]
    found = [math.nan] * len(jobs)
    now, k = 0.0, 0
    while k < len(jobs) or s.in_flight:
        wakeup = s.next_wakeup(now)
        now = min(jobs[k][0] if k < len(jobs) else math.inf, math.inf if wakeup is None else wakeup)
        while k < len(jobs) and jobs[k][0] <= now:
            s.add_waiter(
                str(k), now=now, submitted_at=jobs[k][0], megapixels=jobs[k][3] if sizes else None
            )
            k += 1
        for request_id in s.due(now):
            i = int(request_id)
            submitted, wait, run, _ = jobs[i]
            times[i].append(now)
            if now >= submitted + wait + run:
                if s.on_state(request_id, terminal=True, now=now, duration=wait + run):
                    found[i] = now
            elif now < submitted + wait:
                s.on_state(request_id, terminal=False, now=now, queued=True)
            else:
                s.on_state(request_id, terminal=False, now=now, queued=False, queue_wait=wait)
    delays = [found[i] - (j[0] + j[1] + j[2]) for i, j in enumerate(jobs)]
    return [len(t) for t in times], delays, times


@settings(max_examples=30, deadline=None)
@given(
    target=st.sampled_from([1.0, 5.0, 20.0]),
    min_interval=st.sampled_from([0.25, 3.0]),
    rate=st.sampled_from([None, 5.0]),
    sizes=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_every_job_is_found_no_check_comes_before_the_floor_and_the_budget_holds(
    target: float, min_interval: float, rate: float | None, sizes: bool, seed: int
) -> None:
    policy = PollPolicy(
        target_delay=target,
        min_interval=min_interval,
        max_checks_per_second=rate,
        burst=5,
        budget_increase=0.0,
    )
    jobs = calibrated_jobs(60, seed, rate=3.0)

    checks, delays, times = drive(policy, jobs, sizes=sizes, seed=seed)

    assert all(c >= 1 for c in checks)  # every waiter checked, every job found
    assert all(d >= 0 for d in delays)
    for job, seen in zip(jobs, times, strict=True):
        assert seen[0] >= job[0] + min_interval - 1e-9  # the floor after submission
        assert seen[0] <= job[0] + policy.max_first_check + 1e-9 or rate is not None
        gaps = [b - a for a, b in itertools.pairwise(seen)]
        assert all(g >= min_interval - 1e-9 for g in gaps)  # the floor between checks
        if rate is None:
            assert seen[0] <= job[0] + policy.max_interval + 1e-9
            assert all(g <= policy.max_interval + 1e-9 for g in gaps)
    if rate is not None:  # in any window of w seconds: checks <= burst + rate * w
        every = sorted(t for seen in times for t in seen)
        lowest = math.inf
        for k, t in enumerate(every):
            lowest = min(lowest, k - rate * t)
            assert k - rate * t - lowest <= policy.burst - 1 + 1e-6


def test_on_the_calibrated_model_the_default_meets_its_target_with_few_checks() -> None:
    """A figure of the benchmark, on fewer jobs: p95 within 5 s, well under 2.9 checks."""
    jobs = calibrated_jobs(1500, 7, rate=2.0)

    checks, delays, _ = drive(PollPolicy(), jobs, sizes=False, seed=7)
    sized, sized_delays, _ = drive(PollPolicy(), jobs, sizes=True, seed=7)

    delays.sort()
    sized_delays.sort()
    assert sum(checks) / len(jobs) <= 2.9
    assert delays[int(0.95 * len(jobs))] <= 5.0 * 1.05
    assert sum(sized) / len(jobs) <= 1.6
    assert sized_delays[int(0.95 * len(jobs))] <= 5.0 * 1.05
