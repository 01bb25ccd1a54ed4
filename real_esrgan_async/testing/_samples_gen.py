"""Draws the bundled sample images (``samples/``) and the dynamic failure samples.

The bundled files are committed; this module is how they were made, and a test checks that the
committed files still decode to what it draws. Regenerate them with
``python -m real_esrgan_async.testing._samples_gen``. Drawing is deterministic (no randomness),
so the pixels never change between runs.
"""

from __future__ import annotations

import io
import math
import pathlib
from collections.abc import Callable

from PIL import Image, ImageDraw

__all__ = ["BUNDLED", "draw_oversized_png", "write_samples"]

# The dimensions of the hosted model's recorded failure (docs/gateway-model.md): 1080 wide,
# 2400 tall, RGB.
OVERSIZED_SIZE = (1080, 2400)


def _photo() -> Image.Image:
    """A landscape-like RGB scene: sky gradient, sun, hills, texture (JPEG-friendly)."""
    width, height = 128, 96
    image = Image.new("RGB", (width, height))
    pixels = image.load()
    assert pixels is not None
    for y in range(height):
        for x in range(width):
            sky = y / height
            ripple = 12 * math.sin(x / 7.0) * math.cos(y / 5.0)
            pixels[x, y] = (
                int(90 + 100 * sky + ripple) % 256,
                int(140 + 60 * sky) % 256,
                int(230 - 80 * sky - ripple) % 256,
            )
    draw = ImageDraw.Draw(image)
    draw.ellipse((88, 10, 112, 34), fill=(250, 220, 90))
    draw.polygon(
        [(0, 70), (30, 50), (70, 72), (100, 55), (128, 68), (128, 96), (0, 96)], fill=(60, 120, 50)
    )
    for i in range(0, width, 6):
        draw.line((i, 96, i + 3, 80 + (i * 7) % 12), fill=(40, 90, 35))
    return image


def _pattern() -> Image.Image:
    """Sharp RGB stripes and a checkerboard: edges show resampling artefacts."""
    image = Image.new("RGB", (128, 96), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for x in range(0, 64, 8):
        draw.rectangle((x, 0, x + 3, 47), fill=(200, 30, 30))
    for y in range(0, 48, 8):
        for x in range(64, 128, 8):
            if (x // 8 + y // 8) % 2 == 0:
                draw.rectangle((x, y, x + 7, y + 7), fill=(20, 20, 20))
    for i in range(48):
        draw.line((0, 48 + i, 127, 48 + i), fill=(i * 5, 255 - i * 5, 128))
    return image


def _logo_rgba() -> Image.Image:
    """An RGBA badge on a transparent background, with a soft-edged (semi-transparent) halo."""
    size = 96
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    pixels = image.load()
    assert pixels is not None
    centre = (size - 1) / 2
    for y in range(size):
        for x in range(size):
            distance = math.hypot(x - centre, y - centre)
            if distance < 30:
                pixels[x, y] = (30, 110, 200, 255)
            elif distance < 44:
                pixels[x, y] = (255, 160, 20, int(255 * (44 - distance) / 14))
    draw = ImageDraw.Draw(image)
    draw.rectangle((40, 30, 56, 66), fill=(255, 255, 255, 255))
    return image


def _gray() -> Image.Image:
    """An 8-bit grayscale radial gradient with rings."""
    width, height = 120, 80
    image = Image.new("L", (width, height))
    pixels = image.load()
    assert pixels is not None
    for y in range(height):
        for x in range(width):
            radius = math.hypot(x - 60, y - 40)
            pixels[x, y] = int(128 + 100 * math.cos(radius / 4.0) * math.exp(-radius / 80))
    return image


def _gray16() -> Image.Image:
    """A 16-bit grayscale ramp using the full 0-65535 range (lost if converted to 8 bits)."""
    width, height = 64, 48
    image = Image.new("I;16", (width, height))
    pixels = image.load()
    assert pixels is not None
    for y in range(height):
        for x in range(width):
            pixels[x, y] = (x * 1021 + y * 37) % 65536
    return image


def _tiny() -> Image.Image:
    """An 8x8 RGB image: the smallest sample, with four coloured quadrants."""
    image = Image.new("RGB", (8, 8))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 3, 3), fill=(255, 0, 0))
    draw.rectangle((4, 0, 7, 3), fill=(0, 255, 0))
    draw.rectangle((0, 4, 3, 7), fill=(0, 0, 255))
    draw.rectangle((4, 4, 7, 7), fill=(255, 255, 0))
    return image


# File name -> (drawing, Pillow format, save options).
BUNDLED: dict[str, tuple[Callable[[], Image.Image], str, dict[str, int]]] = {
    "photo.jpg": (_photo, "JPEG", {"quality": 85}),
    "pattern.png": (_pattern, "PNG", {"compress_level": 9}),
    "logo-rgba.png": (_logo_rgba, "PNG", {"compress_level": 9}),
    "gray.png": (_gray, "PNG", {"compress_level": 9}),
    "gray16.png": (_gray16, "PNG", {"compress_level": 9}),
    "tiny.png": (_tiny, "PNG", {"compress_level": 9}),
}


def draw_oversized_png() -> bytes:
    """A 1080x2400 RGB PNG: over the model's pixel limit, yet ~11 KB (mostly flat colour)."""
    width, height = OVERSIZED_SIZE
    image = Image.new("RGB", OVERSIZED_SIZE, (90, 120, 150))
    draw = ImageDraw.Draw(image)
    draw.rectangle((width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=(200, 80, 60))
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=9)
    return buffer.getvalue()


def write_samples(directory: pathlib.Path) -> None:
    """Write every bundled sample into ``directory``."""
    for name, (draw, fmt, options) in BUNDLED.items():
        draw().save(directory / name, fmt, **options)


if __name__ == "__main__":
    write_samples(pathlib.Path(__file__).with_name("samples"))
