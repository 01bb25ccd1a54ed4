"""Running a batch from synchronous code: the client, the event loop, Ctrl+C, the summary.

Shared by ``upscale``, ``batch`` and ``demo``, which differ only in where their
URLs and their gateway come from.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable

import anyio
import attrs

from real_esrgan_async import AsyncRealESRGAN, InvalidRequestError, Stats
from real_esrgan_async._client import API_KEY_ENV, DEFAULT_BASE_URL

from ._args import BASE_URL_ENV
from ._batch import BatchOptions, run_batch
from ._exitcodes import ExitCode
from ._inputs import Input, LineInputs
from ._output import Output
from ._progress import make_progress, wants_progress
from ._report import Report
from ._summary import json_document, print_stop, print_summary

__all__ = ["GatewayAccess", "execute_batch", "gateway_access", "make_client"]


@attrs.frozen(repr=False)
class GatewayAccess:
    """Which gateway to use, and with which key (kept out of any repr).

    Attributes:
        api_key: The key.
        base_url: The gateway's origin.
    """

    api_key: str
    base_url: str

    def __repr__(self) -> str:
        return f"GatewayAccess(base_url={self.base_url!r})"


def gateway_access(args: argparse.Namespace, output: Output) -> GatewayAccess | None:
    """The key and base URL from the options or the environment; None (after an error line)
    when there is no key."""
    api_key = args.api_key or os.environ.get(API_KEY_ENV)
    if not api_key:
        output.error(
            f"no API key: pass --api-key KEY or set the {API_KEY_ENV} environment variable "
            "(`real-esrgan demo` runs without one)"
        )
        return None
    output.add_secret(api_key)
    base_url = args.base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    return GatewayAccess(api_key, base_url)


def make_client(
    gateway: GatewayAccess, *, on_progress: Callable[[Stats], None] | None = None
) -> AsyncRealESRGAN:
    """A client for `gateway`.

    Raises:
        InvalidRequestError: The base URL is malformed.
    """
    return AsyncRealESRGAN(gateway.api_key, base_url=gateway.base_url, on_progress=on_progress)


def execute_batch(
    output: Output,
    gateway: GatewayAccess,
    inputs: AsyncIterator[Input],
    options: BatchOptions,
    *,
    backend: str,
    json: bool,
    total: int | None,
    emulated: bool = False,
) -> ExitCode:
    """Run a batch to its end, print its summary and say how the command should exit.

    Args:
        output: The command's streams.
        gateway: Where to send the jobs.
        inputs: The URLs; a `LineInputs` makes errors name the file and line.
        options: Scale, output directory, concurrency, timeout.
        backend: ``"asyncio"`` or ``"trio"``.
        json: Print the JSON document instead of the human summary.
        total: How many inputs there are, when known (for the progress bar).
        emulated: The gateway is the embedded emulator (nothing is charged).

    Returns:
        The exit status (see `ExitCode`).
    """
    try:
        options.out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        output.error(f"cannot create the output directory {options.out_dir}: {exc.strerror}")
        return ExitCode.USAGE
    report = Report(out_dir=options.out_dir, keep_entries=json, emulated=emulated)
    source = inputs if isinstance(inputs, LineInputs) else None
    report.source_name = None if source is None else source.name
    progress = make_progress(
        output, enabled=wants_progress(output, json=json), total=total, label="upscaling"
    )
    try:
        client = make_client(gateway, on_progress=progress.on_stats)
    except InvalidRequestError as exc:  # a malformed --base-url
        output.error(str(exc))
        return ExitCode.USAGE

    async def main() -> None:
        async with client:
            progress.start()
            try:
                async with anyio.create_task_group() as run_scope:
                    run_scope.start_soon(_cancel_on_ctrl_c, run_scope.cancel_scope, report)
                    await run_batch(
                        client, inputs, options, report=report, progress=progress, output=output
                    )
                    run_scope.cancel_scope.cancel()  # done: stop listening for Ctrl+C
            finally:
                progress.stop()

    try:
        anyio.run(main, backend=backend)
    except* KeyboardInterrupt:
        # Bare from asyncio; on trio it may come out of a task group, in a group.
        # The run has already unwound: submission stopped, and the report holds
        # the ids of the jobs paid for and still running.
        report.interrupted = True
    if source is not None:
        report.last_line = source.last_line
    if json:
        output.result(json_document(report))
    else:
        print_summary(report, output)
    print_stop(report, output)
    return report.exit_code()


async def _cancel_on_ctrl_c(scope: anyio.CancelScope, report: Report) -> None:
    """Turn the first Ctrl+C into a cancellation of the run.

    A KeyboardInterrupt can be raised in the middle of any unprotected code (on
    trio, even between a paid POST's answer and the recording of its id); a
    cancellation unwinds through the library's shields instead, so every paid id
    is kept. A second Ctrl+C, once this receiver is gone, interrupts as usual.
    """
    if threading.current_thread() is not threading.main_thread():
        return  # signals reach only the main thread: Ctrl+C stays a KeyboardInterrupt there
    with anyio.open_signal_receiver(signal.SIGINT) as signals:
        async for _ in signals:
            report.interrupted = True
            scope.cancel()
            return
