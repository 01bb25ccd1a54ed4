"""An in-process emulator of the hosted Real-ESRGAN gateway, for tests, demos and benchmarks.

It speaks the gateway's API byte for byte over real loopback sockets: it really downloads and
decodes inputs, really upscales them with Pillow, follows the service's calibrated timing (scaled
by ``time_scale``), delivers webhooks, and injects the faults a client must survive. It does not
import the client library. Requires the ``emulator`` extra.

Example::

    from real_esrgan_async.testing import EmulatorConfig, running_emulator

    with running_emulator(EmulatorConfig(time_scale=0.01, seed=1)) as gateway:
        gateway.base_url        # http://127.0.0.1:<port>
        gateway.api_key         # "emulator-key"
        gateway.sample_urls()   # input images it serves itself
        gateway.emulator.stats().jobs_created
"""

from __future__ import annotations

from ._config import DEFAULT_API_KEY, EmulatorConfig, TimestampFormat
from ._emulator import Emulator, JobSnapshot
from ._images import MAX_INPUT_PIXELS
from ._server import RunningEmulator, running_emulator, serve
from ._stats import EmulatorStats

__all__ = [
    "DEFAULT_API_KEY",
    "MAX_INPUT_PIXELS",
    "Emulator",
    "EmulatorConfig",
    "EmulatorStats",
    "JobSnapshot",
    "RunningEmulator",
    "TimestampFormat",
    "running_emulator",
    "serve",
]
