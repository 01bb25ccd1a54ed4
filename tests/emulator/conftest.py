from __future__ import annotations

from collections.abc import Iterator

import pytest
from emulator_helpers import Receiver, fast_config

from real_esrgan_async.testing import RunningEmulator, running_emulator


@pytest.fixture(scope="module")
def shared_gateway() -> Iterator[RunningEmulator]:
    """A fast emulator shared by a module's tests that do not depend on fresh counters."""
    with running_emulator(fast_config()) as gateway:
        yield gateway


@pytest.fixture
def gateway() -> Iterator[RunningEmulator]:
    """A fresh fast emulator."""
    with running_emulator(fast_config()) as gateway:
        yield gateway


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on loopback."""
    receiver = Receiver()
    try:
        yield receiver
    finally:
        receiver.close()
