"""The README's "upscale this directory" recipe runs as written, against a real S3 store."""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from s3_server import FAST_POLL, FAST_RETRY, S3Server

from real_esrgan_async import AsyncRealESRGAN, S3ImageHost
from real_esrgan_async.testing import RunningEmulator

README = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")

pytestmark = pytest.mark.anyio


def recipe() -> dict[str, Any]:
    section = README.split("## Upscale local files", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "no python example under 'Upscale local files'"
    namespace: dict[str, Any] = {}
    exec(match.group(1), namespace)
    return namespace


async def test_the_upscale_this_directory_recipe_writes_one_output_per_image_named_after_it(
    aws_env: S3Server, prefix: str, emulator: RunningEmulator, tmp_path: Path
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, size in {"beach.png": (10, 8), "cat.JPG": (6, 6), "dog.webp": (4, 9)}.items():
        fmt = {".png": "PNG", ".jpg": "JPEG", ".webp": "WEBP"}[Path(name).suffix.lower()]
        Image.new("RGB", size, (90, 60, 30)).save(photos / name, format=fmt)
    (photos / "notes.txt").write_text("not an image, and skipped by its suffix")
    upscale_directory: Callable[..., Coroutine[Any, Any, list[Path]]] = recipe()[
        "upscale_directory"
    ]
    host = S3ImageHost(aws_env.bucket, prefix, endpoint_url=aws_env.endpoint_url)
    async with AsyncRealESRGAN(
        emulator.api_key,
        base_url=emulator.base_url,
        retry=FAST_RETRY,
        poll=FAST_POLL,
        image_host=host,
    ) as client:
        written = await upscale_directory(photos, photos / "upscaled", client, jobs=2)
    out = photos / "upscaled"
    assert [out / "beach.png", out / "cat.png", out / "dog.png"] == written
    sizes = {path.name: Image.open(io.BytesIO(path.read_bytes())).size for path in written}
    assert {"beach.png": (20, 16), "cat.png": (12, 12), "dog.png": (8, 18)} == sizes
    assert 3 == emulator.emulator.stats().jobs_created
