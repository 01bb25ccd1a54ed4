"""Whether an image body is whole: for downloads whose length nothing declared.

Rules of this module:

- Pure: no I/O, no clock. Bytes are fed in as they arrive, in pieces of any
  size; `ImageEnd.verdict` then says whether what was fed is a whole image.
- It answers only the question "was this cut short?", from each format's own
  framing: a PNG ends with its ``IEND`` chunk, a JPEG with the ``EOI`` marker,
  a GIF with its trailer, a WebP's RIFF header declares its length. It does
  not decode pixels.
- A format it cannot frame is reported as such: over a connection that
  declared no length, such a body cannot be told whole from cut.
- A GIF is judged by its last byte alone (its trailer, ``;``), so a GIF cut
  right after a data byte of that value passes (1 cut in 256). A JPEG's end
  marker cannot occur inside its compressed data (``FF`` is stuffed there), and
  a PNG or WebP is walked by its declared lengths.
"""

from __future__ import annotations

import struct

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_START = b"\xff\xd8\xff"
_JPEG_END = b"\xff\xd9"
_GIF_STARTS = (b"GIF87a", b"GIF89a")
_GIF_END = b"\x3b"
#: Bytes a JPEG or GIF may carry after its end marker (some encoders pad with these).
_PADDING = b"\x00\r\n "
_HEAD = 12  # enough to tell every format apart, and to read a WebP's length


class ImageEnd:
    """An incremental check that a PNG, JPEG, GIF or WebP body is not cut short."""

    def __init__(self) -> None:
        self._head = bytearray()  # the first bytes, until the format is known
        self._kind: str | None = None
        self._size = 0  # bytes fed so far
        self._tail = b""  # the last bytes fed (JPEG, GIF)
        # PNG: bytes to skip before the next chunk header, a partial header, IEND seen.
        self._skip = 0
        self._header = bytearray()
        self._iend = False
        self._webp_size = 0

    def feed(self, data: bytes) -> None:
        """Account for the next piece of the body."""
        if not data:
            return
        self._size += len(data)
        self._tail = (self._tail + data)[-16:]
        if self._kind is None:
            taken = _HEAD - len(self._head)
            self._head += data[:taken]
            if len(self._head) < _HEAD:
                return
            self._kind = _kind(bytes(self._head))
            if self._kind == "webp":
                self._webp_size = struct.unpack("<I", bytes(self._head[4:8]))[0] + 8
            if self._kind != "png":
                return
            self._walk_png(bytes(self._head[len(PNG_SIGNATURE) :]))
            data = data[taken:]
        if self._kind == "png":
            self._walk_png(data)

    def _walk_png(self, data: bytes) -> None:
        """Hop from chunk header to chunk header; only the headers are read."""
        view = memoryview(data)
        while view:
            if self._skip:
                step = min(self._skip, len(view))
                self._skip -= step
                view = view[step:]
                continue
            if self._iend:
                return  # whole; anything after IEND is ignored, as decoders do
            need = 8 - len(self._header)
            self._header += view[:need]
            view = view[need:]
            if len(self._header) < 8:
                return
            length, kind = struct.unpack(">I4s", bytes(self._header))
            self._header.clear()
            self._skip = length + 4  # the data, then the CRC
            self._iend = kind == b"IEND"

    def verdict(self) -> str | None:
        """None when the body fed is a whole image; otherwise why it is not (or can't be told)."""
        if self._kind is None:
            return f"the body is {self._size} bytes long, too short for an image"
        if self._kind == "unknown":
            return "the body is not a PNG, JPEG, GIF or WebP, so it cannot be checked for an end"
        if self._kind == "png":
            if not self._iend or self._skip:
                return "the PNG ends before its IEND chunk: it was cut short"
            return None
        if self._kind == "webp":
            if self._size < self._webp_size:
                return (
                    f"the WebP declares {self._webp_size} bytes but {self._size} arrived: "
                    "it was cut short"
                )
            return None
        end = _JPEG_END if self._kind == "jpeg" else _GIF_END
        if not self._tail.rstrip(_PADDING).endswith(end):
            return f"the {self._kind.upper()} has no end marker: it was cut short"
        return None


def _kind(head: bytes) -> str:
    if head.startswith(PNG_SIGNATURE):
        return "png"
    if head.startswith(_JPEG_START):
        return "jpeg"
    if head.startswith(_GIF_STARTS):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return "unknown"


def whole(data: bytes) -> str | None:
    """`ImageEnd.verdict` for a body held whole in memory."""
    check = ImageEnd()
    check.feed(data)
    return check.verdict()
