"""What a local image is, judged from its bytes: pure decisions for the image hosts.

Rules of this module: pure functions, no I/O, no anyio, no time. The shell
(`_hosts`) opens and reads the files; this module says whether the first bytes
are an image the gateway decodes, what an object holding them is called, and
how a signed URL is shown in logs.
"""

from __future__ import annotations

import os

import attrs

#: How many leading bytes `sniff` needs to recognise every format it knows.
HEADER_BYTES = 12

#: The formats the gateway decodes (OpenCV's `imread` set, minus the exotic ones), by MIME type.
ALLOWED_FORMATS = "PNG, JPEG, WebP, GIF, BMP or TIFF"

_EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "image/bmp": ".bmp",
    "image/tiff": ".tiff",
}


def sniff(header: bytes) -> str | None:
    """The MIME type the magic bytes at the start of a file announce, or None.

    Args:
        header: The file's first bytes (at least `HEADER_BYTES` when it has them).

    Returns:
        ``"image/png"``, ``"image/jpeg"``, ``"image/webp"``, ``"image/gif"``,
        ``"image/bmp"`` or ``"image/tiff"``; None for anything else.
    """
    if header.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if header.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if header.startswith(b"RIFF") and header[8:12] == b"WEBP":
        return "image/webp"
    if header.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    # "BM" alone is two printable letters; a real BMP's header also has zero reserved words.
    if header.startswith(b"BM") and len(header) >= 10 and header[6:10] == b"\x00\x00\x00\x00":
        return "image/bmp"
    if header.startswith((b"II*\x00", b"MM\x00*")):
        return "image/tiff"
    return None


def object_name(prefix: str, digest: str, content_type: str) -> str:
    """The object key for bytes whose sha256 is `digest`: the same bytes, the same key.

    Args:
        prefix: The key prefix, e.g. ``"real-esrgan/"`` (may be empty).
        digest: The hex sha256 of the bytes.
        content_type: Their MIME type, from `sniff`.
    """
    return f"{prefix}{digest}{_EXTENSIONS.get(content_type, '')}"


def normalise_prefix(prefix: str) -> str:
    """`prefix` with no leading slash and exactly one trailing slash (or empty)."""
    stripped = prefix.strip("/")
    return f"{stripped}/" if stripped else ""


def redact(url: str) -> str:
    """`url` without its query: a presigned URL's signature and credential scope are secrets."""
    base, _, query = url.partition("?")
    return f"{base}?<signed>" if query else base


#: The host of the name a journal records a local input under: ``.invalid`` is reserved
#: (RFC 2606), so the name is never fetched, and it passes `UpscaleRequest`'s checks.
IDENTITY_HOST = "local.invalid"


def identity(digest: str) -> str:
    """The stable name of local bytes whose sha256 is `digest`, for journals and outcomes.

    The URL a host publishes changes with every signature (and is a secret);
    this name changes only with the bytes: a rerun over the same files finds
    its journal entries, and a changed file is a mismatch, as a changed URL is.
    """
    return f"https://{IDENTITY_HOST}/sha256/{digest}"


def describe(source: bytes | os.PathLike[str]) -> str:
    """A short name for a local input, for error messages (never its content)."""
    if isinstance(source, bytes):
        return f"<{len(source)} bytes>"
    return repr(os.fspath(source))


@attrs.frozen
class LocalImage:
    """A local image checked and hashed, ready for an `ImageHost` to publish.

    Attributes:
        source: The file path, or the bytes themselves.
        digest: The hex sha256 of the bytes (the object's name).
        size: Its size in bytes.
        content_type: Its MIME type, from its magic bytes.
    """

    source: os.PathLike[str] | bytes = attrs.field(repr=describe)
    digest: str
    size: int
    content_type: str


@attrs.frozen
class PublishedImage:
    """A local image published by an `ImageHost`: the URL the gateway fetches.

    The URL usually carries a signature: it is left out of the repr (only its
    path shows) and must not be logged in full.

    Attributes:
        url: The URL the gateway fetches (presigned, time-limited).
        key: The host's name for the object (for `ImageHost.retract`).
        image: What was published.
    """

    url: str = attrs.field(repr=redact)
    key: str
    image: LocalImage
