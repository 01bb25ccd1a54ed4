"""Request ids: ``real-esrgan_`` followed by a time-ordered UUIDv7 (RFC 9562).

Python 3.10-3.13 have no ``uuid.uuid7``. The 12-bit ``rand_a`` field doubles as a counter
within one millisecond (RFC 9562, method 1) so that ids created in the same millisecond still
sort in creation order, as the gateway's ``019d...`` ids do.
"""

from __future__ import annotations

import random
import uuid

__all__ = ["REQUEST_ID_PREFIX", "RequestIdFactory"]

REQUEST_ID_PREFIX = "real-esrgan_"

_COUNTER_MAX = 0xFFF
# A fresh millisecond starts the counter in the lower half, leaving room to count up.
_COUNTER_SEED_BITS = 11


class RequestIdFactory:
    """Makes strictly increasing request ids from wall-clock times.

    Args:
        rng: Source of the random bits (seeded for reproducible ids).
    """

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._last_ms = -1
        self._counter = 0

    def next_id(self, wall_time: float) -> str:
        """Return the id of a request created at ``wall_time`` (seconds since the epoch)."""
        ms = int(wall_time * 1000)
        if ms > self._last_ms:
            self._counter = self._rng.getrandbits(_COUNTER_SEED_BITS)
        else:
            # Same millisecond (or the clock stepped back): count up, borrowing the next
            # millisecond when the counter is exhausted, so ids never go backwards.
            ms = self._last_ms
            self._counter += 1
            if self._counter > _COUNTER_MAX:
                ms += 1
                self._counter = self._rng.getrandbits(_COUNTER_SEED_BITS)
        self._last_ms = ms
        value = (
            (ms & ((1 << 48) - 1)) << 80
            | 0x7 << 76
            | self._counter << 64
            | 0b10 << 62
            | self._rng.getrandbits(62)
        )
        return REQUEST_ID_PREFIX + str(uuid.UUID(int=value))
