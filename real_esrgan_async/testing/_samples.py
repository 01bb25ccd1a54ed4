"""Sample inputs the emulator serves at ``/samples/<name>``, and their index at ``/samples/``.

Bundled samples are small files shipped in ``samples/``. Failure samples are made on request:
``oversized.png`` (1080x2400, over the model's pixel limit) and ``corrupt.png`` (a PNG
signature followed by bytes that are not an image); any other name, ``missing.png`` included,
is a 404. ``FAILURE_SAMPLES`` says what each failure sample makes a job do, in words a banner
or a test report can print.
"""

from __future__ import annotations

import functools
import importlib.resources
import types
from collections.abc import Mapping
from typing import Any

from ._samples_gen import BUNDLED, draw_oversized_png

__all__ = [
    "FAILURE_SAMPLES",
    "SAMPLE_NAMES",
    "load_sample",
    "media_type_of",
    "sample_index",
    "sample_url",
]

SAMPLE_NAMES: tuple[str, ...] = tuple(sorted(BUNDLED))
#: Failure sample name -> what a job on it does (the texts are the job's ``error``'s gist).
FAILURE_SAMPLES: Mapping[str, str] = types.MappingProxyType(
    {
        "corrupt.png": "FAILED: not a decodable image ('NoneType' object has no attribute 'shape')",
        "missing.png": "FAILED: the download answers 404",
        "oversized.png": "FAILED: 1080x2400, over the 2,096,704-pixel limit",
    }
)

# Looks like a PNG to anything that sniffs the first bytes; no decoder can read it.
_CORRUPT = b"\x89PNG\r\n\x1a\n" + b"this is not image data, only the signature is real\n" * 4


@functools.cache
def _oversized() -> bytes:
    return draw_oversized_png()


@functools.cache
def _bundled(name: str) -> bytes:
    return (
        importlib.resources.files("real_esrgan_async.testing")
        .joinpath("samples", name)
        .read_bytes()
    )


def load_sample(name: str) -> bytes | None:
    """The bytes of sample ``name``, or None if there is no such sample.

    Blocking (reads a file or draws an image the first time): call it from a worker thread.
    """
    if name in BUNDLED:
        return _bundled(name)
    if name == "oversized.png":
        return _oversized()
    if name == "corrupt.png":
        return _CORRUPT
    return None


def media_type_of(name: str) -> str:
    """The Content-Type a sample is served with."""
    return "image/jpeg" if name.endswith((".jpg", ".jpeg")) else "image/png"


def sample_url(base_url: str, name: str) -> str:
    """Where the emulator at ``base_url`` serves sample ``name``."""
    return f"{base_url.rstrip('/')}/samples/{name}"


def sample_index(base_url: str) -> dict[str, Any]:
    """The JSON body of ``GET /samples/``: every sample's name, URL and what a job on it does.

    Args:
        base_url: Scheme and authority the index was asked on.

    Returns:
        ``{"samples": [...], "failure_samples": [...]}``, each entry a ``name``, a ``url`` and,
        for failure samples, ``outcome``.
    """
    return {
        "samples": [
            {"name": name, "url": sample_url(base_url, name), "media_type": media_type_of(name)}
            for name in SAMPLE_NAMES
        ],
        "failure_samples": [
            {"name": name, "url": sample_url(base_url, name), "outcome": outcome}
            for name, outcome in sorted(FAILURE_SAMPLES.items())
        ],
    }
