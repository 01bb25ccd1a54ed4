"""What the attack suite shares: a key to hunt for, a fake gateway origin, loopback servers.

Every attack talks to `AsyncRealESRGAN` through its public API, over an
`httpx.MockTransport` or a raw TCP server on 127.0.0.1 that misbehaves on purpose.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import httpx

from real_esrgan_async import AsyncRealESRGAN, PollPolicy, RetryPolicy

KEY = "sk-attack-suite-key-7f3a9c"
BASE = "https://gateway.test"
SUBMIT = f"{BASE}/real-esrgan/v1/real-esrgan/generate"
RID = "real-esrgan_019d0000-aaaa-7000-8000-000000000001"
IMAGE = "https://images.example/cat.jpg"
MEDIA = "https://cdn.example/v1/out.png"
ONE_TRY = RetryPolicy(max_attempts=1, base_delay=0.001, max_delay=0.002)
FAST_POLL = PollPolicy(initial_delay=0.01, min_interval=0.01, max_interval=0.05, jitter=0.0)

Handler = Callable[[httpx.Request], Coroutine[Any, Any, httpx.Response]]


def client_over(
    handler: Handler, *, base_url: str = BASE, **options: Any
) -> tuple[AsyncRealESRGAN, httpx.AsyncClient]:
    """A client whose every request goes to `handler`, and the httpx client under it."""
    http_options = options.pop("http_options", {})
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler), **http_options)
    options = {"retry": ONE_TRY, "poll": FAST_POLL, **options}
    return AsyncRealESRGAN(KEY, base_url=base_url, http_client=http, **options), http


def status_body(status: str = "COMPLETED", request_id: str = RID) -> dict[str, object]:
    output = {"media_url": [MEDIA], "media_type": "image/png"} if status == "COMPLETED" else None
    return {"request_id": request_id, "status": status, "error": None, "output": output}


def everything_reachable(exc: BaseException) -> str:
    """All the text an exception lets a logger or a debugger reach.

    Each exception of the chain (causes, contexts, group members) is formatted
    with the locals of every frame of its traceback (what Sentry-like tools
    record), and its attributes and its httpx request's headers, if any, added.
    """
    texts: list[str] = []
    seen: set[int] = set()
    pending = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        formatted = traceback.TracebackException(
            type(current), current, current.__traceback__, capture_locals=True
        )
        texts.extend(formatted.format())
        texts.append(repr(vars(current)))
        if isinstance(current, httpx.RequestError):
            with contextlib.suppress(RuntimeError):  # RuntimeError: no request attached
                texts.append(repr(list(current.request.headers.raw)))
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
    return "\n".join(texts)


@asynccontextmanager
async def raw_server(
    serve: Callable[[anyio.abc.SocketStream], Awaitable[None]],
) -> AsyncIterator[str]:
    """A TCP server on 127.0.0.1 running `serve` per connection; yields its base URL."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)

    async def handle(stream: anyio.abc.SocketStream) -> None:
        # The client hanging up is what these servers provoke.
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            async with stream:
                await serve(stream)

    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, handle)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            group.cancel_scope.cancel()


async def read_request_head(stream: anyio.abc.SocketStream) -> bytes:
    """Read up to the end of the request's headers (bodies here are small or absent)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive()
    return data


def split_every(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]
