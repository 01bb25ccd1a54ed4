"""Every exception the library raises, in one place.

The hierarchy::

    RealESRGANError
    ├── APIError                      the gateway could not be used as asked
    │   ├── APIStatusError            the gateway answered with an error status
    │   │   ├── BadRequestError           400 (`is_model_not_found` for the disabled-model body)
    │   │   ├── AuthenticationError       401
    │   │   ├── InsufficientBalanceError  402
    │   │   ├── PermissionDeniedError     403
    │   │   ├── NotFoundError             404
    │   │   ├── RateLimitError            429 (`retry_after`)
    │   │   └── ServerError               5xx
    │   ├── APIConnectionError        no answer: the transport failed
    │   │   └── APITimeoutError           ... because it timed out
    │   ├── AmbiguousSubmitError      a paid submit failed after it was sent: a job may exist
    │   └── ResponseValidationError   the gateway answered, but not in the documented shape
    ├── JobError                      a job reached a terminal state other than COMPLETED
    │   ├── JobFailedError                FAILED (charged)
    │   └── JobSystemError                ERROR (not charged)
    ├── JobTimeoutError               gave up waiting; the job still runs at the provider
    ├── JobsUnfinishedError           a fan-out stopped early; carries the ids still running
    ├── JournalError                  a fan-out's journal cannot be used
    │   ├── JournalLockedError            another process holds it
    │   └── JournalMismatchError          the inputs are not those it recorded (a ValueError)
    ├── IdempotencyKeyMismatchError   a key reused for another request (a ValueError)
    ├── KeyFormatError                a key's record in the store is of another format
    ├── StoreError                    the idempotency store cannot be used
    │   ├── StoreUnavailableError         unreachable (named, never with its password)
    │   ├── StoreMismatchError            written by another version, or for another gateway
    │   └── OutputExpiredError            the key's job finished, its outputs are gone
    ├── ImageHostError                a local input could not be published or fetched
    └── DownloadError                 fetching or checking an output failed

Misuse is reported with the built-in types, as attrs does: bad input raises
`InvalidRequestError` (a `ValueError`) or `TypeError`; using a closed client
raises `RuntimeError`.

No message, repr or attribute of these exceptions ever contains the API key:
they are built from the gateway's answer and the request's public parts only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._models import Status, UpscaleRequest


class RealESRGANError(Exception):
    """Base class of every error raised by this library (misuse errors aside)."""


class InvalidRequestError(ValueError, TypeError):
    """An input was rejected before anything was sent (and so before anything was paid).

    It is both a `ValueError` and a `TypeError`, so either built-in catches it,
    whether the input had the wrong value or the wrong type.
    """


class APIError(RealESRGANError):
    """The gateway could not be used as asked."""


class APIStatusError(APIError):
    """The gateway answered with an error status code.

    Attributes:
        status_code: The HTTP status code.
        error: The ``error`` field of the body, if any (e.g. ``"Insufficient Balance"``).
        message: The ``message`` field of the body, if any.
        request_id: The job this answer is about, when the request named one.
    """

    def __init__(
        self,
        status_code: int,
        *,
        error: str | None = None,
        message: str | None = None,
        request_id: str | None = None,
    ) -> None:
        self.status_code = status_code
        self.error = error
        self.message = message
        self.request_id = request_id
        detail = ": ".join(part for part in (error, message) if part) or "no error detail"
        about = f" (request_id={request_id})" if request_id else ""
        super().__init__(f"gateway answered {status_code}: {detail}{about}")


class BadRequestError(APIStatusError):
    """400: the gateway rejected the request body, or the model is disabled."""

    @property
    def is_model_not_found(self) -> bool:
        """True for the queue system's ``Model not found`` answer (the model is disabled)."""
        return self.error == "Model not found"


class AuthenticationError(APIStatusError):
    """401: the API key is missing or wrong."""


class InsufficientBalanceError(APIStatusError):
    """402: the wallet cannot pay for another job."""


class PermissionDeniedError(APIStatusError):
    """403: the key may not use this model or endpoint."""


class NotFoundError(APIStatusError):
    """404: the gateway knows no such request (or path)."""


class RateLimitError(APIStatusError):
    """429: too many requests.

    Attributes:
        retry_after: Seconds the gateway asked to wait, when it said so.
    """

    def __init__(
        self,
        status_code: int = 429,
        *,
        error: str | None = None,
        message: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status_code, error=error, message=message, request_id=request_id)
        self.retry_after = retry_after


class ServerError(APIStatusError):
    """5xx: the gateway failed."""


class APIConnectionError(APIError):
    """The request got no answer: the connection failed or broke."""


class APITimeoutError(APIConnectionError):
    """The request got no answer in time."""


class AmbiguousSubmitError(APIError):
    """A paid submit failed after the request was sent: a job may or may not exist.

    It is deliberately not retried, since a retry could pay twice. Check the
    provider's dashboard, or resubmit knowingly.

    Attributes:
        image: The input URL of the submit (for a local file, its signed URL
            without the signature).
        status_code: The status of the answer, when there was one (a 5xx).
        reason: What went wrong after the request was sent.
    """

    def __init__(self, image: str, *, status_code: int | None = None, reason: str) -> None:
        self.image = image
        self.status_code = status_code
        self.reason = reason
        super().__init__(
            f"submit of {image!r} failed after it was sent ({reason}); a job may exist and "
            "be charged, so it was not resubmitted"
        )

    def naming(self, image: str) -> AmbiguousSubmitError:
        """The same error, naming the input `image` (a signed URL's public part, say)."""
        return AmbiguousSubmitError(image, status_code=self.status_code, reason=self.reason)


