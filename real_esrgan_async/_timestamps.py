"""Parsing the gateway's timestamps.

The provider's own examples mix two forms: ISO 8601 with a zone
(``2026-05-22T13:17:32.110Z``) and a space-separated form without one
(``2026-05-22 13:19:23``). A zone-less time is taken as UTC, the zone the
gateway's `Z` times are in. Every result is timezone-aware.
"""

from __future__ import annotations

from datetime import UTC, datetime


def parse_timestamp(value: str) -> datetime:
    """Parse one gateway timestamp into an aware `datetime`.

    Args:
        value: ``2026-05-22T13:17:32.110Z``, ``2026-05-22 13:19:23`` or any
            ISO 8601 form with or without an offset.

    Returns:
        The time, in UTC when no offset was given.

    Raises:
        ValueError: The string is not a timestamp.
    """
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{value!r} is not a timestamp; expected ISO 8601 such as "
            "'2026-05-22T13:17:32.110Z' or '2026-05-22 13:19:23'"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed
