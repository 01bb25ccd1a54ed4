"""Which hosts the emulator talks to and answers: loopback only, unless told otherwise.

The emulator accepts a published default key and fetches whatever URL a submit names, then POSTs
callbacks wherever a submit says. Reachable from a browser page (DNS rebinding: a name the
attacker controls, re-pointed at 127.0.0.1) or fed a URL by someone else, it would make requests
from the user's machine into their network. So, by default:

- outgoing requests (input downloads, webhook POSTs) go to loopback hosts only, and every
  redirect hop is checked again before it is followed (``open_checked``);
- incoming requests must name the loopback address and port the emulator serves in their
  ``Host`` header (``host_header_allowed``), which a rebound name never does.

Hosts are judged by what the URL says (a loopback literal, or ``localhost``), never by resolving
names: a name that resolves to 127.0.0.1 today may not tomorrow. URLs are parsed by httpx, the
parser of the transport that sends them, so the check and the request cannot disagree.
"""

from __future__ import annotations

import ipaddress

import httpx

__all__ = [
    "MAX_REDIRECTS",
    "RefusedHostError",
    "host_header_allowed",
    "is_loopback_host",
    "open_checked",
]

# httpx's own default for follow_redirects=True.
MAX_REDIRECTS = 20
_LOCALHOST = frozenset(("localhost", "localhost."))


class RefusedHostError(Exception):
    """An outgoing request (or one of its redirects) would leave loopback.

    Attributes:
        url: The refused URL (the redirect target when a hop was refused).
    """

    def __init__(self, url: str) -> None:
        super().__init__(f"refused to contact a non-loopback host: {url}")
        self.url = url


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (as a URL states it, IPv6 without brackets) is a loopback host.

    ``localhost``, 127.0.0.0/8, ``::1`` and IPv4-mapped loopback (``::ffff:127.0.0.1``) are;
    every other name is not, whatever it resolves to.
    """
    if host.lower() in _LOCALHOST:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def host_header_allowed(host_header: str | None, server_port: int | None) -> bool:
    """Whether an incoming request's ``Host`` names a loopback host and the port it arrived on.

    Args:
        host_header: The ``Host`` header, or None when there was none.
        server_port: The port the connection arrived on, or None when unknown (an app driven
            in-process without a server), in which case any port is accepted.

    Returns:
        True for ``127.0.0.1:8000``, ``localhost:8000``, ``[::1]:8000`` on port 8000; False for
        another name (``rebound.example:8000``), another port, or a malformed header.
    """
    if not host_header:
        return False
    if host_header.startswith("["):
        end = host_header.find("]")
        if end < 0:
            return False
        host, rest = host_header[1:end], host_header[end + 1 :]
        if rest and not rest.startswith(":"):
            return False
        port_text = rest[1:] if rest else ""
    else:
        host, _, port_text = host_header.partition(":")
    if port_text:
        if not port_text.isascii() or not port_text.isdigit():
            return False
        port = int(port_text)
    else:
        port = 80  # the emulator serves plain http
    if server_port is not None and port != server_port:
        return False
    return is_loopback_host(host)


async def open_checked(
    client: httpx.AsyncClient,
    request: httpx.Request,
    *,
    allow_remote_hosts: bool,
    max_redirects: int = MAX_REDIRECTS,
) -> httpx.Response:
    """Send ``request``, following redirects by hand and checking every hop's host.

    Args:
        client: A client that does not follow redirects itself.
        request: The first request.
        allow_remote_hosts: Let requests (and redirects) reach any host.
        max_redirects: Redirects followed before giving up.

    Returns:
        The final response, streamed: the caller reads and closes it.

    Raises:
        RefusedHostError: If the URL, or a redirect, names a non-loopback host.
        httpx.TooManyRedirects: After ``max_redirects`` redirects.
        httpx.HTTPError: If a request fails.
    """
    for _ in range(max_redirects + 1):
        if not allow_remote_hosts and not is_loopback_host(request.url.host):
            raise RefusedHostError(str(request.url))
        response = await client.send(request, stream=True)
        next_request = response.next_request
        if next_request is None:
            return response
        await response.aclose()
        request = next_request
    raise httpx.TooManyRedirects("Exceeded maximum allowed redirects.", request=request)
