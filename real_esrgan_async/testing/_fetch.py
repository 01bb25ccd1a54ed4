"""Downloading a job's input the way the hosted model does: a plain GET that must answer 2xx.

Redirects are followed by hand, each hop's host checked (``_hosts.open_checked``): by default
the emulator fetches from loopback hosts only. The messages follow the ``requests`` library's
wording (``404 Client Error: Not Found for url: ...``), which is what a Python model server
surfaces when its download fails.
"""

from __future__ import annotations

import http

import httpx

from ._hosts import RefusedHostError, open_checked
from ._images import UnprocessableInputError

__all__ = ["fetch_input"]


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


async def fetch_input(
    client: httpx.AsyncClient, url: str, *, max_bytes: int, allow_remote_hosts: bool
) -> bytes:
    """Download ``url``.

    Args:
        client: The emulator's HTTP client (it must not follow redirects itself).
        url: The job's ``image``.
        max_bytes: Larger bodies fail the download.
        allow_remote_hosts: Fetch from (and be redirected to) any host, not only loopback.

    Returns:
        The body.

    Raises:
        UnprocessableInputError: If the URL is unreachable, answers non-2xx, is too large, or
            leads off loopback without ``allow_remote_hosts``.
    """
    try:
        response = await open_checked(
            client, client.build_request("GET", url), allow_remote_hosts=allow_remote_hosts
        )
        try:
            if not response.is_success:
                kind = "Client" if response.status_code < 500 else "Server"
                raise UnprocessableInputError(
                    f"Failed to download input image: {response.status_code} {kind} Error: "
                    f"{_reason(response.status_code)} for url: {url}"
                )
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise UnprocessableInputError(
                        f"Failed to download input image: larger than {max_bytes} bytes: {url}"
                    )
                chunks.append(chunk)
        finally:
            await response.aclose()
    except RefusedHostError as exc:
        raise UnprocessableInputError(
            "Failed to download input image: the emulator fetches from loopback hosts only "
            "(127.0.0.1, ::1, localhost; EmulatorConfig(allow_remote_hosts=True) lifts this), "
            f"refused {exc.url} for url: {url}"
        ) from None
    except httpx.HTTPError as exc:
        raise UnprocessableInputError(
            f"Failed to download input image: {type(exc).__name__}: {str(exc) or 'no details'} "
            f"for url: {url}"
        ) from None
    return b"".join(chunks)
