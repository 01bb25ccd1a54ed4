"""The submission rate limit: at most ``limit`` job creations in any ``window`` seconds.

Rules of this module: plain state, no clock; every call carries ``now`` (monotonic seconds).
A sliding log rather than fixed buckets, so that ``Retry-After`` says exactly when the oldest
creation leaves the window and a client that honours it is never refused again at once.
"""

from __future__ import annotations

import collections
import math

__all__ = ["SlidingWindowLimiter", "retry_after_header"]


class SlidingWindowLimiter:
    """Counts creations in a sliding window.

    Args:
        limit: Creations allowed per window; None disables the limit.
        window: Window length in seconds.
    """

    def __init__(self, limit: int | None, window: float) -> None:
        self._limit = limit
        self._window = window
        self._times: collections.deque[float] = collections.deque()

    def retry_after(self, now: float) -> float | None:
        """Seconds until one more creation is allowed, or None if it is allowed now."""
        if self._limit is None:
            return None
        while self._times and self._times[0] + self._window <= now:
            self._times.popleft()
        if len(self._times) < self._limit:
            return None
        return self._times[0] + self._window - now

    def record(self, now: float) -> None:
        """Count one creation at ``now``."""
        if self._limit is not None:
            self._times.append(now)


def retry_after_header(seconds: float) -> int:
    """``Retry-After`` is whole seconds: round up so a client waiting that long is let in."""
    return max(1, math.ceil(seconds))
