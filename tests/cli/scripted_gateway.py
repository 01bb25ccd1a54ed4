"""A gateway on respx whose every job ends as the test scripts it: hostile strings included.

The emulator is a faithful gateway; this one says what a buggy or hostile gateway
might say (control characters in an ``error``, an error text of 10,000
characters), so that the tests can check what the command prints for people.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import respx

BASE = "https://gateway.test"
SUBMIT = f"{BASE}/real-esrgan/v1/real-esrgan/generate"
STATUS_PREFIX = f"{BASE}/v2/requests/status/"


class ScriptedGateway:
    """Every job is created, then ends in `status` with `error` at its first status call.

    Args:
        router: The respx router to mount on.
        status: The terminal status of every job (``FAILED`` or ``ERROR``).
        error: Its ``error`` text, as the gateway sends it.
    """

    def __init__(self, router: respx.MockRouter, *, status: str, error: str) -> None:
        self.status = status
        self.error = error
        self.request_ids: list[str] = []
        self._numbers = itertools.count()
        router.post(SUBMIT).mock(side_effect=self._submit)
        router.get(url__startswith=STATUS_PREFIX).mock(side_effect=self._status)

    def _submit(self, request: httpx.Request) -> httpx.Response:
        request_id = f"real-esrgan_{next(self._numbers):08d}"
        self.request_ids.append(request_id)
        return httpx.Response(
            202,
            json={
                "request_id": request_id,
                "status": "QUEUED",
                "polling_url": STATUS_PREFIX + request_id,
            },
        )

    def _status(self, request: httpx.Request) -> httpx.Response:
        request_id = request.url.path.rsplit("/", 1)[1]
        return httpx.Response(
            200,
            json={
                "request_id": request_id,
                "status": self.status,
                "model_id": "real-esrgan",
                "error": self.error,
                "output": None,
                "created_at": "2026-03-31T10:00:00.000Z",
            },
        )


@contextmanager
def scripted_gateway(*, status: str = "FAILED", error: str) -> Iterator[ScriptedGateway]:
    """A `ScriptedGateway` mounted on respx at `BASE` for the block's duration."""
    with respx.mock(assert_all_called=False) as router:
        yield ScriptedGateway(router, status=status, error=error)
