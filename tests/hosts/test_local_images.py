"""The pure decisions about local images: what a file is, what its object is called, what
a log line may show of a signed URL."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from real_esrgan_async import LocalImage, PublishedImage
from real_esrgan_async._local_images import (
    HEADER_BYTES,
    normalise_prefix,
    object_name,
    redact,
    sniff,
)


def encoded(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), (200, 10, 10)).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("PNG", "image/png"),
        ("JPEG", "image/jpeg"),
        ("WEBP", "image/webp"),
        ("GIF", "image/gif"),
        ("BMP", "image/bmp"),
        ("TIFF", "image/tiff"),
    ],
)
def test_sniff_recognises_each_format_the_gateway_decodes_from_real_encoder_output(
    fmt: str, expected: str
) -> None:
    assert expected == sniff(encoded(fmt)[:HEADER_BYTES])


@pytest.mark.parametrize(
    "header",
    [b"", b"hello world!", b"%PDF-1.7\n", b"BMP is not", b"RIFF\x00\x00\x00\x00WAVE", b"\x89PNG"],
)
def test_sniff_refuses_text_other_formats_and_truncated_magic(header: bytes) -> None:
    assert None is sniff(header)


@given(
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=64).filter(
        lambda t: not t.startswith(("GIF87a", "GIF89a", "RIFF"))
    )
)
def test_sniff_never_calls_printable_text_an_image(text: str) -> None:
    """Text (a list of paths passed as an image, say) is never an image, bar the two
    formats whose magic is itself printable (GIF8xa, RIFF...WEBP)."""
    assert None is sniff(text.encode("ascii")[:HEADER_BYTES])


@given(st.binary(min_size=1, max_size=256), st.binary(min_size=1, max_size=256))
def test_object_names_are_equal_exactly_when_the_bytes_are(a: bytes, b: bytes) -> None:
    """Content addressing: one object per distinct content, whatever the files are called."""
    name_a = object_name("p/", hashlib.sha256(a).hexdigest(), "image/png")
    name_b = object_name("p/", hashlib.sha256(b).hexdigest(), "image/png")
    assert (a == b) == (name_a == name_b)


def test_object_name_is_prefix_digest_and_the_format_extension() -> None:
    assert "in/abc.jpg" == object_name("in/", "abc", "image/jpeg")


@pytest.mark.parametrize(
    ("given_prefix", "expected"),
    [("", ""), ("/", ""), ("a", "a/"), ("/a/b/", "a/b/"), ("a//", "a/")],
)
def test_prefix_is_normalised_to_one_trailing_slash(given_prefix: str, expected: str) -> None:
    assert expected == normalise_prefix(given_prefix)


@given(st.text(alphabet="abcdefXYZ0123456789=&%-_", min_size=1, max_size=80))
def test_redact_drops_the_whole_query(query: str) -> None:
    url = f"https://bucket.s3.amazonaws.com/in/x.png?{query}"
    assert "https://bucket.s3.amazonaws.com/in/x.png?<signed>" == redact(url)


def test_a_published_image_repr_shows_neither_the_signature_nor_the_bytes() -> None:
    image = LocalImage(b"\x89PNG\r\n\x1a\n-secret-pixels", "d" * 64, 22, "image/png")
    published = PublishedImage(
        "http://127.0.0.1:9/b/k.png?X-Amz-Credential=AKIA&X-Amz-Signature=deadbeef", "k.png", image
    )
    shown = repr(published)
    assert "X-Amz-Signature" not in shown
    assert "AKIA" not in shown
    assert "secret-pixels" not in shown
    assert "http://127.0.0.1:9/b/k.png?<signed>" in shown
    assert "<22 bytes>" in shown


def test_a_local_image_repr_names_its_path(tmp_path: Path) -> None:
    image = LocalImage(tmp_path / "cat.png", "d" * 64, 1, "image/png")
    assert repr(str(tmp_path / "cat.png")) in repr(image)
