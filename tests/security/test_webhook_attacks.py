"""Attacks on the webhook receiver, by whoever can reach it (and, further down, holds its token).

Each test plays one attack and states what the receiver must do instead of what it did:

- a body nested 10,000 deep: a 400 naming the bound, not a `RecursionError` (500);
- a body trickled a byte at a time: a 408 once `body_timeout` passed, not a pinned connection;
- a stream of forged PROCESSING heartbeats: throttled per job, and the safety net still finds
  the job whose real callback was lost;
- 1,000 forged COMPLETED callbacks for one running job: at most
  `MAX_CONFIRMATIONS_PER_JOB` status calls;
- a weak `webhook_secret`: refused when the client is made, without quoting it;
- uvicorn's default access log: prints the token, unless `WebhookTokenFilter` redacts it.

The receiver runs in a FastAPI app called in process (httpx's ASGI transport), or on a real
loopback socket (the h11 server of ``tests/test_webhooks_e2e.py``), in the test's own event
loop on asyncio and on trio; uvicorn (asyncio only) serves the access-log attack in a thread.
"""

from __future__ import annotations

import collections
import json
import logging
import logging.config
import re
import secrets
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
import uvicorn
import uvicorn.config
from fastapi import FastAPI
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.routing import Mount
from test_webhooks_e2e import config, scene, serving
from uvicorn.logging import AccessFormatter

import real_esrgan_async._session
from real_esrgan_async import (
    AsyncRealESRGAN,
    InvalidRequestError,
    JobState,
    PollPolicy,
    RealESRGAN,
    ResponseValidationError,
    RetryPolicy,
    Status,
    WebhookReceiver,
    WebhookTokenFilter,
    parse_webhook,
)
from real_esrgan_async._session import HEARTBEAT_MIN_GAP, MAX_CONFIRMATIONS_PER_JOB
from real_esrgan_async._webhooks import MAX_JSON_DEPTH

BASE = "https://gateway.test"
HOOK = "https://my-app.test/hooks"
IMAGE = "https://images.test/cat.png"
MEDIA = "https://cdn.test/real.png"
FAST_RETRY = RetryPolicy(base_delay=0.001, max_delay=0.002, default_cooldown=0.001)
# Every status call counted is then a confirmation: the safety net is far beyond the test.
NO_SAFETY_NET = PollPolicy(safety_net_interval=30.0, jitter=0.0)


def body(request_id: str, status: str, media: str = MEDIA) -> dict[str, Any]:
    """A callback (or status) body as the gateway documents it."""
    return {
        "request_id": request_id,
        "status": status,
        "model_id": "real-esrgan",
        "output": {"media_url": [media], "media_type": "image/png"}
        if status == "COMPLETED"
        else None,
    }


class Gateway:
    """Creates jobs on POST; answers status GETs with the status a test sets; counts them."""

    def __init__(self) -> None:
        self.jobs: dict[str, str] = {}
        self.status_calls: collections.Counter[str] = collections.Counter()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            request_id = f"real-esrgan_{len(self.jobs):04d}"
            self.jobs[request_id] = "PROCESSING"
            return httpx.Response(202, json={"request_id": request_id, "status": "QUEUED"})
        request_id = request.url.path.rpartition("/")[2]
        self.status_calls[request_id] += 1
        return httpx.Response(200, json=body(request_id, self.jobs[request_id]))


def make_client(gateway: Gateway, **options: Any) -> AsyncRealESRGAN:
    http = httpx.AsyncClient(transport=httpx.MockTransport(gateway))
    options = {"webhook_url": HOOK, "poll": NO_SAFETY_NET, "retry": FAST_RETRY, **options}
    return AsyncRealESRGAN("sk-secret-key", base_url=BASE, http_client=http, **options)


class Attacker:
    """Posts to a receiver mounted at /hooks of a FastAPI app, in process, with its token."""

    def __init__(self, receiver: WebhookReceiver, client: AsyncRealESRGAN) -> None:
        app = FastAPI()
        app.mount("/hooks", receiver)
        self.path = httpx.URL(client.webhook_callback_url()).path
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=HOOK)

    async def post(self, content: object) -> httpx.Response:
        data = content if isinstance(content, bytes) else json.dumps(content).encode()
        return await self.http.post(self.path, content=data)


