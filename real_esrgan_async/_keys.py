"""Keyed idempotency and the fleet's rate limit: the records and the pure decisions.

An idempotency key names one paid job across every process that shares a
`Store` and across restarts. Its record moves through the journal's states
(`JournalState`)::

    (none) ─claim─▶ PENDING ─the POST returned an id─▶ SUBMITTED ─seen finished─▶ COMPLETED
                      │  │                                                        FAILED
                      │  └─the POST provably created nothing─▶ (none)             ERROR
                      └─the POST may have created a job, or its owner's lease lapsed─▶ AMBIGUOUS

A PENDING record carries a lease its owner renews while its POST is under way;
a PENDING record whose lease lapsed belongs to a process that died mid-POST,
so it becomes AMBIGUOUS: never resubmitted silently.

Rules of this module: no I/O, no clock, no randomness. Times are plain floats
passed in (`now`, seconds); stores keep records as the opaque strings
`KeyRecord.dumps` makes. `decide` says what a caller does with a key given its
record; `take_token` is the token bucket that the Redis store's Lua script
mirrors line for line; `plan_check` and `look_again_in` decide how workers share
one status call (the Redis store's `CLAIM_CHECK` script is `plan_check`).
"""

from __future__ import annotations

import enum
import json
import math
from typing import Any

import attrs

from ._exceptions import (
    IdempotencyKeyMismatchError,
    InvalidRequestError,
    KeyFormatError,
    RealESRGANError,
)
from ._journal import FINISHED_STATES, JournalState
from ._models import JobState, UpscaleRequest

#: The format of a record; a store holding another is refused (`StoreMismatchError`).
RECORD_FORMAT = 1
#: Output URLs are deleted about an hour after a job completes (domain notes); a
#: finished key older than this no longer gives a usable result.
OUTPUT_URL_LIFETIME = 3600.0


@attrs.frozen
class KeyRecord:
    """What a store records about one idempotency key.

    Attributes:
        key: The idempotency key.
        request: The request it was first used with (a reuse must pass the same).
        state: Where its job is.
        owner: The process (a random token) that claimed it.
        request_id: The job's id, once the gateway returned one.
        result: The terminal state, once finished.
        finished_at: When it was seen finished (wall-clock seconds).
        error: Why it is AMBIGUOUS.
    """

    key: str
    request: UpscaleRequest
    state: JournalState
    owner: str
    request_id: str | None = None
    result: JobState | None = None
    finished_at: float | None = None
    error: str | None = None

    def dumps(self) -> str:
        """The record as the string a store keeps."""
        body: dict[str, Any] = {
            "format": RECORD_FORMAT,
            "key": self.key,
            "request": self.request.to_json(),
            "state": self.state.value,
            "owner": self.owner,
            "request_id": self.request_id,
            "result": None if self.result is None else self.result.to_json(),
            "finished_at": self.finished_at,
            "error": self.error,
        }
        return json.dumps(body, separators=(",", ":"), sort_keys=True)

    @classmethod
    def loads(cls, text: str) -> KeyRecord:
        """Read a record back.

        Raises:
            KeyFormatError: It was written in another format, or is corrupt.
        """
        try:
            body = json.loads(text)
            if body["format"] != RECORD_FORMAT:
                raise KeyFormatError(
                    f"the store holds a record of format {body['format']!r}; this version "
                    f"reads format {RECORD_FORMAT} only"
                )
            request = body["request"]
            return cls(
                key=body["key"],
                request=UpscaleRequest(
                    request["image"],
                    scale=request["scale"],
                    face_enhance=request["face_enhance"],
                ),
                state=JournalState(body["state"]),
                owner=body["owner"],
                request_id=body["request_id"],
                result=None if body["result"] is None else JobState.from_json(body["result"]),
                finished_at=body["finished_at"],
                error=body["error"],
            )
        except KeyFormatError:
            raise
        except (ValueError, KeyError, TypeError, RealESRGANError) as exc:
            raise KeyFormatError(f"unreadable idempotency record: {exc}") from exc

    def submitted(self, request_id: str) -> KeyRecord:
        """The record once the gateway returned `request_id`."""
        return attrs.evolve(self, state=JournalState.SUBMITTED, request_id=request_id, error=None)

    def ambiguous(self, reason: str) -> KeyRecord:
        """The record once its POST's fate is unknown."""
        return attrs.evolve(self, state=JournalState.AMBIGUOUS, error=reason)

    def finished(self, state: JobState, now: float) -> KeyRecord:
        """The record once its job was seen in terminal `state` at wall-clock `now`."""
        return attrs.evolve(
            self,
            state=FINISHED_STATES[state.status],
            request_id=state.request_id,
            result=state,
            finished_at=now,
        )


#: The longest idempotency key accepted.
MAX_KEY_LENGTH = 512


def check_key(key: object) -> str:
    """Return `key` if it can be an idempotency key.

    Raises:
        InvalidRequestError: It is not a non-empty str of at most 512 characters.
    """
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        shown = repr(key)[:80]
        raise InvalidRequestError(
            f"idempotency_key must be a non-empty str of at most {MAX_KEY_LENGTH} characters, "
            f"got {shown}"
        )
    return key


class Step(enum.Enum):
    """What a caller does with a key, given its record."""

    POST = "post"  # the caller claimed the key: submit, recording the id the moment it returns
    WAIT = "wait"  # a job exists for the key: wait on its id, never POST
    RESULT = "result"  # the job finished: hand over the recorded state
    EXPIRED = "expired"  # it finished so long ago that its output URLs are gone
    WAIT_PENDING = "wait_pending"  # another process is POSTing it now: look again shortly
    LAPSED = "lapsed"  # PENDING, but its owner's lease lapsed: it died mid-POST
    AMBIGUOUS = "ambiguous"  # a POST may or may not have created a job: refuse


