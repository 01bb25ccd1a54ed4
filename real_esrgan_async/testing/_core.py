"""The thread-safe core shared by the ASGI app (server thread) and the ``Emulator`` API (any
thread): one lock around the bookkeeping, one clock, one conversion to wall time."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from ._config import EmulatorConfig
from ._images import tiny_output_png
from ._jobs import status_body
from ._state import EmulatorState
from ._webhooks import Payload, WebhookCounter, encode_body

__all__ = ["Core"]


class Core:
    """Lock, clock and state of one emulator.

    Args:
        config: The knobs.
    """

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._tiny_output = tiny_output_png()
        self._state = EmulatorState(config, self._tiny_output)
        # Job instants are monotonic (immune to clock steps); timestamps need wall time.
        self.wall_offset = time.time() - time.monotonic()

    @staticmethod
    def now() -> float:
        """The monotonic clock every job instant is on."""
        return time.monotonic()

    @contextlib.contextmanager
    def locked(self) -> Iterator[EmulatorState]:
        """Hold the lock and hand out the state (never await while holding it)."""
        with self._lock:
            yield self._state

    def reset(self) -> None:
        """Forget every job and counter; restore the configured wallet and seed."""
        with self._lock:
            self._state = EmulatorState(self.config, self._tiny_output)

    def webhook_payload(self, request_id: str, at: float) -> Payload | None:
        """The callback of ``request_id`` describing instant ``at``; None if the job is gone."""
        with self._lock:
            job = self._state.jobs.get(request_id)
            if job is None or job.webhook_url is None:
                return None
            body = status_body(
                job,
                at,
                base_url=job.base_url,
                wall_offset=self.wall_offset,
                timestamp_format=self.config.timestamp_format,
            )
        return Payload(
            url=job.webhook_url,
            body=encode_body(body),
            terminal=body["completed_at"] is not None,
        )

    def roll(self, probability: float) -> bool:
        """Draw an injected fault of ``probability`` with the seeded generator."""
        with self._lock:
            return self._state.roll(probability)

    def uniform(self, low: float, high: float) -> float:
        """Draw a number in [low, high] with the seeded generator."""
        with self._lock:
            return self._state.fault_rng.uniform(low, high)

    def count(self, counter: WebhookCounter) -> None:
        """Increment a webhook counter."""
        with self._lock:
            counters = self._state.counters
            setattr(counters, counter, getattr(counters, counter) + 1)
