"""The baselines: the gateway's API spoken with bare httpx, no library logic, one task per job.

Minimal but honest: requests share one `httpx.AsyncClient` whose pool is sized to the same
concurrency limit the library gets, a job's task submits, then sleeps and polls until the job
is terminal. Every loop is bounded (a number of polls per job).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import httpx

from ._common import STATUS_PATH, SUBMIT_PATH, Server, now

TERMINAL = frozenset(("COMPLETED", "FAILED", "ERROR"))


def http_client(connections: int, *, timeout: float = 60.0) -> httpx.AsyncClient:
    """A bare httpx client with a pool of ``connections`` (kept alive, no env proxies)."""
    return httpx.AsyncClient(
        timeout=timeout,
        trust_env=False,
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )


class BareGateway:
    """Submit and status calls over bare httpx, at most ``limit`` requests at once."""

    def __init__(self, http: httpx.AsyncClient, server: Server, limit: int) -> None:
        self.http = http
        self.server = server
        self.limiter = anyio.CapacityLimiter(limit)
        self.submit_url = server.base_url + SUBMIT_PATH
        self.status_prefix = server.base_url + STATUS_PATH
        self.headers = server.headers()
        self.status_calls = 0

    async def submit(self, index: int, extra_headers: dict[str, str] | None = None) -> str:
        """POST one job; return its ``request_id``."""
        headers = self.headers if extra_headers is None else self.headers | extra_headers
        body = {"image": self.server.image_url(index), "scale": 2}
        async with self.limiter:
            response = await self.http.post(self.submit_url, headers=headers, json=body)
        response.raise_for_status()
        request_id: str = response.json()["request_id"]
        return request_id

    async def status(self, request_id: str) -> dict[str, Any]:
        """GET one status body."""
        async with self.limiter:
            response = await self.http.get(self.status_prefix + request_id, headers=self.headers)
        self.status_calls += 1
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body


def fixed_delays(interval: float) -> Iterator[float]:
    """The provider's advice: poll every ``interval`` seconds, the first time after one interval."""
    return itertools.repeat(interval)


def backoff_delays(initial: float, factor: float, cap: float) -> Iterator[float]:
    """Per-job exponential backoff: ``initial``, then times ``factor``, capped at ``cap``."""
    delay = initial
    while True:
        yield delay
        delay = min(delay * factor, cap)


async def poll_until_terminal(
    gateway: BareGateway,
    request_id: str,
    delays: Iterator[float],
    *,
    max_polls: int,
) -> dict[str, Any] | None:
    """Sleep and poll one job until terminal; None after ``max_polls`` polls."""
    for delay in itertools.islice(delays, max_polls):
        await anyio.sleep(delay)
        body = await gateway.status(request_id)
        if body["status"] in TERMINAL:
            return body
    return None


async def task_per_job(
    gateway: BareGateway,
    index: int,
    delays: Iterator[float],
    *,
    max_polls: int,
    on_submitted: Callable[[str], None],
    on_done: Callable[[int, str, dict[str, Any] | None, float], None],
) -> None:
    """One job's whole life in its own task: submit, then sleep-and-poll until terminal."""
    request_id = await gateway.submit(index)
    on_submitted(request_id)
    body = await poll_until_terminal(gateway, request_id, delays, max_polls=max_polls)
    on_done(index, request_id, body, now())
