"""Fixtures of the keyed-submit tests: an emulator, and stores that share one place."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from keyed_helpers import MakeStore

from real_esrgan_async import RedisStore, SQLiteStore
from real_esrgan_async.testing import EmulatorConfig, RunningEmulator, running_emulator


@pytest.fixture
def emulator() -> Iterator[RunningEmulator]:
    with running_emulator(EmulatorConfig(time_scale=0.002, seed=7, error_rate=0.0)) as running:
        yield running


@pytest.fixture(params=["redis", "sqlite"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> MakeStore:
    """A factory of stores that all share one place (one process's view each)."""
    if request.param == "sqlite":
        return lambda: SQLiteStore(tmp_path / "keys.db")
    url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("prefix")
    return lambda: RedisStore(url, prefix=prefix)
