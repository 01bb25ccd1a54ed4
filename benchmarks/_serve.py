"""An ASGI app (a `WebhookReceiver`, or a stand-in load balancer) served on loopback by uvicorn.

The port is bound first, so that a client can be given its webhook URL before the app that
receives on it exists (a receiver is built from its client).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import anyio


def loopback_listener() -> tuple[socket.socket, str]:
    """A listening-to-be socket on a free loopback port, and its base URL."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    return listener, f"http://127.0.0.1:{listener.getsockname()[1]}"


@contextlib.asynccontextmanager
async def serving(app: Any, listener: socket.socket) -> AsyncIterator[None]:
    """Serve `app` on `listener` for the block (started before it runs); close it after."""
    import uvicorn  # noqa: PLC0415 - optional: only the webhook rows need it

    web = uvicorn.Server(
        uvicorn.Config(
            app, lifespan="off", access_log=False, log_level="warning", http="h11", loop="asyncio"
        )
    )
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(web.serve, [listener])
            with anyio.fail_after(10):
                while not web.started:  # noqa: ASYNC110 - uvicorn exposes only a flag
                    await anyio.sleep(0.01)
            try:
                yield
            finally:
                web.should_exit = True
    finally:
        listener.close()
