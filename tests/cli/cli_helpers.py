"""Helpers of the CLI tests: a fast emulator config, the key, and image checks."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import httpx
from PIL import Image

from real_esrgan_async.testing import EmulatorConfig, RunningEmulator

#: The key the test emulators accept: distinctive, so that a leak cannot hide.
KEY = "cli-test-key-5up3r-53cr3t-0042"


def fast_config(**overrides: Any) -> EmulatorConfig:
    """A reproducible emulator whose jobs take milliseconds and never fail at random."""
    options: dict[str, Any] = {
        "api_keys": KEY,
        "time_scale": 0.001,
        "seed": 20260401,
        "error_rate": 0.0,
        "cold_start_rate": 0.0,
    }
    options.update(overrides)
    return EmulatorConfig(**options)


@attrs.frozen
class Result:
    """What one run of the command did."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        """stdout, which must be exactly one JSON document."""
        return json.loads(self.out)


RunCli = Callable[..., Result]


def gateway_args(gateway: RunningEmulator, key: str = KEY) -> list[str]:
    """The options that point the command at `gateway`."""
    return ["--base-url", gateway.base_url, "--api-key", key]


def sample_size(gateway: RunningEmulator, name: str) -> tuple[int, int]:
    """The dimensions of one of the emulator's sample inputs, as served."""
    response = httpx.get(gateway.sample_url(name), trust_env=False)
    response.raise_for_status()
    with Image.open(io.BytesIO(response.content)) as image:
        return image.size


def png_size(path: Path) -> tuple[int, int]:
    """The dimensions of a saved output, checking that it is a PNG."""
    with Image.open(path) as image:
        assert "PNG" == image.format
        return image.size


def sample_name(url: str) -> str:
    """``photo.jpg`` for ``http://127.0.0.1:1234/samples/photo.jpg``."""
    return url.rsplit("/", 1)[-1]