class ResponseValidationError(APIError):
    """The gateway answered, but not in the documented shape (or not within bounds).

    Attributes:
        request_id: The job the request was about, when it named one.
    """

    def __init__(self, message: str, *, request_id: str | None = None) -> None:
        self.request_id = request_id
        about = f" (request_id={request_id})" if request_id else ""
        super().__init__(f"{message}{about}")


class JobError(RealESRGANError):
    """A job ended in a terminal state other than COMPLETED.

    Attributes:
        request_id: The job.
        status: Its terminal status.
        error: The gateway's error message for it.
        charged: Whether the provider charges for it (FAILED yes, ERROR no).
    """

    charged: bool = True

    def __init__(self, request_id: str, status: Status, error: str | None) -> None:
        self.request_id = request_id
        self.status = status
        self.error = error
        super().__init__(f"job {request_id} ended {status.value}: {error or 'no error message'}")


class JobFailedError(JobError):
    """The job ended FAILED (for example an undecodable or oversized input). It is charged."""


class JobSystemError(JobError):
    """The job ended ERROR: a system error at the provider. It is not charged; a retry may work."""

    charged = False


class JobTimeoutError(RealESRGANError, TimeoutError):
    """Waiting for a job took longer than asked. The job still runs at the provider.

    Attributes:
        request_id: The job, to wait on again later.
    """

    def __init__(self, request_id: str, timeout: float) -> None:
        self.request_id = request_id
        self.timeout = timeout
        super().__init__(
            f"job {request_id} did not finish within {timeout:g} s; it is still running at "
            "the provider and can be waited on again"
        )


class JobsUnfinishedError(RealESRGANError):
    """A fan-out stopped before all its jobs finished; nothing paid is lost.

    Attributes:
        request_ids: Jobs that were submitted (and paid) but not yet seen finished.
    """

    def __init__(self, request_ids: Sequence[str], reason: str) -> None:
        self.request_ids = tuple(request_ids)
        super().__init__(
            f"{reason}; {len(self.request_ids)} submitted job(s) unfinished, "
            "their request_ids are in .request_ids"
        )


class JournalError(RealESRGANError):
    """The journal cannot be used: locked, of another batch, unreadable or unwritable.

    A run whose journal fails ends with this error: it could no longer keep
    its promise that a rerun pays for nothing twice.
    """


class JournalLockedError(JournalError):
    """Another process (or another run in this one) holds the journal.

    Attributes:
        path: The journal.
        pid: The holder's process id, when it could be read.
    """

    def __init__(self, path: str, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        holder = "another process" if pid is None else f"process {pid}"
        super().__init__(
            f"journal {path} is in use by {holder}; two runs on one journal could pay for "
            "one input twice. Wait for it to finish, or stop it, then run again"
        )


class JournalMismatchError(JournalError, ValueError):
    """The input at an index is not the one the journal recorded there.

    The journal belongs to another batch, or the inputs (their order, scale or
    face_enhance) changed. The run ends before that input, or any later one, is
    submitted.

    Attributes:
        index: The first index that differs.
    """

    def __init__(self, index: int, recorded: str, given: str) -> None:
        self.index = index
        super().__init__(
            f"input {index} is {given}, but the journal recorded {recorded} "
            "at that position: the journal belongs to another batch, or the inputs (their order, "
            "scale or face_enhance) changed. Use a new journal for a new batch"
        )


class DownloadError(RealESRGANError):
    """Downloading or checking an output image failed.

    Attributes:
        request_id: The job whose output it is, when known.
        url: The media URL.
    """

    def __init__(self, message: str, *, url: str, request_id: str | None = None) -> None:
        self.request_id = request_id
        self.url = url
        super().__init__(message)


class KeyFormatError(RealESRGANError):
    """A record in the store is not one this version can read."""


class IdempotencyKeyMismatchError(RealESRGANError, ValueError):
    """An idempotency key was reused with another request; nothing was sent.

    Attributes:
        key: The key.
    """

    def __init__(self, key: str, recorded: UpscaleRequest, given: UpscaleRequest) -> None:
        self.key = key
        super().__init__(
            f"idempotency key {key!r} was first used for {_describe(recorded)}, not "
            f"{_describe(given)}: one key names one job; use a new key for a new request"
        )


class StoreError(RealESRGANError):
    """The idempotency store cannot be used (unreachable, foreign, or failing).

    Keyed submits stop when it fails: a submit whose key cannot be recorded
    could be paid twice by another process.
    """


class StoreUnavailableError(StoreError):
    """The store could not be reached; the message names it (never its password)."""


class StoreMismatchError(StoreError):
    """The store was written by another version of this library, or for another gateway."""


class OutputExpiredError(StoreError):
    """The key's job finished so long ago that its output URLs have expired.

    Attributes:
        key: The idempotency key.
        request_id: Its job (paid for; its output is gone).
    """

    def __init__(self, key: str, request_id: str | None, age: float) -> None:
        self.key = key
        self.request_id = request_id
        super().__init__(
            f"idempotency key {key!r}: job {request_id} finished {age / 60:.0f} min ago and its "
            "output URLs have expired (about an hour after completion); it was not resubmitted. "
            "Use a new key to pay for a new job"
        )


class ImageHostError(RealESRGANError):
    """Publishing a local image failed, or its URL could not be fetched; nothing was paid."""


def _describe(request: UpscaleRequest) -> str:
    return f"{request.image[:100]!r} (scale {request.scale}, face_enhance {request.face_enhance})"