@pytest.fixture
def gateway() -> Gateway:
    return Gateway()


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[AsyncRealESRGAN]:
    async with make_client(gateway) as client:
        yield client


@pytest.fixture
async def receiver(client: AsyncRealESRGAN) -> WebhookReceiver:
    return WebhookReceiver(client)


@pytest.fixture
async def attacker(receiver: WebhookReceiver, client: AsyncRealESRGAN) -> AsyncIterator[Attacker]:
    attacker = Attacker(receiver, client)
    async with attacker.http:
        yield attacker


# Deep nesting ----------------------------------------------------------------------------------


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.anyio
@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(nested(10_000), id="arrays"),
        pytest.param(b'{"a":' * 10_000 + b"1" + b"}" * 10_000, id="objects"),
        pytest.param(b"[" * 60_000, id="unclosed"),
        pytest.param(
            json.dumps(body("real-esrgan_0000", "COMPLETED"))[:-1].encode()
            + b', "extra": '
            + nested(5_000)
            + b"}",
            id="inside-a-documented-body",
        ),
    ],
)
async def test_deeply_nested_json_is_a_400_naming_the_bound_not_a_500(
    attacker: Attacker, receiver: WebhookReceiver, gateway: Gateway, payload: bytes
) -> None:
    """Parsing 10,000 levels raised RecursionError inside the app: a 500 and a traceback."""
    response = await attacker.post(payload)

    assert 400 == response.status_code
    assert f"more than {MAX_JSON_DEPTH} deep" in response.text
    assert (1, 0) == (receiver.counts["malformed"], receiver.counts["accepted"])
    assert 0 == sum(gateway.status_calls.values())


@pytest.mark.parametrize("kind", [bytes, str])
def test_parse_webhook_refuses_deep_nesting_before_parsing(kind: type[bytes | str]) -> None:
    raw = nested(100_000)
    payload = raw if kind is bytes else raw.decode()

    with pytest.raises(ResponseValidationError, match=f"more than {MAX_JSON_DEPTH} deep"):
        parse_webhook(payload, max_bytes=len(raw))


def depth_of(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((depth_of(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(item) for item in value.values()), default=0)
    return 0


# Leaves and keys full of what could fool a bracket count: brackets, quotes, backslashes.
TRICKY_TEXT = st.text(alphabet='[]{}"\\ a\u00e9\n', max_size=8)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | TRICKY_TEXT,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(TRICKY_TEXT, children, max_size=3)
    ),
    max_leaves=12,
)


@given(value=JSON_VALUES, wraps=st.lists(st.sampled_from(["list", "dict"]), max_size=40))
def test_the_depth_bound_is_exact_whatever_the_strings_contain(
    value: object, wraps: list[str]
) -> None:
    """Brackets inside strings never count; a body at the bound parses, one past it is refused
    as too deep (the parser never sees it)."""
    for wrap in wraps:
        value = [value] if wrap == "list" else {"k[": value}
    document = {"request_id": "real-esrgan_0001", "status": "PROCESSING", "x": value}
    raw = json.dumps(document).encode()

    if depth_of(document) > MAX_JSON_DEPTH:
        with pytest.raises(ResponseValidationError, match=f"more than {MAX_JSON_DEPTH} deep"):
            parse_webhook(raw, max_bytes=len(raw))
    else:
        assert "real-esrgan_0001" == parse_webhook(raw, max_bytes=len(raw)).request_id


