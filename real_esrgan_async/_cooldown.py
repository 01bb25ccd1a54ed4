"""The client-wide pause after a 429: pure state, fed with ``now``.

Rules of this module:

- One `Cooldown` per client: a 429 on any request pauses every request of
  that client, submits and status checks alike, since they share one quota.
- The pause lasts the gateway's ``Retry-After`` (capped), or, when it names
  none, a default that doubles with each 429 in a row (up to the cap).
- A pause only ever extends: an earlier 429 cannot shorten a later one.
- A 429 to a request sent before the current pause began tells nothing new (it
  was refused under the same window, and the gateway's ``Retry-After`` is rounded
  up): it does not extend the pause. Otherwise each of a burst's stragglers
  pushes the pause a little later and every window starts late.
- Any success ends the run of 429s (the next default pause starts small again).
- No I/O, no clock reads: times are plain floats on the caller's monotonic clock.
"""

from __future__ import annotations

from ._retry import RetryPolicy


class Cooldown:
    """When requests may be sent again after a 429."""

    __slots__ = ("_policy", "_since", "_streak", "until")

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        self._streak = 0
        self._since = float("-inf")  # when the current pause began
        self.until = float("-inf")

    def on_rate_limited(
        self, now: float, retry_after: float | None, *, sent_at: float | None = None
    ) -> float:
        """Record a 429 seen at `now`; return the time until which everything waits.

        Args:
            now: When the 429 arrived.
            retry_after: The gateway's ``Retry-After`` in seconds, if any.
            sent_at: When the refused request was sent, if known.
        """
        if sent_at is not None and sent_at < self._since and now < self.until:
            return self.until  # a straggler of the burst this pause already answers
        self._streak += 1
        if retry_after is None:
            pause = self._policy.default_cooldown * 2.0 ** (self._streak - 1)
        else:
            pause = retry_after
        pause = min(pause, self._policy.max_retry_after)
        if now + pause > self.until:
            if now >= self.until:
                self._since = now
            self.until = now + pause
        return self.until

    def on_success(self) -> None:
        """A request went through: the run of 429s is over."""
        self._streak = 0

    def remaining(self, now: float) -> float:
        """Seconds left to wait at `now` (0 when requests may go)."""
        return max(0.0, self.until - now)
