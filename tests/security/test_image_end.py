"""The pure check behind "a download is whole or refused", with plain bytes and hypothesis."""

from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from real_esrgan_async._image_end import ImageEnd, whole

FORMATS = ["PNG", "JPEG", "WEBP", "GIF"]


def encoded(fmt: str, size: tuple[int, int] = (37, 23)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (12, 140, 250)).save(buffer, fmt)
    return buffer.getvalue()


IMAGES = {fmt: encoded(fmt) for fmt in FORMATS}


def fed_in_pieces(data: bytes, cuts: list[int]) -> str | None:
    check = ImageEnd()
    start = 0
    for cut in [*sorted({min(c, len(data)) for c in cuts}), len(data)]:
        check.feed(data[start:cut])
        start = cut
    return check.verdict()


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_whole_image_is_whole(fmt: str) -> None:
    assert None is whole(IMAGES[fmt])


# Not GIF: judged by its last byte, a GIF cut after a 0x3B data byte passes (see the module).
@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
@given(data=st.data())
def test_every_strict_prefix_is_refused_however_it_arrives(fmt: str, data: st.DataObject) -> None:
    image = IMAGES[fmt]
    length = data.draw(st.integers(0, len(image) - 1), label="length")
    cuts = data.draw(st.lists(st.integers(0, length), max_size=8), label="cuts")
    assert None is not fed_in_pieces(image[:length], cuts)


@pytest.mark.parametrize("fmt", FORMATS)
@given(cuts=st.lists(st.integers(0, 2000), max_size=12))
def test_the_verdict_on_a_whole_image_does_not_depend_on_its_pieces(
    fmt: str, cuts: list[int]
) -> None:
    assert None is fed_in_pieces(IMAGES[fmt], cuts)


def test_bytes_after_a_png_end_are_ignored_as_decoders_do() -> None:
    assert None is whole(IMAGES["PNG"] + b"trailing junk")


def test_a_png_missing_only_its_final_crc_is_cut() -> None:
    assert "cut short" in str(whole(IMAGES["PNG"][:-1]))


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"", "0 bytes long, too short for an image"),
        (b"BM" + b"\0" * 60, "not a PNG, JPEG, GIF or WebP"),
        (b"<html>hello</html>", "not a PNG, JPEG, GIF or WebP"),
    ],
)
def test_what_cannot_be_framed_is_said_so(body: bytes, fragment: str) -> None:
    assert fragment in str(whole(body))