# A trickled body ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_body_trickled_a_byte_at_a_time_is_cut_off_with_408_over_a_real_socket(
    client: AsyncRealESRGAN,
) -> None:
    """A client announcing 1,000 bytes and sending one every 50 ms would hold the connection
    (and the request's task) for 50 s; the receiver answers 408 once `body_timeout` passed,
    while the attacker is still sending."""
    receiver = WebhookReceiver(client, body_timeout=0.3)
    path = httpx.URL(client.webhook_callback_url()).path
    async with serving() as server:
        server.app = Starlette(routes=[Mount("/hooks", app=receiver)])
        port = int(server.url.rpartition(":")[2])
        with anyio.fail_after(10):
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
                await stream.send(head.encode())
                sent = 0
                answer = b""

                async def trickle() -> None:
                    nonlocal sent
                    for _ in range(1000):
                        await stream.send(b"[")
                        sent += 1
                        await anyio.sleep(0.05)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(trickle)
                    while b"\r\n\r\nbody too slow" not in answer:
                        answer += await stream.receive()
                    tg.cancel_scope.cancel()

    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"connection: close" in answer.lower()
    assert sent < 1000  # answered while the attacker was still sending
    assert (1, 0) == (receiver.counts["too_slow"], receiver.counts["accepted"])


@pytest.mark.anyio
async def test_a_stalled_body_is_408_in_process_and_a_prompt_one_is_read(
    client: AsyncRealESRGAN,
) -> None:
    """The deadline covers the whole body, not each chunk: chunks that each come in time but
    add up past it are cut off too."""
    receiver = WebhookReceiver(client, body_timeout=0.2)
    path = httpx.URL(client.webhook_callback_url()).path
    job = await client.submit(IMAGE)
    sent: list[dict[str, Any]] = []

    async def slow_receive() -> dict[str, Any]:
        await anyio.sleep(0.05)  # each chunk well within the deadline
        return {"type": "http.request", "body": b" ", "more_body": True}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    scope = {"type": "http", "method": "POST", "path": path, "headers": []}
    with anyio.fail_after(5):
        await receiver(scope, slow_receive, send)
    assert [408, b"body too slow"] == [sent[0]["status"], sent[1]["body"]]

    prompt = json.dumps(body(job.request_id, "PROCESSING")).encode()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": prompt, "more_body": False}

    sent.clear()
    await receiver(scope, receive, send)
    assert 200 == sent[0]["status"]
    assert (1, 1) == (receiver.counts["too_slow"], receiver.counts["accepted"])


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "10", True, None])
def test_body_timeout_must_be_a_positive_number(gateway: Gateway, bad: object) -> None:
    client = make_client(gateway)
    with pytest.raises(InvalidRequestError) as info:
        WebhookReceiver(client, body_timeout=bad)  # type: ignore[arg-type]

    assert f"WebhookReceiver.body_timeout must be a finite number > 0, got {bad!r}" == str(
        info.value
    )


# Forged heartbeats -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_forged_heartbeats_are_throttled_and_cannot_hide_a_job_from_the_safety_net(
    gateway: Gateway,
) -> None:
    """The job finished and its callback was lost; a forger holding the token sends PROCESSING
    for it every 5 ms. Each sign of life put the safety-net check a whole interval later, so
    the job was never found. Now at most one a `HEARTBEAT_MIN_GAP` is acted on, and the
    scheduler never puts the check past twice the interval after the last real one: the wait
    resolves with the gateway's real result."""
    interval = 0.75  # longer than the throttle's gap: throttling alone would not save it
    poll = PollPolicy(safety_net_interval=interval, safety_net_factor=1000.0, jitter=0.0)
    async with make_client(gateway, poll=poll) as client:
        receiver = WebhookReceiver(client)
        attacker = Attacker(receiver, client)
        async with attacker.http:
            job = await client.submit(IMAGE)
            gateway.jobs[job.request_id] = "COMPLETED"  # its callback never comes
            results: list[JobState] = []
            started = anyio.current_time()
            forged = 0
            async with anyio.create_task_group() as tg:

                async def forge() -> None:
                    nonlocal forged
                    while not results:  # never cancelled mid-request: it ends between two
                        response = await attacker.post(body(job.request_id, "PROCESSING"))
                        assert 200 == response.status_code
                        forged += 1
                        await anyio.sleep(0.005)

                tg.start_soon(forge)
                with anyio.fail_after(10 * interval):
                    results.append(await client.wait(job))
            elapsed = anyio.current_time() - started

    [state] = results
    assert (Status.COMPLETED, MEDIA) == (state.status, state.media_url)
    acted_on = forged - receiver.counts["throttled"]
    assert 1 <= acted_on <= 1 + elapsed / HEARTBEAT_MIN_GAP
    assert forged > acted_on
    assert gateway.status_calls[job.request_id] >= 1  # the safety net found it


