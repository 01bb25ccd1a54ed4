"""What the model does to an input, reproduced with Pillow: checks, upscale, PNG output.

CPU-bound and blocking: the app runs ``upscale`` in a worker thread. Failures carry the hosted
model's own words (``docs/gateway-model.md``, "Limits and failures"), which come from OpenCV and
numpy in its predictor: an undecodable input makes ``cv2.imread`` return None, and the size
check prints the numpy shape ``(height, width[, channels])``.
"""

from __future__ import annotations

import io
import re

import attrs
from PIL import Image

__all__ = [
    "MAX_INPUT_PIXELS",
    "UNDECODABLE_MESSAGE",
    "UnprocessableInputError",
    "Upscaled",
    "oversized_message",
    "tiny_output_png",
    "upscale",
]

MAX_INPUT_PIXELS = 2_096_704
UNDECODABLE_MESSAGE = "'NoneType' object has no attribute 'shape'"

# Modes whose numpy array (as cv2.imread(IMREAD_UNCHANGED) returns it) has no channel axis.
_SINGLE_CHANNEL = frozenset(("1", "L", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"))
_SIXTEEN_BIT = frozenset(("I", "I;16", "I;16B", "I;16L", "I;16N", "F"))
_WITH_ALPHA = frozenset(("RGBA", "RGBa", "LA", "La", "PA"))
# Fast PNG compression: outputs can reach 33 megapixels and the emulator must stay responsive.
_PNG_COMPRESS_LEVEL = 1


class UnprocessableInputError(Exception):
    """The model could not process the input; ``message`` is the job's ``error``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@attrs.frozen
class Upscaled:
    """An output image and its sizes (the timing model uses the input's)."""

    png: bytes
    input_pixels: int
    output_pixels: int


def _shape(image: Image.Image) -> tuple[int, ...]:
    width, height = image.size
    if image.mode in _SINGLE_CHANNEL or (image.mode == "P" and _palette_is_gray(image)):
        return (height, width)
    if image.mode in _WITH_ALPHA or (image.mode == "P" and "transparency" in image.info):
        return (height, width, 4)
    return (height, width, 3)


def _palette_is_gray(image: Image.Image) -> bool:
    palette = image.palette
    return palette is not None and palette.mode == "L"


def oversized_message(shape: tuple[int, ...]) -> str:
    """The hosted model's message for an input over the GPU pixel limit."""
    pixels = shape[0] * shape[1]
    return (
        f"Input image of dimensions {shape} has a total number of pixels {pixels} greater than "
        f"the max size that fits in GPU memory on this hardware, {MAX_INPUT_PIXELS}. "
        "Resize input image and try again."
    )


def _open(data: bytes) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow refuses to open gigantic images (or warns, and warnings may be errors); it says
        # how many pixels, not the shape.
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        count = int(pixels.group(1)) if pixels else MAX_INPUT_PIXELS + 1
        raise UnprocessableInputError(
            f"Input image has a total number of pixels {count} greater than the max size that "
            f"fits in GPU memory on this hardware, {MAX_INPUT_PIXELS}. "
            "Resize input image and try again."
        ) from None
    except Exception:  # noqa: BLE001 - any decoder failure is what cv2.imread reports as None
        raise UnprocessableInputError(UNDECODABLE_MESSAGE) from None
    return image


def _working_mode(image: Image.Image, *, face_enhance: bool) -> Image.Image:
    """Convert to the mode the output keeps: alpha, grayscale and 16-bit are preserved."""
    mode = image.mode
    if mode in _SIXTEEN_BIT:
        converted = image if mode == "I;16" else image.convert("I;16")
    elif mode in ("1", "L"):
        converted = image.convert("L")
    elif mode in ("LA", "La"):
        converted = image.convert("LA")
    elif mode == "P":
        if _palette_is_gray(image) and "transparency" not in image.info:
            converted = image.convert("L")
        else:
            converted = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("RGBA", "RGBa", "PA"):
        converted = image.convert("RGBA")
    else:
        converted = image.convert("RGB")
    if face_enhance:
        # GFPGAN works on 3-channel images: the alpha channel is lost.
        if converted.mode == "RGBA":
            converted = converted.convert("RGB")
        elif converted.mode == "LA":
            converted = converted.convert("L")
    return converted


def upscale(data: bytes, scale: int, *, face_enhance: bool) -> Upscaled:
    """Decode ``data``, check it as the hosted model does, and upscale it ``scale`` times.

    Args:
        data: The downloaded input.
        scale: 1, 2, 3 or 4.
        face_enhance: Whether face enhancement was requested (drops alpha).

    Returns:
        The output PNG, exactly ``scale`` times the input's width and height, resized with
        Lanczos.

    Raises:
        UnprocessableInputError: If the input is undecodable or over ``MAX_INPUT_PIXELS``.
    """
    image = _open(data)
    width, height = image.size
    # Checked from the header before decoding: the model would reject it after decoding anyway,
    # and this keeps a huge input from costing the emulator its memory.
    if width * height > MAX_INPUT_PIXELS:
        raise UnprocessableInputError(oversized_message(_shape(image)))
    try:
        image.load()
        working = _working_mode(image, face_enhance=face_enhance)
    except Exception:  # noqa: BLE001 - a truncated or corrupt body also gives cv2 None
        raise UnprocessableInputError(UNDECODABLE_MESSAGE) from None
    output = working.resize((width * scale, height * scale), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    output.save(buffer, "PNG", compress_level=_PNG_COMPRESS_LEVEL)
    return Upscaled(
        png=buffer.getvalue(),
        input_pixels=width * height,
        output_pixels=output.width * output.height,
    )


def tiny_output_png() -> bytes:
    """The fixed 64x64 output of jobs when ``fetch_inputs`` is off."""
    image = Image.new("RGB", (64, 64), (64, 128, 192))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()
