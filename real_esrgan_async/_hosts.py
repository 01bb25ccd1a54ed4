"""Image hosts: publish a local file where the gateway can fetch it, then take it down.

The gateway takes only a URL. A caller holding a file (or bytes) needs it
published somewhere the gateway can reach, for as long as the job may wait in
the queue, and removed afterwards. An `ImageHost` does that; `S3ImageHost`
does it with the caller's own S3-compatible bucket (AWS S3, R2, MinIO,
SeaweedFS, ...) and presigned GET URLs.

The shell of this module reads files and talks to the store; what a file *is*
(its magic bytes, its object name, how a signed URL is shown) is decided in
`_local_images`.

Why obstore: it is one 5.5 MB wheel with no Python dependencies (aiobotocore
pulls botocore and aiohttp, about 20 MB), it signs URLs locally, streams
multipart uploads from a path, and its blocking calls release the GIL. Its
``*_async`` functions need a running asyncio loop (they fail on trio), so this
module calls the blocking functions in anyio worker threads, bounded by a
`CapacityLimiter`: the same code on asyncio and trio.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, runtime_checkable

import anyio
import httpx

from . import _options
from ._exceptions import ImageHostError, InvalidRequestError
from ._local_images import (
    ALLOWED_FORMATS,
    HEADER_BYTES,
    LocalImage,
    PublishedImage,
    describe,
    normalise_prefix,
    object_name,
    redact,
    sniff,
)

if TYPE_CHECKING:
    from obstore.store import S3Store

logger = logging.getLogger("real_esrgan_async.hosts")

#: Bytes hashed per read: big enough to be fast, small enough never to matter in memory.
CHUNK_BYTES = 1024 * 1024
#: How long the gateway may need the URL by default: the longest queue wait worth planning for.
DEFAULT_VALID_FOR = 900.0
#: Bytes above which an upload goes in parts, streamed from disk.
MULTIPART_CHUNK_BYTES = 8 * 1024 * 1024
_INSTALL_HINT = "pip install 'real-esrgan-async[s3]'"


@runtime_checkable
class ImageHost(Protocol):
    """Where the client publishes local images so the gateway can fetch them.

    The client checks and hashes the input itself (`inspect_local`), calls
    `publish` before the paid POST, and `retract` once the job has ended
    (never while it may still be waiting to fetch its input).
    """

    async def publish(self, image: LocalImage, *, valid_for: float) -> PublishedImage:
        """Make `image` fetchable; return a URL valid for at least `valid_for` seconds.

        Raises:
            InvalidRequestError: The host cannot keep a URL valid that long.
            ImageHostError: The upload or the signing failed.
        """
        ...

    async def retract(self, published: PublishedImage) -> None:
        """Take down what `publish` put up (best effort: it must not raise)."""
        ...


def needs_image_host(image: os.PathLike[str] | bytes) -> InvalidRequestError:
    """The error for a local input given to a client without an image host."""
    return InvalidRequestError(
        f"image {describe(image)} is a local file or bytes, and the gateway fetches "
        "only URLs: pass image_host=S3ImageHost('my-bucket', 'prefix/') to the client "
        f"({_INSTALL_HINT}) to publish local images"
    )


async def inspect_local(source: os.PathLike[str] | bytes) -> LocalImage:
    """Check that `source` is a readable image and hash it, streaming from disk.

    Runs in a worker thread: hashing a large file must not stall the event loop.

    Raises:
        InvalidRequestError: The file is missing, unreadable, or not a
            PNG/JPEG/WebP/GIF/BMP/TIFF image (judged by its first bytes).
    """
    if isinstance(source, bytes):
        return _inspect_bytes(source)
    return await anyio.to_thread.run_sync(_inspect_file, source)


def _inspect_bytes(data: bytes) -> LocalImage:
    content_type = sniff(data[:HEADER_BYTES])
    if content_type is None:
        raise InvalidRequestError(_not_an_image(describe(data), data[:HEADER_BYTES]))
    return LocalImage(data, hashlib.sha256(data).hexdigest(), len(data), content_type)


def _inspect_file(source: os.PathLike[str]) -> LocalImage:
    with _opened_image(source) as (file, header, content_type):
        digest = hashlib.sha256(header)
        size = len(header)
        while chunk := _read(source, file, CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return LocalImage(Path(source), digest.hexdigest(), size, content_type)


def check_local_file(source: os.PathLike[str]) -> str:
    """Check, from its first bytes only, that `source` is a readable image; return its type.

    For a command line that checks every file before the first job is paid for.

    Raises:
        InvalidRequestError: As `inspect_local`.
    """
    with _opened_image(source) as (_, _, content_type):
        return content_type


@contextlib.contextmanager
def _opened_image(source: os.PathLike[str]) -> Iterator[tuple[BinaryIO, bytes, str]]:
    """The open file, its header and its MIME type; every failure an `InvalidRequestError`."""
    shown = describe(source)
    try:
        file = open(source, "rb")  # noqa: SIM115 (closed below, after the caller's reads)
    except OSError as exc:
        raise InvalidRequestError(_unreadable(shown, exc)) from None
    with file:
        header = _read(source, file, HEADER_BYTES)
        content_type = sniff(header)
        if content_type is None:
            raise InvalidRequestError(_not_an_image(shown, header))
        yield file, header, content_type


def _read(source: os.PathLike[str], file: BinaryIO, size: int) -> bytes:
    try:
        return file.read(size)
    except OSError as exc:
        raise InvalidRequestError(_unreadable(describe(source), exc)) from None


def _unreadable(shown: str, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"image file {shown} does not exist"
    if isinstance(exc, IsADirectoryError):
        return f"image file {shown} is a directory; pass the image files in it"
    if isinstance(exc, PermissionError):
        return f"image file {shown} cannot be read: permission denied"
    return f"image file {shown} cannot be read: {exc.strerror or exc}"


def _not_an_image(shown: str, header: bytes) -> str:
    start = "it is empty" if not header else f"it starts with {header[:8]!r}"
    return f"image {shown} is not a {ALLOWED_FORMATS} image ({start})"


async def check_fetchable(published: PublishedImage, *, timeout: float = 10.0) -> None:
    """Fetch the first byte of a published URL, so a bad one fails before any money is spent.

    A fresh HTTP client is used: the gateway's carries the API key, which must
    never reach the store.

    Raises:
        ImageHostError: The URL answered with an error (expired, forbidden, missing)
            or could not be reached.
    """
    shown = redact(published.url)
    try:
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as http:
            response = await http.get(published.url, headers={"Range": "bytes=0-0"})
    except httpx.HTTPError as exc:
        raise ImageHostError(
            f"the published URL {shown} could not be fetched ({type(exc).__name__}); "
            "nothing was paid"
        ) from None
    if response.status_code not in (200, 206):
        raise ImageHostError(
            f"the published URL {shown} answered {response.status_code}"
            f"{_s3_error_code(response.text)}: the gateway could not fetch it either; "
            "nothing was paid (check the URL's expiry, the bucket's permissions and the clock)"
        )


async def publish_checked(host: ImageHost, local: LocalImage) -> PublishedImage:
    """Publish `local` and fetch its URL's first byte, all before paying; retracted if that fails.

    Raises:
        ImageHostError: It could not be published, or its URL could not be fetched.
    """
    published = await host.publish(local, valid_for=DEFAULT_VALID_FOR)
    try:
        await check_fetchable(published)
    except BaseException:
        await retract_shielded(host, published)
        raise
    return published


async def retract_shielded(host: ImageHost, published: PublishedImage) -> None:
    """Take `published` down; cleanup, so done even when cancelled."""
    with anyio.CancelScope(shield=True):
        await host.retract(published)


def _s3_error_code(body: str) -> str:
    """`` (AccessDenied)`` from an S3 error document, or ``""``."""
    start = body.find("<Code>")
    end = body.find("</Code>", start)
    if start < 0 or end < 0:
        return ""
    return f" ({body[start + len('<Code>') : end][:64]})"


class S3ImageHost:
    """Publish local images to an S3-compatible bucket under presigned GET URLs.

    Objects are named by the sha256 of their bytes (under `prefix`), so an
    image is uploaded once however many jobs use it, and not at all when the
    bucket already holds it (a HEAD is made first). Uploads are streamed from
    disk (in parts above 8 MB) and at most `max_concurrent_uploads` run at once.

    Credentials come from the usual AWS environment (``AWS_ACCESS_KEY_ID``,
    ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION``,
    ``AWS_ENDPOINT_URL``), the container or instance metadata, or web identity
    (obstore's chain); they are never logged or shown. Signed URLs are logged
    without their query.

    Args:
        bucket: The bucket's name.
        prefix: A key prefix for the objects, e.g. ``"real-esrgan/inputs"``.
        endpoint_url: The store's URL for non-AWS stores (MinIO, R2, ...);
            default from the environment, else AWS.
        region: The region; default from the environment.
        expires: Lifetime of each presigned URL, in seconds (at most 7 days, S3's limit).
        max_concurrent_uploads: Uploads (and HEADs) running at once.
        delete_after_use: Delete an object once no job of this host uses it
            any more. Set False to keep objects (a later run then skips the
            upload) and let a bucket lifecycle rule expire them.
        store_options: Further obstore `S3Config` settings, e.g.
            ``{"virtual_hosted_style_request": True}``.

    Raises:
        InvalidRequestError: An option is invalid, or obstore is not installed.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        expires: float = 3600.0,
        max_concurrent_uploads: int = 4,
        delete_after_use: bool = True,
        store_options: Mapping[str, Any] | None = None,
    ) -> None:
        owner = "S3ImageHost"
        if not isinstance(bucket, str) or not bucket or "/" in bucket:
            raise InvalidRequestError(
                f"{owner}.bucket must be a bucket name (no slash), got {bucket!r}"
            )
        if not isinstance(prefix, str):
            raise InvalidRequestError(f"{owner}.prefix must be a str, got {prefix!r}")
        if endpoint_url is not None and (
            not isinstance(endpoint_url, str)
            or not endpoint_url.startswith(("http://", "https://"))
        ):
            raise InvalidRequestError(
                f"{owner}.endpoint_url must be None or an http(s) URL, got {endpoint_url!r}"
            )
        if region is not None and not isinstance(region, str):
            raise InvalidRequestError(f"{owner}.region must be None or a str, got {region!r}")
        _options.number(
            owner, "expires", expires, "in [1, 604800] seconds", lambda v: 1 <= v <= 604800
        )
        _options.number(
            owner,
            "max_concurrent_uploads",
            max_concurrent_uploads,
            ">= 1",
            lambda v: v >= 1,
            kind=int,
        )
        _options.flag(owner, "delete_after_use", delete_after_use)
        _options.instance(owner, "store_options", store_options, Mapping, optional=True)
        try:
            from obstore.store import S3Store  # noqa: PLC0415 (an optional dependency)
        except ImportError:
            raise InvalidRequestError(f"S3ImageHost needs obstore: {_INSTALL_HINT}") from None
        config: dict[str, Any] = dict(store_options or {})
        if endpoint_url is not None:
            config["endpoint"] = endpoint_url
            config.setdefault("virtual_hosted_style_request", False)
        if region is not None:
            config["region"] = region
        allow_http = (endpoint_url or os.environ.get("AWS_ENDPOINT_URL", "")).startswith("http://")
        self.bucket = bucket
        self.prefix = normalise_prefix(prefix)
        self.endpoint_url = endpoint_url
        self.expires = float(expires)
        self.delete_after_use = delete_after_use
        self.max_concurrent_uploads = max_concurrent_uploads
        try:
            self._store: S3Store = S3Store(
                bucket, client_options={"allow_http": allow_http}, **config
            )
        except Exception as exc:  # noqa: BLE001 (obstore raises its own and built-in types)
            raise InvalidRequestError(f"{owner} could not be configured: {exc}") from None
        self._limiter = anyio.CapacityLimiter(max_concurrent_uploads)
        self._users: dict[str, int] = {}  # key -> live publications (same bytes, one object)
        self._key_locks: dict[str, anyio.Lock] = {}
        self.uploads = 0  # objects this host uploaded (HEAD hits and shared keys are not)

    def __repr__(self) -> str:
        return (
            f"<S3ImageHost bucket={self.bucket!r} prefix={self.prefix!r} "
            f"endpoint_url={self.endpoint_url!r}>"
        )

    async def publish(self, image: LocalImage, *, valid_for: float) -> PublishedImage:
        """Upload `image` unless the bucket holds it already; return a presigned GET URL.

        Raises:
            InvalidRequestError: `valid_for` is longer than the host's `expires`.
            ImageHostError: The store refused or could not be reached.
        """
        _options.number("publish", "valid_for", valid_for, "> 0", lambda v: v > 0)
        if valid_for > self.expires:
            raise InvalidRequestError(
                f"S3ImageHost.expires is {self.expires:g} s, but the URL must stay valid for "
                f"{valid_for:g} s (the job's wait); raise expires to at least {valid_for:g}"
            )
        key = object_name(self.prefix, image.digest, image.content_type)
        lock = self._key_locks.setdefault(key, anyio.Lock())
        async with lock:
            if self._users.get(key, 0) == 0:
                await self._upload_unless_present(key, image)
            self._users[key] = self._users.get(key, 0) + 1
        try:
            url = await anyio.to_thread.run_sync(self._sign, key)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.retract(PublishedImage("", key, image))
            raise
        logger.debug("published %s as %s", describe(image.source), redact(url))
        return PublishedImage(url, key, image)

    async def retract(self, published: PublishedImage) -> None:
        """Delete the object once no publication of this host uses it (if `delete_after_use`).

        Never raises: a failed delete is logged (the URL expires anyway).
        """
        key = published.key
        lock = self._key_locks.setdefault(key, anyio.Lock())
        with anyio.CancelScope(shield=True):  # cleanup: finish it even when cancelled
            async with lock:
                left = self._users.get(key, 0) - 1
                if left > 0:
                    self._users[key] = left
                    return
                self._users.pop(key, None)
                self._key_locks.pop(key, None)
                if not self.delete_after_use:
                    return
                try:
                    await anyio.to_thread.run_sync(self._delete, key, limiter=self._limiter)
                except Exception as exc:  # noqa: BLE001 (cleanup is best effort: the URL expires)
                    logger.warning("could not delete %s from %s: %s", key, self.bucket, exc)

    async def _upload_unless_present(self, key: str, image: LocalImage) -> None:
        try:
            present = await anyio.to_thread.run_sync(
                self._has, key, image.size, limiter=self._limiter
            )
            if present:
                logger.debug("%s is already in %s: not uploaded", key, self.bucket)
                return
            await anyio.to_thread.run_sync(self._put, key, image, limiter=self._limiter)
        except Exception as exc:  # noqa: BLE001 (obstore raises its own and built-in types)
            raise ImageHostError(
                f"could not publish {describe(image.source)} to bucket {self.bucket!r} as "
                f"{key!r}: {type(exc).__name__}: {exc}; nothing was paid"
            ) from None
        self.uploads += 1

    # Blocking calls, run in worker threads ----------------------------------------------

    def _has(self, key: str, size: int) -> bool:
        import obstore  # noqa: PLC0415 (an optional dependency)

        try:
            meta = obstore.head(self._store, key)
        except FileNotFoundError:
            return False
        # Same name, same bytes (sha256); a different size means a torn or foreign object.
        return meta["size"] == size

    def _put(self, key: str, image: LocalImage) -> None:
        import obstore  # noqa: PLC0415 (an optional dependency)

        source = image.source
        body: Path | bytes = source if isinstance(source, bytes) else Path(source)
        obstore.put(
            self._store,
            key,
            body,
            attributes={"Content-Type": image.content_type},
            chunk_size=MULTIPART_CHUNK_BYTES,
            max_concurrency=2,
        )

    def _sign(self, key: str) -> str:
        import obstore  # noqa: PLC0415 (an optional dependency)

        return obstore.sign(self._store, "GET", key, datetime.timedelta(seconds=self.expires))

    def _delete(self, key: str) -> None:
        import obstore  # noqa: PLC0415 (an optional dependency)

        obstore.delete(self._store, key)
