"""Dropped connections: the client sees a transport error, never an HTTP status.

ASGI has no "close the socket" message. What every ASGI server does instead, when the app raises
after the response has started, is to close the connection mid-response (uvicorn: ``transport.
close()``). So a dropped submit sends a 202 status line, a Content-Length, a fragment of the
body, and raises ``DeliberateDropError``: the client reads a truncated body and raises a transport
error (httpx: ``RemoteProtocolError``). The drop looks the same whether or not the job was
created, which is the point: a client cannot tell, and must not resubmit blindly.

The server logs the exception it caught as an application error; ``DropLogFilter`` keeps these
deliberate drops (and only them) out of uvicorn's error log.
"""

from __future__ import annotations

import logging

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

__all__ = ["DeliberateDropError", "DropLogFilter", "DroppedResponse", "install_drop_log_filter"]

_FRAGMENT = b'{"request_id": "real-esrgan_'
_ANNOUNCED_LENGTH = 160


class DeliberateDropError(Exception):
    """Raised mid-response so that the server cuts the connection."""


class DroppedResponse(Response):
    """A response that starts, sends part of its body, then cuts the connection."""

    def __init__(self) -> None:
        super().__init__(status_code=202)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Start the response and abort it (see the module docstring)."""
        await send(
            {
                "type": "http.response.start",
                "status": 202,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(_ANNOUNCED_LENGTH).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": _FRAGMENT, "more_body": True})
        raise DeliberateDropError("connection dropped on purpose by the emulator")


class DropLogFilter(logging.Filter):
    """Drops the server's log records about ``DeliberateDropError``, and nothing else."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record except those whose exception is a deliberate drop."""
        exc_info = record.exc_info
        return not (exc_info and isinstance(exc_info[1], DeliberateDropError))


_FILTER = DropLogFilter()


def install_drop_log_filter() -> None:
    """Attach the filter to uvicorn's error logger (idempotent)."""
    logger = logging.getLogger("uvicorn.error")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
