"""An image's width and height from its first bytes: PNG, JPEG, GIF, BMP, WebP, TIFF.

Rules of this module:

- Pure: no I/O, no clock. `probe` is given the first bytes of a body and
  whether they are the whole body (`complete`).
- It reads only headers: a PNG's ``IHDR``, a JPEG's first ``SOFn`` segment
  (hopping over the segments before it by their declared lengths), a GIF's
  logical screen, a BMP's DIB header, a WebP's ``VP8 ``/``VP8L``/``VP8X``
  chunk, a TIFF's first IFD. It decodes no pixels.
- Three answers, never an exception: a `Size`; `NotAnImage` (no known
  signature, or a header no decoder could read: a PNG without ``IHDR``, a
  zero width, a JPEG whose scan starts before any frame header); or
  `Undetermined` (the bytes end before the size, and more may follow: a JPEG
  with a large EXIF block, a TIFF whose IFD is at its end). A caller refuses
  only on the first two.
"""

from __future__ import annotations

import struct

import attrs

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers: C0-CF except DHT (C4), JPG (C8) and DAC (CC).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers with no length field: TEM, RSTn, SOI.
_STANDALONE = frozenset((0x01, *range(0xD0, 0xD8), 0xD8))
_TIFF_WIDTH, _TIFF_HEIGHT = 256, 257
_TIFF_SHORT, _TIFF_LONG = 3, 4


@attrs.frozen
class Size:
    """What the header says: the format and the image's dimensions (both > 0)."""

    kind: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        """Width times height."""
        return self.width * self.height

    @property
    def megapixels(self) -> float:
        """Pixels in millions."""
        return self.pixels / 1e6


@attrs.frozen
class NotAnImage:
    """No decoder could read an image from these bytes; `reason` says why, in words."""

    reason: str


@attrs.frozen
class Undetermined:
    """The bytes seen end before the size (and the body goes on): no verdict."""

    kind: str


Probe = Size | NotAnImage | Undetermined


class _ShortError(Exception):
    """The header is cut before what was being read."""


def probe(data: bytes, *, complete: bool) -> Probe:
    """Read the format and dimensions from the first bytes of an image.

    Args:
        data: The body's first bytes (a few KiB suffice for every format but a
            JPEG with a large metadata block before its frame header).
        complete: `data` is the whole body: a header cut short is then a
            broken image, not a reason to read more.

    Returns:
        A `Size`, `NotAnImage` or `Undetermined`; see the module docstring.
    """
    kind = _kind(data)
    if kind is None:
        if len(data) < 12 and not complete:
            return Undetermined("unknown")  # too few bytes to tell (a connection cut early)
        start = "it is empty" if not data else f"it starts with {bytes(data[:8])!r}"
        return NotAnImage(f"not a PNG, JPEG, GIF, BMP, WebP or TIFF image ({start})")
    try:
        answer = _READERS[kind](data)
    except _ShortError:
        if complete:
            return NotAnImage(f"a {kind.upper()} image cut short before its dimensions")
        return Undetermined(kind)
    except (struct.error, IndexError):  # pragma: no cover - every read is bounds-checked
        return NotAnImage(f"an unreadable {kind.upper()} header")
    if isinstance(answer, str):
        return NotAnImage(f"a broken {kind.upper()} header: {answer}")
    width, height = answer
    if width <= 0 or height <= 0:
        return NotAnImage(f"a {kind.upper()} header that says {width}x{height}")
    return Size(kind, width, height)


_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (PNG_SIGNATURE, "png"),
    (b"\xff\xd8", "jpeg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)


def _kind(data: bytes) -> str | None:
    for signature, kind in _SIGNATURES:
        if data.startswith(signature):
            return kind
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def _need(data: bytes, end: int) -> None:
    if len(data) < end:
        raise _ShortError


def _png(data: bytes) -> tuple[int, int] | str:
    _need(data, 24)
    length, chunk = struct.unpack(">I4s", data[8:16])
    if chunk != b"IHDR" or length != 13:
        return "its first chunk is not IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _gif(data: bytes) -> tuple[int, int] | str:
    _need(data, 10)
    width, height = struct.unpack("<HH", data[6:10])
    return width, height


def _bmp(data: bytes) -> tuple[int, int] | str:
    _need(data, 18)
    (header,) = struct.unpack("<I", data[14:18])
    if header == 12:  # BITMAPCOREHEADER: 16-bit unsigned sizes
        _need(data, 22)
        width, height = struct.unpack("<HH", data[18:22])
        return width, height
    if header < 40:
        return f"a DIB header of {header} bytes"
    _need(data, 26)
    width, height = struct.unpack("<ii", data[18:26])
    return width, abs(height)  # a negative height is a top-down bitmap


def _webp(data: bytes) -> tuple[int, int] | str:
    _need(data, 16)
    chunk = data[12:16]
    if chunk == b"VP8 ":
        _need(data, 30)
        if data[23:26] != b"\x9d\x01\x2a":
            return "its VP8 frame has no start code"
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":
        _need(data, 25)
        if data[20] != 0x2F:
            return "its VP8L stream has no signature"
        (bits,) = struct.unpack("<I", data[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        _need(data, 30)
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    return f"an unknown first chunk {bytes(chunk)!r}"


def _jpeg(data: bytes) -> tuple[int, int] | str:
    at = 2
    while True:
        _need(data, at + 2)
        if data[at] != 0xFF:
            return f"no marker at byte {at}"
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte before a marker
            at += 1
            continue
        if marker in _STANDALONE:
            at += 2
            continue
        if marker in (0xD9, 0xDA):
            return "its scan (or its end) comes before any frame header"
        _need(data, at + 4)
        (length,) = struct.unpack(">H", data[at + 2 : at + 4])
        if length < 2:
            return f"a segment of length {length}"
        if marker in _SOF_MARKERS:
            _need(data, at + 9)
            height, width = struct.unpack(">HH", data[at + 5 : at + 9])
            if height == 0:  # defined later by a DNL segment, after the scan
                raise _ShortError
            return width, height
        at += 2 + length


def _tiff(data: bytes) -> tuple[int, int] | str:
    order = "<" if data[:2] == b"II" else ">"
    _need(data, 8)
    (offset,) = struct.unpack(order + "I", data[4:8])
    if offset < 8:
        return f"its first IFD is at byte {offset}"
    _need(data, offset + 2)
    (count,) = struct.unpack(order + "H", data[offset : offset + 2])
    found: dict[int, int] = {}
    for entry in range(count):
        start = offset + 2 + 12 * entry
        _need(data, start + 12)
        tag, kind, _ = struct.unpack(order + "HHI", data[start : start + 8])
        if tag not in (_TIFF_WIDTH, _TIFF_HEIGHT):
            continue
        if kind == _TIFF_SHORT:
            (found[tag],) = struct.unpack(order + "H", data[start + 8 : start + 10])
        elif kind == _TIFF_LONG:
            (found[tag],) = struct.unpack(order + "I", data[start + 8 : start + 12])
        else:
            return f"tag {tag} has type {kind}"
        if len(found) == 2:
            return found[_TIFF_WIDTH], found[_TIFF_HEIGHT]
    return "its first IFD has no width or height"


_READERS = {
    "png": _png,
    "jpeg": _jpeg,
    "gif": _gif,
    "bmp": _bmp,
    "webp": _webp,
    "tiff": _tiff,
}
