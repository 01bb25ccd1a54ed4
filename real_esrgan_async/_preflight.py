"""Preflight: read an input's header from its own host before paying for a job on it.

A job on an input over the model's pixel limit, or on bytes no decoder can
read, ends FAILED, and FAILED is charged. `Preflight.check` reads the first
64 KiB of the image (a ranged GET; a host that ignores ranges is read that far
and the connection dropped) and refuses such an input with an
`InvalidRequestError` before the POST. What it learns otherwise, the input's
megapixels, goes to the poll scheduler.

Rules:

- The request goes to the image's URL with a client of its own: never the
  gateway's client (a caller's ``http_client`` may carry credentials), never
  the API key, no cookies kept between inputs, no redirects followed (a
  redirect to an internal host is not the library's to fetch; the gateway
  decides on it).
- Only a header that is read and judged refuses an input. A host that errors,
  redirects, times out or cannot be reached refuses nothing: the gateway,
  which fetches from elsewhere, decides (logged at DEBUG).
- The decision (`judge`) is pure; the fetch is a thin shell around it.
"""

from __future__ import annotations

import logging

import anyio
import httpx

from ._exceptions import InvalidRequestError
from ._gateway import USER_AGENT
from ._imagesize import NotAnImage, Probe, Size, probe
from ._local_images import redact

logger = logging.getLogger("real_esrgan_async")

#: The model's limit: a larger input ends FAILED (charged). See the domain notes.
MAX_INPUT_PIXELS = 2_096_704
#: Bytes read from each input: every format's size is in its first few hundred
#: bytes, except a JPEG's after a large EXIF/ICC block.
HEADER_BYTES = 64 * 1024
#: The whole preflight of one input may take this long; then the gateway decides.
DEFAULT_TIMEOUT = 5.0
#: Answers to a ranged GET after which a plain GET is tried (a host that refuses ranges).
_RANGE_REFUSED = frozenset((405, 416, 501))


def judge(result: Probe, url: str) -> float | None:
    """What the client does with an input whose header read as `result`.

    Args:
        result: What `probe` made of the header.
        url: The input's URL, for the message (its query is not shown).

    Returns:
        The input's megapixels, or None when the header said nothing certain.

    Raises:
        InvalidRequestError: The input is not a decodable image, or is over
            `MAX_INPUT_PIXELS`: a job on it would end FAILED, and be charged.
    """
    shown = redact(url)
    if isinstance(result, NotAnImage):
        raise InvalidRequestError(
            f"image {shown} is {result.reason}: a job on it would fail (and be charged); "
            "nothing was submitted"
        )
    if isinstance(result, Size):
        if result.pixels > MAX_INPUT_PIXELS:
            raise InvalidRequestError(
                f"image {shown} is {result.width}x{result.height} = {result.pixels:,} pixels, "
                f"over the model's limit of {MAX_INPUT_PIXELS:,} pixels (about 1448x1448): "
                "a job on it would fail (and be charged); resize it. Nothing was submitted"
            )
        return result.megapixels
    return None


class Preflight:
    """Reads inputs' headers from their hosts, with an HTTP client of its own.

    Args:
        timeout: Seconds one input's preflight may take in all.
        transport: For tests: the transport of the preflight's own client.
    """

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.timeout = timeout
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self._closed = False

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            # Made on first use: a client that never preflights never pays for it.
            self._http = httpx.AsyncClient(
                timeout=self.timeout,
                follow_redirects=False,
                headers={"User-Agent": USER_AGENT},
                transport=self._transport,
            )
        return self._http

    async def check(self, url: str) -> float | None:
        """Read `url`'s header and judge it (see `judge`).

        Returns:
            The input's megapixels, or None when its host could not tell.

        Raises:
            InvalidRequestError: As `judge`.
        """
        if self._closed:
            return None
        result: Probe | None = None
        with anyio.move_on_after(self.timeout):
            try:
                result = await self._read(url)
            except Exception as exc:
                # (A check the client's closing overtook finds its connections closed.)
                if not isinstance(exc, httpx.HTTPError) and not self._closed:
                    raise
                logger.debug(
                    "preflight of %s: its host could not be read (%s); the gateway decides",
                    redact(url),
                    type(exc).__name__,
                )
                return None
        if result is None:
            logger.debug("preflight of %s: no verdict; the gateway decides", redact(url))
            return None
        return judge(result, url)

    async def _read(self, url: str) -> Probe | None:
        http = self._client()
        answer = await self._get(http, url, {"Range": f"bytes=0-{HEADER_BYTES - 1}"})
        if isinstance(answer, int) and answer in _RANGE_REFUSED:
            answer = await self._get(http, url, {})
        if isinstance(answer, int):
            logger.debug(
                "preflight of %s: its host answered %d; the gateway decides", redact(url), answer
            )
            return None
        return answer

    async def _get(self, http: httpx.AsyncClient, url: str, headers: dict[str, str]) -> Probe | int:
        """The header's probe, or the status code of an answer that is not the image."""
        async with http.stream("GET", url, headers=headers) as response:
            if response.status_code not in (200, 206):
                return response.status_code
            head = bytearray()
            complete = True
            chunks = response.aiter_bytes()
            try:
                async for chunk in chunks:
                    head += chunk
                    if len(head) >= HEADER_BYTES and not response.is_closed:
                        # A host that ignored the range sends the whole image: the
                        # connection is dropped here, and the next read ends the
                        # stream's generators with an error (left suspended, trio
                        # would warn of each when it is collected).
                        complete = False
                        await response.aclose()
            except Exception as exc:
                if complete:
                    raise
                logger.debug(
                    "preflight of %s: stopped reading (%s)", redact(url), type(exc).__name__
                )
            if response.status_code == 206 and complete:
                complete = _range_was_whole(response, len(head))
            return probe(bytes(head[:HEADER_BYTES]), complete=complete)

    async def aclose(self) -> None:
        """Close the preflight's own client (idempotent); later checks decide nothing."""
        self._closed = True
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()


def _range_was_whole(response: httpx.Response, received: int) -> bool:
    """Whether a 206's body was the whole image (``Content-Range: bytes 0-N/N+1``)."""
    total = response.headers.get("Content-Range", "").rpartition("/")[2]
    return total.isdigit() and int(total) == received
