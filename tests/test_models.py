"""Inputs are checked before anything is paid; gateway answers are parsed strictly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from real_esrgan_async import (
    InvalidRequestError,
    JobState,
    ResponseValidationError,
    Status,
    UpscaleRequest,
)
from real_esrgan_async._timestamps import parse_timestamp

GOOD = "https://example.com/cat.jpg"


def test_defaults_follow_the_reference() -> None:
    assert UpscaleRequest(GOOD) == UpscaleRequest(GOOD, scale=4, face_enhance=False)
    assert {"image": GOOD, "scale": 4, "face_enhance": False} == UpscaleRequest(GOOD).to_json()


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
def test_every_documented_scale_is_accepted(scale: int) -> None:
    assert scale == UpscaleRequest(GOOD, scale=scale).scale


@pytest.mark.parametrize(
    ("scale", "expected"),
    [
        (True, "scale must be an int, one of (1, 2, 3, 4); got bool True"),
        (2.0, "scale must be an int, one of (1, 2, 3, 4); got float 2.0"),
        ("2", "scale must be an int, one of (1, 2, 3, 4); got str '2'"),
        (0, "scale must be one of (1, 2, 3, 4); got 0"),
        (8, "scale must be one of (1, 2, 3, 4); got 8"),
    ],
)
def test_a_bad_scale_says_what_was_given_and_what_is_allowed(scale: object, expected: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        UpscaleRequest(GOOD, scale=scale)  # type: ignore[arg-type]
    assert expected == str(info.value)


@pytest.mark.parametrize("face_enhance", [1, "yes", None])
def test_face_enhance_must_be_a_bool(face_enhance: object) -> None:
    with pytest.raises(InvalidRequestError, match=r"face_enhance must be a bool \(True or False\)"):
        UpscaleRequest(GOOD, face_enhance=face_enhance)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("image", "fragment"),
    [
        (123, "image must be a str URL, got int"),
        ("", "image must be an absolute http(s) URL"),
        ("/relative/cat.jpg", "must be an absolute http:// or https:// URL, got no scheme"),
        ("example.com/cat.jpg", "got no scheme"),
        ("ftp://example.com/cat.jpg", "got ftp:"),
        ("data:image/png;base64,AAAA", "got data:"),
        ("https://", "must name a valid host"),
        ("https://user:pw@example.com/cat.jpg", "must not embed credentials"),
        ("https://example.com/a cat.jpg", "no spaces or control characters"),
        ("https://example.com/" + "a" * 3000, "at most 2048 are allowed"),
    ],
)
def test_a_bad_image_url_is_refused_with_the_reason(image: object, fragment: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        UpscaleRequest(image)  # type: ignore[arg-type]
    assert fragment in str(info.value)


def test_invalid_request_error_is_both_value_and_type_error() -> None:
    """Callers can catch either built-in, whatever kind of mistake it was."""
    assert issubclass(InvalidRequestError, ValueError)
    assert issubclass(InvalidRequestError, TypeError)


def test_requests_are_frozen() -> None:
    request = UpscaleRequest(GOOD)
    with pytest.raises(AttributeError):
        request.scale = 2  # type: ignore[misc]


COMPLETED = {
    "request_id": "real-esrgan_019d0000-0000-7000-8000-000000000001",
    "status": "COMPLETED",
    "model_id": "real-esrgan",
    "error": None,
    "output": {
        "media_url": ["https://cdn.example/v1/out.png"],
        "media_type": "image/png",
    },
    "created_at": "2026-03-31T10:00:00.000Z",
    "updated_at": "2026-03-31T10:00:15.000Z",
    "completed_at": "2026-03-31 10:00:15",
    "some_future_field": {"ignored": True},
}


def test_a_completed_status_parses_with_both_timestamp_forms() -> None:
    state = JobState.from_json(COMPLETED)
    assert Status.COMPLETED == state.status
    assert ("https://cdn.example/v1/out.png",) == state.media_urls
    assert "https://cdn.example/v1/out.png" == state.media_url
    assert "image/png" == state.media_type
    assert datetime(2026, 3, 31, 10, 0, 0, tzinfo=UTC) == state.created_at
    assert datetime(2026, 3, 31, 10, 0, 15, tzinfo=UTC) == state.completed_at


def test_an_error_status_has_no_output() -> None:
    body = {
        "request_id": "r1",
        "status": "ERROR",
        "model_id": "real-esrgan",
        "error": "boom",
        "output": None,
    }
    state = JobState.from_json(body)
    assert (Status.ERROR, "boom", (), None) == (
        state.status,
        state.error,
        state.media_urls,
        state.media_url,
    )


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"request_id": None}, "field 'request_id' must be a non-empty string, got None"),
        ({"status": "DONE"}, "field 'status' is 'DONE', which is not a known status"),
        ({"error": 5}, "field 'error' must be a string or null, got 5"),
        ({"output": {"media_url": 7}}, "field 'output.media_url' must be a list of URLs"),
        ({"created_at": "yesterday"}, "field 'created_at': 'yesterday' is not a timestamp"),
    ],
)
def test_a_malformed_status_names_the_field(change: dict[str, object], fragment: str) -> None:
    with pytest.raises(ResponseValidationError) as info:
        JobState.from_json(COMPLETED | change)
    assert fragment in str(info.value)


def test_a_missing_status_field_is_named() -> None:
    body = dict(COMPLETED)
    del body["status"]
    with pytest.raises(
        ResponseValidationError, match="field 'status' must be a non-empty string, got missing"
    ):
        JobState.from_json(body)


def test_terminal_statuses() -> None:
    assert {Status.COMPLETED, Status.FAILED, Status.ERROR} == {s for s in Status if s.is_terminal}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-05-22T13:17:32.110Z", datetime(2026, 5, 22, 13, 17, 32, 110000, tzinfo=UTC)),
        ("2026-05-22 13:19:23", datetime(2026, 5, 22, 13, 19, 23, tzinfo=UTC)),
        (
            "2026-05-22T15:19:23+02:00",
            datetime(2026, 5, 22, 15, 19, 23, tzinfo=timezone(timedelta(hours=2))),
        ),
    ],
)
def test_timestamps_are_timezone_aware(text: str, expected: datetime) -> None:
    parsed = parse_timestamp(text)
    assert expected == parsed
    assert parsed.tzinfo is not None


# Gateway ids are checked for shape --------------------------------------------------------


@given(st.text(max_size=300))
def test_an_accepted_request_id_is_a_plain_bounded_printable_token(request_id: str) -> None:
    """Whatever the gateway sends, an id that gets through can steer no path or line."""
    try:
        state = JobState.from_json({"request_id": request_id, "status": "QUEUED"})
    except ResponseValidationError as exc:
        refusal = str(exc)
    else:
        refusal = ""
    if refusal:
        assert refusal.startswith("field 'request_id' must be")
        return
    accepted = state.request_id
    assert request_id == accepted
    assert 1 <= len(accepted) <= 256
    assert accepted.isprintable()
    assert accepted == accepted.strip()
    assert "/" not in accepted
    assert "\\" not in accepted
    assert accepted not in (".", "..")


def test_a_documented_request_id_is_accepted() -> None:
    rid = "real-esrgan_019dxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
    assert rid == JobState.from_json({"request_id": rid, "status": "QUEUED"}).request_id
