"""A scriptable in-memory gateway for respx: each input URL says how its job behaves.

The path of an image URL scripts its job, e.g. ``https://img.test/ok/3.png``:

- ``ok``: COMPLETED after `checks_to_finish` status calls;
- ``fail``: FAILED; ``error``: ERROR;
- ``ambiguous``: the job is created but the POST answer is lost (read timeout);
- ``throttled``: the first POST of that input gets a 429 (no job);
- ``flaky``: the job's first status call answers 500;
- ``stuck``: never finishes.

It counts what a test asserts on: POSTs per input, jobs created, status calls,
and the peak number of jobs created and not yet reported finished to the client.
"""

from __future__ import annotations

import collections
import json
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import respx

from real_esrgan_async import AsyncRealESRGAN, PollPolicy, RetryPolicy

BASE = "https://gateway.test"
SUBMIT = f"{BASE}/real-esrgan/v1/real-esrgan/generate"
STATUS_PREFIX = f"{BASE}/v2/requests/status/"

#: Policies that make a fan-out against the fake finish in milliseconds.
FAST_RETRY = RetryPolicy(base_delay=0.001, max_delay=0.002, default_cooldown=0.001)
FAST_POLL = PollPolicy(
    initial_delay=0.002,
    min_interval=0.001,
    max_interval=0.01,
    jitter=0.0,
    max_checks_per_second=None,
)


class FakeGateway:
    def __init__(self, router: respx.MockRouter, *, checks_to_finish: int = 1) -> None:
        self.checks_to_finish = checks_to_finish
        self.posts_per_image: collections.Counter[str] = collections.Counter()
        self.jobs: dict[str, dict[str, object]] = {}
        self.status_calls = 0
        self.open_jobs = 0
        self.peak_open_jobs = 0
        self.balance: int | None = None  # jobs the wallet can still pay for; None = unlimited
        self.refuse_key = False
        router.post(SUBMIT).mock(side_effect=self._submit)
        router.get(url__startswith=STATUS_PREFIX).mock(side_effect=self._status)

    def _submit(self, request: httpx.Request) -> httpx.Response:
        if self.refuse_key:
            return httpx.Response(401, json={"error": "Unauthorized", "message": "bad key"})
        image = json.loads(request.content)["image"]
        self.posts_per_image[image] += 1
        kind = image.split("/")[3]
        if kind == "throttled" and self.posts_per_image[image] == 1:
            return httpx.Response(429, headers={"Retry-After": "0"}, json={"error": "Too Many"})
        if self.balance is not None:
            if self.balance <= 0:
                return httpx.Response(
                    402,
                    json={
                        "error": "Insufficient Balance",
                        "message": "Your wallet does not have enough balance.",
                    },
                )
            self.balance -= 1
        request_id = f"real-esrgan_{len(self.jobs):08d}"
        self.jobs[request_id] = {"image": image, "kind": kind, "checks": 0}
        if kind == "ambiguous":
            # The job exists, but its id never reaches the client: it is out of the
            # client's hands (and counted apart), so it is not an open job of the run.
            raise httpx.ReadTimeout("answer lost", request=request)
        self.open_jobs += 1
        self.peak_open_jobs = max(self.peak_open_jobs, self.open_jobs)
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
        job = self.jobs.get(request_id)
        if job is None:
            return httpx.Response(404, json={"error": "Not Found", "message": request_id})
        self.status_calls += 1
        job["checks"] = checks = int(job["checks"]) + 1  # type: ignore[call-overload]
        kind = job["kind"]
        if kind == "flaky" and checks == 1:
            return httpx.Response(500, json={"error": "Internal Server Error"})
        status = "PROCESSING"
        if kind != "stuck" and checks >= self.checks_to_finish:
            status = {"fail": "FAILED", "error": "ERROR"}.get(str(kind), "COMPLETED")
        if status != "PROCESSING" and not job.get("reported"):
            job["reported"] = True
            self.open_jobs -= 1
        return httpx.Response(200, json=self.body(request_id, status))

    @staticmethod
    def body(request_id: str, status: str) -> dict[str, object]:
        return {
            "request_id": request_id,
            "status": status,
            "model_id": "real-esrgan",
            "error": {"FAILED": "bad input", "ERROR": "CUDA out of memory"}.get(status),
            "output": {
                "media_url": [f"https://cdn.test/{request_id}.png"],
                "media_type": "image/png",
            }
            if status == "COMPLETED"
            else None,
            "created_at": "2026-03-31T10:00:00.000Z",
        }


# Fixtures for the tests that drive a client against this fake (registered in conftest.py).


@pytest.fixture
def fake() -> Iterator[FakeGateway]:
    """A fresh fake gateway, mounted on respx for the test's duration."""
    with respx.mock(assert_all_called=False) as router:
        yield FakeGateway(router)


@pytest.fixture
async def client() -> AsyncIterator[AsyncRealESRGAN]:
    """An open client on the fake gateway, with policies that finish in milliseconds."""
    async with AsyncRealESRGAN(
        "key", base_url=BASE, retry=FAST_RETRY, poll=FAST_POLL, max_connections=8
    ) as client:
        yield client
