"""When a job that ended ERROR is submitted again: the pure resubmission rule.

The gateway says ERROR is a system error (CUDA out of memory, a worker lost)
and does not charge for it; about 1-2% of jobs end so and a second try usually
works. FAILED is charged and means the input itself was bad: it is never
resubmitted, nor is a rejected input or an ambiguous submit (that one may have
paid already; see ``resubmit_ambiguous``).

Rules of this module: no I/O, no clock, no randomness. `resubmit_delay` answers
"resubmit this job, and after how long?" from plain numbers; the fan-out and
``upscale`` sleep and POST.
"""

from __future__ import annotations

import attrs

from . import _options
from ._exceptions import InvalidRequestError
from ._models import Status


@attrs.frozen
class ResubmitPolicy:
    """How jobs that ended ERROR (uncharged) are submitted again.

    The n-th resubmission of an input waits
    ``min(max_backoff, backoff * backoff_factor ** (n - 1))`` seconds after the
    ERROR was seen. Each resubmission is a new job with a new ``request_id``
    (paid unless it ends ERROR too).

    Args:
        max_resubmits: Resubmissions per input, at most; 0 turns them off
            (`ResubmitPolicy.off()`).
        backoff: Seconds before the first resubmission.
        backoff_factor: Growth of the wait from one resubmission to the next.
        max_backoff: The longest wait, seconds.

    Raises:
        InvalidRequestError: A field has the wrong type or value.
    """

    max_resubmits: int = _options.field(2, ">= 0", lambda _, v: v >= 0, kind=int)
    backoff: float = _options.field(1.0, ">= 0 seconds", lambda _, v: v >= 0)
    backoff_factor: float = _options.field(2.0, ">= 1", lambda _, v: v >= 1)
    max_backoff: float = _options.field(
        30.0, ">= backoff seconds", lambda policy, v: v >= policy.backoff
    )

    @classmethod
    def off(cls) -> ResubmitPolicy:
        """A policy that never resubmits."""
        return cls(max_resubmits=0)

    @property
    def enabled(self) -> bool:
        """Whether any job is ever resubmitted."""
        return self.max_resubmits > 0


def resubmit_delay(policy: ResubmitPolicy, status: Status, resubmits_so_far: int) -> float | None:
    """Whether to submit an input again after its job ended in `status`, and when.

    Args:
        policy: The policy in force.
        status: The terminal status the job ended in.
        resubmits_so_far: How many times this input was already resubmitted.

    Returns:
        The seconds to wait before resubmitting, or None: do not resubmit
        (the job did not end ERROR, or the input used up its resubmissions).
    """
    if status is not Status.ERROR or resubmits_so_far >= policy.max_resubmits:
        return None
    delay = policy.backoff * policy.backoff_factor**resubmits_so_far
    return min(policy.max_backoff, delay)


def as_policy(owner: str, value: object) -> ResubmitPolicy:
    """Read a ``resubmit=`` option: a `ResubmitPolicy`, True (the default one) or False (off).

    Raises:
        InvalidRequestError: It is none of these.
    """
    if isinstance(value, ResubmitPolicy):
        return value
    if value is True:
        return ResubmitPolicy()
    if value is False:
        return ResubmitPolicy.off()
    raise InvalidRequestError(
        f"{owner}.resubmit must be True, False or a ResubmitPolicy, "
        f"got {type(value).__name__} {value!r}"
    )
