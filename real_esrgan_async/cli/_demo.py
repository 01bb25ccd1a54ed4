"""``real-esrgan demo``: the bundled samples through the library and a local emulator.

The emulator runs in a background thread of this process; the upscaling goes
through the very code path of ``batch``. Its random faults (ERROR jobs, cold
starts) are off, so the demo finishes in a few seconds and ends with exit
status 0; ``real-esrgan emulator`` has them all as options.
"""

from __future__ import annotations

import argparse

from ._batch import BatchOptions
from ._execute import GatewayAccess, execute_batch
from ._exitcodes import ExitCode
from ._inputs import ArgumentInputs
from ._output import Output

__all__ = ["run_demo_command"]


def run_demo_command(args: argparse.Namespace, output: Output) -> int:
    """Upscale the emulator's samples into ``--out``; print the summary."""
    try:
        # The emulator's server and imaging libraries load only for the commands that use them.
        from real_esrgan_async.testing import EmulatorConfig, running_emulator  # noqa: PLC0415
    except ImportError as exc:
        output.error(
            f"the demo needs the emulator ({exc.name} is missing): "
            "pip install 'real-esrgan-async[cli]'"
        )
        return ExitCode.USAGE
    config = EmulatorConfig(
        time_scale=args.time_scale, seed=args.seed, error_rate=0.0, cold_start_rate=0.0
    )
    output.note(
        f"Starting the gateway emulator (time scale {args.time_scale:g}: {_speed(args.time_scale)})"
    )
    with running_emulator(config) as gateway:
        urls = gateway.sample_urls()
        output.note(
            f"Upscaling its {len(urls)} sample images x{args.scale} into {args.out}/ "
            f"through the library, as `real-esrgan batch` would"
        )
        return execute_batch(
            output,
            GatewayAccess(gateway.api_key, gateway.base_url),
            ArgumentInputs(urls),
            BatchOptions(
                scale=args.scale,
                face_enhance=False,
                out_dir=args.out,
                concurrency=args.concurrency,
            ),
            backend=args.backend,
            json=args.json,
            total=len(urls),
            emulated=True,
        )


def _speed(time_scale: float) -> str:
    if time_scale == 0:
        return "jobs finish at once"
    if time_scale == 1:
        return "real time"
    factor = 1 / time_scale
    return f"{factor:g} times faster than real" if factor > 1 else f"{time_scale:g} times slower"