@pytest.mark.anyio
async def test_forged_heartbeats_over_a_socket_cannot_hide_a_job_from_the_safety_net() -> None:
    """The same attack end to end: the emulator loses every callback, the forger POSTs
    PROCESSING over loopback to the app's socket as fast as it is answered; the job is still
    found by the safety net, at one status call."""
    async with (
        scene(config(webhook_loss_rate=1.0), safety_net_interval=0.75) as s,
        httpx.AsyncClient() as forger,
    ):
        job = await s.client.submit(s.gateway.sample_url("tiny.png"))
        url = s.client.webhook_callback_url()
        forged = 0
        results: list[JobState] = []
        async with anyio.create_task_group() as tg:

            async def forge() -> None:
                nonlocal forged
                while not results:  # never cancelled mid-request: it ends between two
                    response = await forger.post(url, json=body(job.request_id, "PROCESSING"))
                    assert 200 == response.status_code
                    forged += 1

            tg.start_soon(forge)
            with anyio.fail_after(10):
                results.append(await s.client.wait(job))
        [state] = results
        calls = s.calls_per_job()[job.request_id]

    assert Status.COMPLETED == state.status
    assert 1 == calls  # the safety net's one check: the heartbeats cost none
    assert s.receiver.counts["throttled"] > 0
    assert forged == s.receiver.counts["accepted"]


