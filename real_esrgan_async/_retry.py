"""When to retry a request, and how long to wait first: pure decisions.

Rules of this module:

- It does no I/O and reads no clock and no random source: the caller passes
  ``now`` (wall-clock seconds, for HTTP dates) and ``rng`` (a number in [0, 1))
  with every question, so every answer can be checked with plain numbers.
- A status GET is safe to repeat: it is retried on connection failures,
  timeouts, 429 and 5xx, with exponential backoff and full jitter.
- The submit POST costs money: it is retried only where the gateway provably
  created no job, that is when the connection was never made, or when the
  gateway answered 429. A timeout, a broken connection or a 5xx after the
  body was sent is *ambiguous*: never retried.
- 400, 401, 402, 403 and 404 are never retried.
- A ``Retry-After`` the gateway sends is honoured up to ``max_retry_after``.
"""

from __future__ import annotations

import enum
import math
from email.utils import parsedate_to_datetime

import attrs

from ._options import field


class Failure(enum.Enum):
    """What went wrong with one attempt, as far as the client can tell."""

    NOT_SENT = "not sent"  # no connection was made: the gateway saw nothing
    NO_ANSWER = "no answer"  # sent (maybe partly), then a timeout or a broken connection
    RATE_LIMITED = "429"  # refused before doing anything
    SERVER_ERROR = "5xx"  # the gateway failed somewhere, possibly after creating a job
    CLIENT_ERROR = "4xx"  # our request or account is wrong: repeating cannot help


class Operation(enum.Enum):
    """Which kind of request an attempt was."""

    SUBMIT = "submit"  # the paid POST
    READ = "read"  # a status GET or a media download: free and idempotent


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How hard to try a request before giving up.

    Args:
        max_attempts: Attempts in all, the first included (1 disables retries).
        base_delay: Backoff before the second attempt, in seconds, before jitter.
        max_delay: Cap of the exponential backoff, in seconds.
        max_retry_after: Longest ``Retry-After`` honoured, in seconds; a longer
            one is cut to this.
        default_cooldown: Pause after a 429 that names no ``Retry-After``.
        max_rate_limited: 429 answers tolerated for one request before giving
            up; counted apart from other failures, since a 429 costs nothing
            and the shared cooldown already spaces the attempts.
    """

    max_attempts: int = field(5, ">= 1", lambda p, v: v >= 1, kind=int)
    base_delay: float = field(0.5, "> 0", lambda p, v: v > 0)
    max_delay: float = field(30.0, "> 0", lambda p, v: v > 0)
    max_retry_after: float = field(120.0, "> 0", lambda p, v: v > 0)
    default_cooldown: float = field(1.0, "> 0", lambda p, v: v > 0)
    max_rate_limited: int = field(30, ">= 1", lambda p, v: v >= 1, kind=int)


@attrs.frozen
class Decision:
    """The answer to "should this attempt be repeated?".

    Attributes:
        retry: Whether to send the request again.
        delay: Seconds to wait before doing so (on top of any 429 cooldown).
        ambiguous: The failed attempt may have created a paid job.
    """

    retry: bool
    delay: float = 0.0
    ambiguous: bool = False


def backoff_delay(policy: RetryPolicy, attempt: int, rng: float) -> float:
    """Full-jitter exponential backoff after failed attempt number `attempt` (1-based)."""
    ceiling = min(policy.max_delay, policy.base_delay * 2.0 ** (attempt - 1))
    return rng * ceiling


def decide(
    policy: RetryPolicy,
    operation: Operation,
    failure: Failure,
    *,
    attempt: int,
    rate_limited: int = 0,
    rng: float,
) -> Decision:
    """Decide whether to repeat a failed attempt.

    Args:
        policy: The retry policy.
        operation: What was attempted.
        failure: How the latest attempt failed.
        attempt: Failures other than 429 so far, the latest included.
        rate_limited: 429 answers so far, the latest included.
        rng: A number in [0, 1), for jitter.
    """
    ambiguous = operation is Operation.SUBMIT and failure in (
        Failure.NO_ANSWER,
        Failure.SERVER_ERROR,
    )
    if ambiguous or failure is Failure.CLIENT_ERROR:
        return Decision(retry=False, ambiguous=ambiguous)
    if failure is Failure.RATE_LIMITED:
        # The shared cooldown does the waiting; no backoff on top of it.
        return Decision(retry=rate_limited < policy.max_rate_limited)
    if attempt >= policy.max_attempts:
        return Decision(retry=False)
    return Decision(retry=True, delay=backoff_delay(policy, attempt, rng))


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date.

    Args:
        value: The header, or None when absent.
        now: Wall-clock time as a Unix timestamp, for HTTP dates.

    Returns:
        Seconds (never negative), or None when absent or unreadable.
    """
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT
            return None
        seconds = when.timestamp() - now
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)
