"""Immutable value objects: what is asked, what the gateway answered, what a fan-out yields.

Validation lives here, in attrs validators, so that a bad input is refused
when the object is built: before anything is sent and before anything is paid.

What the gateway sends is checked for shape too, when it is parsed
(`Job.from_json`, `JobState.from_json`): an identifier is short, printable and
free of path separators, so that no later use (a URL, a file name, a log line)
can be steered by a hostile or buggy gateway; free text is cut to a bound.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

from ._exceptions import (
    InvalidRequestError,
    JobFailedError,
    JobSystemError,
    ResponseValidationError,
)
from ._timestamps import parse_timestamp
from ._urls import MAX_GATEWAY_URL_LENGTH, check_image_url

ALLOWED_SCALES = (1, 2, 3, 4)
#: Longest identifier (``request_id``, ``model_id``) or media type accepted from the gateway.
#: Real ids are ~48 characters (the webhook receiver has the same bound).
MAX_ID_LENGTH = 256
#: Longest ``error`` text kept from the gateway; the rest is cut, never refused (a terminal
#: state must reach the caller whatever its message).
MAX_ERROR_LENGTH = 2000
#: Most output URLs accepted for one job (the gateway returns one).
MAX_MEDIA_URLS = 16
_PATH_SEPARATORS = ("/", "\\")


class Status(enum.StrEnum):
    """Where a job is: ``QUEUED → PROCESSING → COMPLETED | FAILED | ERROR``."""

    QUEUED = "QUEUED"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    ERROR = "ERROR"

    @property
    def is_terminal(self) -> bool:
        """True once the job can change no more."""
        return self in (Status.COMPLETED, Status.FAILED, Status.ERROR)


def _check_image(_: object, attribute: attrs.Attribute[str], value: object) -> None:
    check_image_url(value, field=attribute.name)


def check_scale(value: object) -> None:
    """Raise `InvalidRequestError` unless `value` is an int in {1, 2, 3, 4} (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequestError(
            f"scale must be an int, one of {ALLOWED_SCALES}; got {type(value).__name__} {value!r}"
        )
    if value not in ALLOWED_SCALES:
        raise InvalidRequestError(f"scale must be one of {ALLOWED_SCALES}; got {value!r}")


def check_face_enhance(value: object) -> None:
    """Raise `InvalidRequestError` unless `value` is a bool."""
    if not isinstance(value, bool):
        raise InvalidRequestError(
            f"face_enhance must be a bool (True or False); got {type(value).__name__} {value!r}"
        )


@attrs.frozen
class UpscaleRequest:
    """One image to upscale, checked before any money is spent.

    Args:
        image: Absolute http(s) URL of the input, with a host and no credentials.
        scale: Upscaling factor, an `int` in {1, 2, 3, 4}.
        face_enhance: Apply GFPGAN face enhancement (for real faces, not anime).

    Raises:
        InvalidRequestError: Any field is of the wrong type or value; the
            message says what was given and what is allowed.
    """

    image: str = attrs.field(validator=_check_image)
    scale: int = attrs.field(default=4, validator=lambda _, __, value: check_scale(value))
    face_enhance: bool = attrs.field(
        default=False, validator=lambda _, __, value: check_face_enhance(value)
    )

    def to_json(self) -> dict[str, Any]:
        """The submit body, as the gateway documents it."""
        return {"image": self.image, "scale": self.scale, "face_enhance": self.face_enhance}


@attrs.frozen
class Job:
    """A submitted job: paid for, identified by its `request_id`."""

    request_id: str
    status: Status
    polling_url: str | None = None

    @classmethod
    def from_json(cls, data: object) -> Job:
        """Build from a submit answer.

        Raises:
            ResponseValidationError: A required field is missing or malformed.
        """
        body = _as_mapping(data, "submit response")
        return cls(
            request_id=_identifier(body, "request_id"),
            status=_status(body),
            polling_url=_optional_url(body, "polling_url"),
        )


@attrs.frozen
class JobState:
    """What the gateway says of a job at one moment (a status answer or a webhook body)."""

    request_id: str
    status: Status
    model_id: str | None = None
    error: str | None = None
    media_urls: tuple[str, ...] = ()
    media_type: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    completed_at: datetime | None = None

    @property
    def media_url(self) -> str | None:
        """The first output URL, if any (the gateway returns one image per job)."""
        return self.media_urls[0] if self.media_urls else None

    @classmethod
    def from_json(cls, data: object) -> JobState:
        """Build from a status answer or a webhook body; unknown extra fields are ignored.

        Raises:
            ResponseValidationError: A required field is missing, a field has the
                wrong type, or the status is unknown; the message names the field.
        """
        body = _as_mapping(data, "status response")
        output = body.get("output")
        media_urls: tuple[str, ...] = ()
        media_type = None
        if output is not None:
            out = _as_mapping(output, "field 'output'")
            urls = out.get("media_url", [])
            if isinstance(urls, str):  # tolerate a single URL where a list is documented
                urls = [urls]
            if not isinstance(urls, list) or not all(isinstance(url, str) for url in urls):
                raise ResponseValidationError(
                    f"field 'output.media_url' must be a list of URLs, got {_shown(urls)}"
                )
            if len(urls) > MAX_MEDIA_URLS:
                raise ResponseValidationError(
                    f"field 'output.media_url' holds {len(urls)} URLs; at most "
                    f"{MAX_MEDIA_URLS} are allowed"
                )
            media_urls = tuple(_url(url, "output.media_url") for url in urls)
            media_type = _optional_str(out, "media_type", prefix="output.")
            if media_type is not None and (
                len(media_type) > MAX_ID_LENGTH or not media_type.isprintable()
            ):
                raise ResponseValidationError(
                    f"field 'output.media_type' must be a media type of at most {MAX_ID_LENGTH} "
                    f"printable characters, got {_shown(media_type)}"
                )
        error = _optional_str(body, "error")
        if error is not None and len(error) > MAX_ERROR_LENGTH:
            error = error[:MAX_ERROR_LENGTH] + "… (cut)"
        return cls(
            request_id=_identifier(body, "request_id"),
            status=_status(body),
            model_id=_optional_identifier(body, "model_id"),
            error=error,
            media_urls=media_urls,
            media_type=media_type,
            created_at=_optional_time(body, "created_at"),
            updated_at=_optional_time(body, "updated_at"),
            completed_at=_optional_time(body, "completed_at"),
        )

    def to_json(self) -> dict[str, Any]:
        """This state as the gateway's status JSON: `from_json` reads it back equal."""
        body: dict[str, Any] = {
            "request_id": self.request_id,
            "status": self.status.value,
            "model_id": self.model_id,
            "error": self.error,
            "output": {"media_url": list(self.media_urls), "media_type": self.media_type}
            if self.media_urls
            else None,
        }
        for name in ("created_at", "updated_at", "completed_at"):
            value = getattr(self, name)
            body[name] = None if value is None else value.isoformat()
        return body


#: How a wait on a job ends: its terminal state, or the error that ended the wait
#: (a timeout, a key refused, an unknown id, the client closing).
Resolution = JobState | BaseException


def unwrap(resolution: Resolution) -> JobState:
    """Return a COMPLETED state; raise the matching error for anything else."""
    if isinstance(resolution, BaseException):
        raise resolution
    if resolution.status is Status.COMPLETED:
        return resolution
    error_cls = JobFailedError if resolution.status is Status.FAILED else JobSystemError
    raise error_cls(resolution.request_id, resolution.status, resolution.error)


@attrs.frozen
class Outcome:
    """What `upscale_many` yields: one per input, whether it worked or not.

    Attributes:
        index: Position of the input in the caller's iterable.
        request: The validated request, or None when the input was rejected.
        result: The COMPLETED state, or None.
        error: Why there is no result, or None.
        request_id: The job's id once it was submitted (it was paid for), else None.
        resumed: True when a journal says an earlier run submitted this input:
            its job was polled again, or its recorded outcome is yielded again.
        saved_to: Where an earlier run saved the output, as recorded with
            `UpscaleRun.mark_saved`; None when it was not saved.
        earlier_request_ids: The jobs of this input that ended ERROR (not
            charged) and were resubmitted, oldest first; `request_id` is the
            last attempt's.
    """

    index: int
    request: UpscaleRequest | None
    result: JobState | None = None
    error: BaseException | None = None
    request_id: str | None = None
    resumed: bool = False
    saved_to: str | None = None
    earlier_request_ids: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when the job COMPLETED and `result` holds its state."""
        return self.result is not None and self.error is None

    @property
    def state(self) -> JobState:
        """The COMPLETED state, typed as never None: use it once `ok` is True.

        Raises:
            BaseException: The outcome's `error` (the job failed, ended ERROR,
                timed out, or the input was rejected), when it is not `ok`.
        """
        if self.error is not None:
            raise self.error
        if self.result is None:  # (an outcome is built with one or the other)
            raise ValueError(f"outcome {self.index} has neither a result nor an error")
        return self.result


def _as_mapping(data: object, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ResponseValidationError(f"{what} must be a JSON object, got {type(data).__name__}")
    return data


def _required_str(body: Mapping[str, Any], field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value:
        shown = "missing" if field not in body else _shown(value)
        raise ResponseValidationError(f"field {field!r} must be a non-empty string, got {shown}")
    return value


def _optional_str(body: Mapping[str, Any], field: str, *, prefix: str = "") -> str | None:
    value = body.get(field)
    if value is None or isinstance(value, str):
        return value
    raise ResponseValidationError(
        f"field {prefix + field!r} must be a string or null, got {_shown(value)}"
    )


def _identifier(body: Mapping[str, Any], field: str) -> str:
    value = _required_str(body, field)
    check_identifier(value, field)
    return value


def _optional_identifier(body: Mapping[str, Any], field: str) -> str | None:
    value = _optional_str(body, field)
    if value is not None:
        check_identifier(value, field)
    return value


def check_identifier(value: str, field: str) -> None:
    """Refuse a gateway identifier that could steer a path, a URL or a log line.

    Raises:
        ResponseValidationError: `value` is too long, has a control character,
            a path separator or surrounding spaces, or is ``.``/``..``; the
            message names `field`.
    """
    # An id ends up in file names (download into a folder), URLs and terminal output.
    if (
        len(value) > MAX_ID_LENGTH
        or not value.isprintable()
        or value != value.strip()
        or any(sep in value for sep in _PATH_SEPARATORS)
        or value in (".", "..")
    ):
        raise ResponseValidationError(
            f"field {field!r} must be at most {MAX_ID_LENGTH} printable characters with no "
            "surrounding spaces and no path separator ('/' or '\\'), and not '.' or '..'; "
            f"got {_shown(value)}"
        )


def _optional_url(body: Mapping[str, Any], field: str) -> str | None:
    value = _optional_str(body, field)
    return None if value is None else _url(value, field)


def _url(value: str, field: str) -> str:
    try:
        return check_image_url(value, field=f"field {field!r}", max_length=MAX_GATEWAY_URL_LENGTH)
    except InvalidRequestError as exc:
        raise ResponseValidationError(str(exc)) from None


def _shown(value: object, limit: int = 80) -> str:
    """`value`'s repr, cut to `limit` characters: a hostile answer cannot flood a message."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def _status(body: Mapping[str, Any]) -> Status:
    raw = _required_str(body, "status")
    try:
        return Status(raw)
    except ValueError:
        allowed = ", ".join(status.value for status in Status)
        raise ResponseValidationError(
            f"field 'status' is {_shown(raw)}, which is not a known status ({allowed})"
        ) from None


def _optional_time(body: Mapping[str, Any], field: str) -> datetime | None:
    value = _optional_str(body, field)
    if value is None:
        return None
    try:
        return parse_timestamp(value)
    except ValueError as exc:
        raise ResponseValidationError(f"field {field!r}: {exc}") from None