@pytest.mark.anyio
async def test_the_session_throttles_heartbeats_whichever_worker_received_them(
    client: AsyncRealESRGAN, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The throttle lives in the session, the one door every callback goes through: the
    receiver's, and those another worker relays through a shared store. Ten signs of life in a
    row for one job are acted on once (the gap is an hour: no clock decides it)."""
    monkeypatch.setattr(real_esrgan_async._session, "HEARTBEAT_MIN_GAP", 3600.0)
    job = await client.submit(IMAGE)
    relayed: collections.Counter[str] = collections.Counter()

    for _ in range(10):
        client.session().accept_callback(JobState(job.request_id, Status.PROCESSING), relayed)

    assert 9 == relayed["throttled"]


@pytest.mark.anyio
async def test_heartbeats_about_other_jobs_are_never_throttled_nor_remembered(
    attacker: Attacker, receiver: WebhookReceiver, gateway: Gateway
) -> None:
    """Ids nobody here waits on are ignored at no cost already: the throttle keeps no memory
    for them, so made-up ids cannot fill it."""
    for index in range(50):
        assert 200 == (await attacker.post(body(f"real-esrgan_x{index}", "PROCESSING"))).status_code

    assert (50, 0) == (receiver.counts["ignored"], receiver.counts["throttled"])
    assert 0 == sum(gateway.status_calls.values())


@pytest.mark.anyio
async def test_the_throttle_remembers_a_bounded_number_of_jobs(
    attacker: Attacker,
    receiver: WebhookReceiver,
    client: AsyncRealESRGAN,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Heartbeats about many jobs of ours cost memory for the most recent ones only: the
    oldest is forgotten (and its next heartbeat acted on again). The gap is made an hour
    long, so that no clock decides the outcome."""
    monkeypatch.setattr(real_esrgan_async._session, "HEARTBEAT_MEMORY", 2)
    monkeypatch.setattr(real_esrgan_async._session, "HEARTBEAT_MIN_GAP", 3600.0)
    jobs = [(await client.submit(IMAGE)).request_id for _ in range(3)]

    for request_id in [*jobs, jobs[2], jobs[0]]:
        assert 200 == (await attacker.post(body(request_id, "PROCESSING"))).status_code

    # jobs[2] again: remembered, throttled; jobs[0] again: forgotten, acted on.
    assert (5, 1) == (receiver.counts["accepted"], receiver.counts["throttled"])


# A flood of forged terminal callbacks ------------------------------------------------------------


#: Re-checks the scheduler makes after an unconfirmed terminal callback (0.5, 1, 2, 4, 4 s).
EXPECT_FINISH_CHECKS = 5


@pytest.mark.anyio
async def test_a_thousand_forged_terminal_callbacks_cost_a_bounded_number_of_status_calls(
    attacker: Attacker, receiver: WebhookReceiver, gateway: Gateway, client: AsyncRealESRGAN
) -> None:
    """Each forged COMPLETED for a job that still runs asked for a confirming status call;
    duplicates are coalesced and the job's confirmations are capped, so 1,000 of them cost at
    most `MAX_CONFIRMATIONS_PER_JOB` calls, and never resolve the wait with the forged URL."""
    job = await client.submit(IMAGE)
    results: list[JobState] = []
    async with anyio.create_task_group() as tg:

        async def wait() -> None:
            results.append(await client.wait(job))

        tg.start_soon(wait)
        forged = body(job.request_id, "COMPLETED", media="https://evil.test/x.png")
        for _ in range(1000):
            assert 200 == (await attacker.post(forged)).status_code
            # A call in process may never yield; over a network the client's tasks run
            # between requests.
            await anyio.lowlevel.checkpoint()
        for _ in range(5):
            await anyio.wait_all_tasks_blocked()
        calls_during_the_flood = gateway.status_calls[job.request_id]
        assert [] == results
        tg.cancel_scope.cancel()

    # Each confirmation that finds the job running asks the scheduler for its few quick
    # re-checks (the gateway may lag its own callback): still a bound, whatever the flood.
    assert MAX_CONFIRMATIONS_PER_JOB <= calls_during_the_flood
    assert calls_during_the_flood <= MAX_CONFIRMATIONS_PER_JOB * (1 + EXPECT_FINISH_CHECKS)
    counts = receiver.counts
    assert (1000, MAX_CONFIRMATIONS_PER_JOB) == (counts["accepted"], counts["confirmations"])


# Weak secrets ------------------------------------------------------------------------------------

WEAK_SECRETS = [
    pytest.param("s" * 30, "all its characters are lowercase letters", id="one-letter"),
    pytest.param("12345678901234567890123", "all its characters are digits", id="digits"),
    pytest.param("abcdefghijklmnopqrstuvwxyz", "lowercase letters", id="alphabet"),
    pytest.param("aB" * 12, "only 2 different characters", id="two-chars"),
    pytest.param("aB1-" * 6, "only 4 different characters", id="four-chars"),
    pytest.param("x" * 20 + "Yz12345-_", "one character fills 20 of its 29", id="mostly-one"),
]


@pytest.mark.parametrize(("secret", "reason"), WEAK_SECRETS)
@pytest.mark.parametrize("client_class", [AsyncRealESRGAN, RealESRGAN])
def test_a_weak_webhook_secret_is_refused_without_being_quoted(
    client_class: type[AsyncRealESRGAN | RealESRGAN], secret: str, reason: str
) -> None:
    """A long secret can still be guessed: `"s" * 30` passed the length check."""
    with pytest.raises(InvalidRequestError) as info:
        client_class("key", webhook_url=HOOK, webhook_secret=secret)

    message = str(info.value)
    assert message.startswith("webhook_secret looks weak: ")
    assert (True, True) == (reason in message, "secrets.token_urlsafe(32)" in message)
    assert secret not in message


@pytest.mark.parametrize(("make", "size"), [(secrets.token_urlsafe, 16), (secrets.token_hex, 16)])
def test_random_secrets_of_128_bits_are_accepted(make: Any, size: int) -> None:
    for _ in range(200):
        secret = make(size)
        client = RealESRGAN("key", webhook_url=HOOK, webhook_secret=secret)
        assert f"{HOOK}/{secret}" == client.webhook_callback_url()


# The token in access logs ------------------------------------------------------------------------


@pytest.fixture
def uvicorn_access_records(caplog: pytest.LogCaptureFixture) -> Iterator[Any]:
    """Serve an app in uvicorn (in a thread, on 127.0.0.1) and return what its access log got.

    Yields a function: `serve(app, path)` POSTs once to `path` and returns the access-log
    lines uvicorn wrote for it, formatted by uvicorn's own `AccessFormatter`.
    """

    def serve(app: Any, path: str) -> list[str]:
        caplog.clear()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_config=None, lifespan="off", ws="none", http="h11"
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            for _ in range(500):
                if server.started:
                    break
                threading.Event().wait(0.01)
            port = server.servers[0].sockets[0].getsockname()[1]
            response = httpx.post(f"http://127.0.0.1:{port}{path}", content=b"{}")
            assert 503 == response.status_code  # the client is not open: any answer is logged
        finally:
            server.should_exit = True
            thread.join(10)
        formatter = AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s')
        return [formatter.format(r) for r in caplog.records if r.name == "uvicorn.access"]

    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        yield serve


def test_uvicorns_access_log_prints_the_token_unless_the_filter_redacts_it(
    uvicorn_access_records: Any,
) -> None:
    client = AsyncRealESRGAN("key", webhook_url=HOOK)
    token = client.webhooks.token
    path = httpx.URL(client.webhook_callback_url()).path
    app = Starlette(routes=[Mount("/hooks", app=WebhookReceiver(client))])

    [plain] = uvicorn_access_records(app, path)
    assert f'"POST /hooks/{token} HTTP/1.1" 503' in plain  # the attack: the log has it

    access = logging.getLogger("uvicorn.access")
    log_filter = WebhookTokenFilter(client)
    access.addFilter(log_filter)
    try:
        [redacted] = uvicorn_access_records(app, path)
    finally:
        access.removeFilter(log_filter)

    assert token not in redacted
    assert '"POST /hooks/*** HTTP/1.1" 503' in redacted
    assert token not in repr(log_filter)


def test_the_filter_redacts_messages_tuples_and_mappings_and_keeps_every_record() -> None:
    client = AsyncRealESRGAN("key", webhook_url=HOOK)
    token = client.webhooks.token
    log_filter = WebhookTokenFilter(client)
    records = [
        logging.LogRecord("x", logging.INFO, __file__, 1, f"got /h/{token}", None, None),
        logging.LogRecord("x", logging.INFO, __file__, 1, "%s %d", (f"/h/{token}?q", 7), None),
        logging.LogRecord("x", logging.INFO, __file__, 1, "%(p)s", ({"p": f"/{token}"},), None),
    ]

    assert [True, True, True] == [log_filter.filter(record) for record in records]
    assert ["got /h/***", "/h/***?q 7", "/***"] == [r.getMessage() for r in records]


def test_the_readme_filter_snippet_redacts_and_survives_uvicorns_logging_setup() -> None:
    """The README's snippet adds the filter in the app's lifespan, after uvicorn configured
    its logging; the record of a callback is then printed without the token."""
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Keep the token out of access logs", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None
    client = AsyncRealESRGAN("key", webhook_url=HOOK)
    names = ("uvicorn", "uvicorn.error", "uvicorn.access")
    saved = {
        name: (lg.handlers[:], lg.filters[:], lg.level, lg.propagate)
        for name in names
        for lg in [logging.getLogger(name)]
    }
    try:
        namespace: dict[str, Any] = {}
        exec(match.group(1), namespace)
        logging.config.dictConfig(uvicorn.config.LOGGING_CONFIG)  # uvicorn starts...
        namespace["redact_token"](client)  # ...then the app's lifespan adds the filter
        url = client.webhook_callback_url()
        record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, "%s", (url,), None)
        assert logging.getLogger("uvicorn.access").filter(record)
    finally:
        for name, (handlers, filters, level, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers[:], logger.filters[:] = handlers, filters
            logger.setLevel(level)
            logger.propagate = propagate

    assert f"{HOOK}/***" == record.getMessage()