def decide(
    record: KeyRecord,
    *,
    claimed: bool,
    request: UpscaleRequest,
    lease_alive: bool,
    now: float,
    output_lifetime: float = OUTPUT_URL_LIFETIME,
) -> Step:
    """What to do with a key whose record is `record`.

    Args:
        record: The record found (or just written, when `claimed`).
        claimed: The caller's claim wrote `record`: the key was free.
        request: The request the caller means to submit under the key.
        lease_alive: The PENDING record's owner still holds its lease.
        now: Wall-clock seconds (to tell whether output URLs expired).
        output_lifetime: How long output URLs live after a job finishes.

    Raises:
        IdempotencyKeyMismatchError: The key was used with another request.
    """
    if record.request != request:
        raise IdempotencyKeyMismatchError(record.key, record.request, request)
    if claimed:
        return Step.POST
    state = record.state
    if state is JournalState.SUBMITTED:
        return Step.WAIT
    if state is JournalState.PENDING:
        return Step.WAIT_PENDING if lease_alive else Step.LAPSED
    if state is JournalState.AMBIGUOUS:
        return Step.AMBIGUOUS
    # Finished. FAILED and ERROR carry no output, so they never expire.
    if (
        state is JournalState.COMPLETED
        and record.finished_at is not None
        and now - record.finished_at >= output_lifetime
    ):
        return Step.EXPIRED
    return Step.RESULT


# The fleet's token bucket -----------------------------------------------------------


@attrs.frozen
class Bucket:
    """A token bucket: `tokens` left at time `at` (seconds on the server's clock)."""

    tokens: float
    at: float


@attrs.frozen
class Take:
    """The answer of `take_token`.

    Attributes:
        bucket: The bucket after the attempt (a token taken if `wait` is 0).
        wait: Seconds to wait before asking again; 0 when a token was taken.
    """

    bucket: Bucket
    wait: float


def take_token(bucket: Bucket | None, *, now: float, rate: float, burst: float) -> Take:
    """Take one token from `bucket` at `now`, refilled at `rate` per second up to `burst`.

    A missing bucket is a full one. A clock that went backwards refills nothing.
    The Redis store's Lua script (`_store_redis.BUCKET_LUA`) is this function.
    """
    if bucket is None:
        tokens = burst
    else:
        tokens = min(burst, bucket.tokens + max(0.0, now - bucket.at) * rate)
    if tokens >= 1.0:
        return Take(Bucket(tokens - 1.0, now), 0.0)
    return Take(Bucket(tokens, now), (1.0 - tokens) / rate)


def cooldown_until(current: float | None, *, now: float, retry_after: float) -> float:
    """The fleet's pause after a 429 at `now` asking for `retry_after` s: it only extends."""
    until = now + max(0.0, retry_after)
    if current is None or math.isnan(current):
        return until
    return max(current, until)


# Status checks shared by the fleet ---------------------------------------------------

#: How long a worker's claim to check a job outlives its status call (seconds): a
#: checker that died stops blocking the others this long after its claim.
CHECK_LEASE = 2.0
#: How long a relayed answer is kept in the store (seconds); a terminal one is always
#: fresh, so a worker that starts waiting on a finished job a moment later needs no call.
CHECK_ANSWER_TTL = 600.0
#: How often a worker looks again for the answer of a check another worker has on the
#: wire (seconds, growing; the last repeats until the claim's lease ends).
CHECK_LOOKS = (0.005, 0.01, 0.02, 0.05, 0.1)


class CheckStep(enum.Enum):
    """What a worker whose status check of a job is due does, given the store's view."""

    SHARE = "share"  # a fresh answer is in the store: use it, call nothing
    CALL = "call"  # this worker claimed the check: call, then write the answer for the others
    WAIT = "wait"  # another worker's call is on the wire: look again shortly


def answer_is_fresh(*, age: float, terminal: bool, max_age: float) -> bool:
    """Whether an answer read `age` seconds ago may stand in for a status call now.

    A terminal state never changes, so it is always fresh. A running one is if it
    is younger than `max_age`, the asking worker's own `PollPolicy.min_interval`:
    its scheduler holds that a check sooner than that after a sign of life tells
    nothing new. A negative age (a clock that stepped back) counts as fresh.
    """
    return terminal or age < max_age


def plan_check(*, age: float | None, terminal: bool, leased: bool, max_age: float) -> CheckStep:
    """The step of a worker whose check of a job is due.

    Args:
        age: Seconds since the job's last relayed answer was read, or None for none.
        terminal: That answer is a terminal state.
        leased: Another worker holds the claim to check the job (its call is out).
        max_age: The oldest running answer this worker accepts (`answer_is_fresh`).

    A store makes this decision and, on CALL, takes the claim in one atomic step
    (the Redis store's `CLAIM_CHECK` script is this function).
    """
    if age is not None and answer_is_fresh(age=age, terminal=terminal, max_age=max_age):
        return CheckStep.SHARE
    return CheckStep.WAIT if leased else CheckStep.CALL


def look_again_in(looks: int, waited: float, *, lease: float = CHECK_LEASE) -> float | None:
    """Seconds to wait before looking again for another worker's answer, or None.

    None means: stop waiting and call the gateway yourself. A claim whose checker
    died lapses after `lease` and is then taken over, so waiting longer than that
    only happens when one checker after another claims and fails; a worker never
    waits past it.

    Args:
        looks: How many times the worker looked already.
        waited: Seconds it has waited so far.
        lease: The claim's lease.
    """
    if waited >= lease:
        return None
    step = CHECK_LOOKS[min(looks, len(CHECK_LOOKS) - 1)]
    return min(step, lease - waited)
