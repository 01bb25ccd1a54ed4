"""Validation of a submit request: its JSON body and its webhook headers.

Rules of this module: pure functions of bytes and strings. Each failure is a ``SubmitRejectedError``
whose message says what was wrong and what is allowed; the app turns it into a 400.
"""

from __future__ import annotations

import ipaddress
import json
import math
import urllib.parse
from collections.abc import Mapping
from typing import Literal

import attrs

__all__ = [
    "CallbackMode",
    "CallbackTarget",
    "SubmitRejectedError",
    "SubmitRequest",
    "image_of",
    "megapixels_hint",
    "parse_callback_target",
    "parse_submit_body",
]

ALLOWED_SCALES = (1, 2, 3, 4)
DEFAULT_SCALE = 4
MAX_URL_LENGTH = 2048
# The query parameter of an image URL that tells an emulator not fetching inputs how large the
# input is (the real gateway never sees it: it only exists in URLs made for the emulator).
MEGAPIXELS_HINT = "emulator_megapixels"

CallbackMode = Literal["terminal", "sync"]


class SubmitRejectedError(ValueError):
    """A submit request the gateway refuses with 400 Bad Request."""


@attrs.frozen
class SubmitRequest:
    """A validated submit body."""

    image: str
    scale: int
    face_enhance: bool


@attrs.frozen
class CallbackTarget:
    """A validated ``X-Webhook-URL`` and ``X-Webhook-Mode``."""

    url: str
    mode: CallbackMode


def _load_object(raw: bytes) -> dict[str, object]:
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SubmitRejectedError(f"Request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise SubmitRejectedError(f"Request body must be a JSON object, got {type(body).__name__}")
    return body


def image_of(raw: bytes) -> str | None:
    """The ``image`` string of a body, if it has one, whether or not the rest is valid."""
    try:
        body = _load_object(raw)
    except SubmitRejectedError:
        return None
    image = body.get("image")
    return image if isinstance(image, str) else None


def _split(value: str) -> urllib.parse.SplitResult | None:
    try:
        return urllib.parse.urlsplit(value)
    except ValueError:  # e.g. an unbalanced "[" in the host
        return None


def _is_http_url(value: str) -> bool:
    parsed = _split(value)
    return parsed is not None and parsed.scheme in ("http", "https") and bool(parsed.hostname)


def parse_submit_body(raw: bytes) -> SubmitRequest:
    """Validate a ``POST .../generate`` body.

    Args:
        raw: The request body.

    Returns:
        The validated request, with defaults (``scale`` 4, ``face_enhance`` false) filled in.

    Raises:
        SubmitRejectedError: If the body is not a JSON object or a parameter is missing or invalid.
    """
    body = _load_object(raw)
    if "image" not in body:
        raise SubmitRejectedError(
            "Missing required parameter 'image' (the public URL of the input image)"
        )
    image = body["image"]
    if not isinstance(image, str):
        raise SubmitRejectedError(f"'image' must be a string (a URL), got {type(image).__name__}")
    if len(image) > MAX_URL_LENGTH or not _is_http_url(image):
        raise SubmitRejectedError(
            f"'image' must be an absolute http(s) URL of at most {MAX_URL_LENGTH} characters, "
            f"got {image[:100]!r}"
        )
    scale = body.get("scale", DEFAULT_SCALE)
    if isinstance(scale, bool) or not isinstance(scale, int) or scale not in ALLOWED_SCALES:
        raise SubmitRejectedError(f"'scale' must be an integer, one of 1, 2, 3, 4; got {scale!r}")
    face_enhance = body.get("face_enhance", False)
    if not isinstance(face_enhance, bool):
        raise SubmitRejectedError(f"'face_enhance' must be a boolean, got {face_enhance!r}")
    return SubmitRequest(image=image, scale=scale, face_enhance=face_enhance)


def _is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_callback_target(
    headers: Mapping[str, str], *, allow_http_loopback: bool
) -> CallbackTarget | None:
    """Validate the webhook headers of a submit request.

    Args:
        headers: The request headers (case-insensitive lookup).
        allow_http_loopback: Accept ``http://`` URLs whose host is loopback.

    Returns:
        The target, or None when no ``X-Webhook-URL`` was sent.

    Raises:
        SubmitRejectedError: If the URL is not an absolute https URL, or the mode is unknown.
    """
    url = headers.get("x-webhook-url")
    if url is None:
        return None
    mode = headers.get("x-webhook-mode", "terminal").strip().lower()
    if mode not in ("terminal", "sync"):
        raise SubmitRejectedError(f"X-Webhook-Mode must be 'terminal' or 'sync', got {mode!r}")
    parsed = _split(url.strip())
    host = (parsed.hostname if parsed is not None else None) or ""
    if parsed is None or not host or parsed.scheme not in ("http", "https"):
        raise SubmitRejectedError(f"X-Webhook-URL must be an absolute https URL, got {url[:100]!r}")
    if parsed.scheme == "http" and not (allow_http_loopback and _is_loopback_host(host)):
        raise SubmitRejectedError(
            f"X-Webhook-URL must use HTTPS; plain http URLs are rejected: {url!r}"
        )
    return CallbackTarget(url=url.strip(), mode="sync" if mode == "sync" else "terminal")


def megapixels_hint(image: str, *, limit: float) -> float | None:
    """The input size an ``emulator_megapixels=N`` query parameter of ``image`` states.

    Args:
        image: A validated image URL.
        limit: The largest size allowed, in megapixels.

    Returns:
        The size in megapixels, or None when the URL has no such parameter.

    Raises:
        SubmitRejectedError: If the parameter is not a number in (0, ``limit``].
    """
    parsed = _split(image)
    query = parsed.query if parsed is not None else ""
    values = urllib.parse.parse_qs(query, keep_blank_values=True).get(MEGAPIXELS_HINT)
    if not values:
        return None
    raw = values[-1]
    try:
        megapixels = float(raw)
    except ValueError:
        megapixels = math.nan
    if not (math.isfinite(megapixels) and 0 < megapixels <= limit):
        raise SubmitRejectedError(
            f"{MEGAPIXELS_HINT} in the image URL must be a number of megapixels in (0, {limit}], "
            f"got {raw[:40]!r}"
        )
    return megapixels
