"""The pure header reader: sizes from real Pillow-encoded files, verdicts on plain bytes."""

from __future__ import annotations

import io
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from real_esrgan_async._exceptions import InvalidRequestError
from real_esrgan_async._imagesize import PNG_SIGNATURE, NotAnImage, Size, Undetermined, probe
from real_esrgan_async._preflight import MAX_INPUT_PIXELS, judge

# Pillow format name, save options, image mode -> the kind the reader reports.
ENCODINGS = [
    ("PNG", {}, "RGB", "png"),
    ("PNG", {}, "RGBA", "png"),
    ("JPEG", {}, "RGB", "jpeg"),
    ("JPEG", {"progressive": True}, "RGB", "jpeg"),
    ("JPEG", {}, "L", "jpeg"),
    ("GIF", {}, "P", "gif"),
    ("BMP", {}, "RGB", "bmp"),
    ("WEBP", {"lossless": False}, "RGB", "webp"),  # VP8
    ("WEBP", {"lossless": True}, "RGB", "webp"),  # VP8L
    ("WEBP", {"lossless": False}, "RGBA", "webp"),  # VP8X
    ("TIFF", {}, "RGB", "tiff"),
    ("TIFF", {"compression": "tiff_lzw"}, "L", "tiff"),
]


def encode(fmt: str, options: dict[str, object], mode: str, width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize(("fmt", "options", "mode", "kind"), ENCODINGS)
def test_the_size_of_a_real_file_is_read_from_its_header(
    fmt: str, options: dict[str, object], mode: str, kind: str
) -> None:
    """Every format the gateway takes: the dimensions Pillow wrote are the ones read."""
    data = encode(fmt, options, mode, 321, 123)
    assert Size(kind, 321, 123) == probe(data, complete=True)


@settings(max_examples=40, deadline=None)
@given(
    encoding=st.sampled_from(ENCODINGS),
    width=st.integers(1, 700),
    height=st.integers(1, 700),
)
def test_any_size_in_any_format_is_read_exactly(
    encoding: tuple[str, dict[str, object], str, str], width: int, height: int
) -> None:
    """Width and height round-trip through every encoder, whatever their values."""
    fmt, options, mode, kind = encoding
    assert Size(kind, width, height) == probe(
        encode(fmt, options, mode, width, height), complete=True
    )


@settings(max_examples=60, deadline=None)
@given(encoding=st.sampled_from(ENCODINGS), cut=st.integers(0, 400))
def test_a_prefix_of_a_good_image_is_never_refused(
    encoding: tuple[str, dict[str, object], str, str], cut: int
) -> None:
    """A body read only in part (more follows) gives the size or no verdict, never a refusal."""
    fmt, options, mode, kind = encoding
    data = encode(fmt, options, mode, 40, 30)
    result = probe(data[:cut], complete=False)
    assert result in (Size(kind, 40, 30), Undetermined(kind), Undetermined("unknown"))


def test_a_jpeg_with_a_large_metadata_block_is_read_past_it() -> None:
    """The frame header after a 60 KB APP segment is reached by hopping segment lengths."""
    buffer = io.BytesIO()
    Image.new("RGB", (77, 55)).save(buffer, "JPEG", exif=b"Exif\x00\x00" + b"\x00" * 60_000)
    assert Size("jpeg", 77, 55) == probe(buffer.getvalue(), complete=True)


def test_a_jpeg_cut_before_its_frame_header_is_undetermined_then_broken() -> None:
    """More to come: no verdict. Nothing more: a broken image."""
    data = encode("JPEG", {}, "RGB", 10, 10)
    start = data[:4]  # SOI and the start of APP0
    assert Undetermined("jpeg") == probe(start, complete=False)
    assert isinstance(probe(start, complete=True), NotAnImage)


def test_the_emulators_corrupt_sample_is_not_an_image() -> None:
    """A PNG signature followed by text: no IHDR, so no decoder can read it."""
    data = PNG_SIGNATURE + b"this is not image data, only the signature is real\n" * 4
    assert NotAnImage("a broken PNG header: its first chunk is not IHDR") == probe(
        data, complete=True
    )


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not a PNG, JPEG, GIF, BMP, WebP or TIFF image (it is empty)"),
        (
            b"<!doctype html><html>",
            "not a PNG, JPEG, GIF, BMP, WebP or TIFF image (it starts with b'<!doctyp')",
        ),
        (
            PNG_SIGNATURE + struct.pack(">I4sII", 13, b"IHDR", 0, 5) + b"\x08\x02\x00\x00\x00",
            "a PNG header that says 0x5",
        ),
        (
            b"\xff\xd8\xff\xda\x00\x08",
            "a broken JPEG header: its scan (or its end) comes before any frame header",
        ),
        (
            b"RIFF\x00\x00\x00\x00WEBPXXXX" + b"\x00" * 20,
            "a broken WEBP header: an unknown first chunk b'XXXX'",
        ),
    ],
)
def test_bytes_no_decoder_reads_are_not_an_image(data: bytes, reason: str) -> None:
    """Each refusal says what was seen."""
    assert NotAnImage(reason) == probe(data, complete=True)


def test_a_png_cut_in_its_header_is_broken_only_when_nothing_follows() -> None:
    """16 bytes of a PNG: no verdict while the body goes on; broken if that is all."""
    data = encode("PNG", {}, "RGB", 5, 5)[:16]
    assert Undetermined("png") == probe(data, complete=False)
    assert NotAnImage("a PNG image cut short before its dimensions") == probe(data, complete=True)


# judge: the decision on a probe ---------------------------------------------------------


def test_an_input_at_the_limit_is_accepted_with_its_megapixels() -> None:
    """1448x1448 = 2,096,704 pixels, the model's limit exactly: accepted."""
    assert MAX_INPUT_PIXELS / 1e6 == judge(Size("png", 1448, 1448), "https://img.example/a.png")


def test_an_input_over_the_limit_is_refused_with_its_size_and_the_limit() -> None:
    """The message names the input, its size and the limit; a query string is not shown."""
    with pytest.raises(InvalidRequestError) as caught:
        judge(Size("png", 1080, 2400), "https://img.example/big.png?X-Signature=secret")
    message = str(caught.value)
    assert "1080x2400 = 2,592,000 pixels" in message
    assert "limit of 2,096,704 pixels" in message
    assert "https://img.example/big.png?<signed>" in message
    assert "secret" not in message


def test_not_an_image_is_refused_and_undetermined_is_let_through() -> None:
    """A header no decoder reads refuses; no verdict refuses nothing and gives no size."""
    with pytest.raises(InvalidRequestError, match="is a broken PNG header"):
        judge(NotAnImage("a broken PNG header"), "https://img.example/c.png")
    assert None is judge(Undetermined("jpeg"), "https://img.example/d.jpg")


@given(width=st.integers(1, 5000), height=st.integers(1, 5000))
def test_the_limit_is_on_pixels_whatever_the_shape(width: int, height: int) -> None:
    """Refused exactly when width x height exceeds the limit."""
    size = Size("png", width, height)
    try:
        accepted = judge(size, "https://img.example/x.png") == size.megapixels
    except InvalidRequestError:
        accepted = False
    assert (width * height <= MAX_INPUT_PIXELS) == accepted
