"""``real-esrgan emulator``: serve the gateway emulator on loopback until Ctrl+C."""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import socket

from ._args import BASE_URL_ENV
from ._exitcodes import ExitCode
from ._output import PROG, Output

__all__ = ["run_emulator_command"]


def run_emulator_command(args: argparse.Namespace, output: Output) -> int:
    """Serve the emulator with the options' knobs; print its base URL and key first."""
    try:
        # The emulator's server and imaging libraries load only for the commands that use them.
        from real_esrgan_async.testing import DEFAULT_API_KEY, Emulator, EmulatorConfig, serve  # noqa: PLC0415
    except ImportError as exc:
        output.error(
            f"the emulator needs its extra ({exc.name} is missing): "
            "pip install 'real-esrgan-async[cli]'"
        )
        return ExitCode.USAGE
    keys = args.api_keys or [DEFAULT_API_KEY]
    try:
        config = EmulatorConfig(
            api_keys=keys,
            time_scale=args.time_scale,
            seed=args.seed,
            wallet_balance=args.wallet,
            rate_limit=args.rate_limit,
            rate_limit_window=args.rate_limit_window,
            fetch_inputs=args.fetch_inputs,
            error_rate=args.error_rate,
            cold_start_rate=args.cold_start_rate,
            status_error_rate=args.status_error_rate,
            latency=args.latency,
            timestamp_format=args.timestamp_format,
        )
    except (TypeError, ValueError) as exc:
        output.error(str(exc))
        return ExitCode.USAGE
    if not _is_loopback(args.host):
        # The emulator fetches any URL it is sent and accepts a published key: on a
        # network it would be an open proxy. `serve` refuses too; this says so first.
        output.error(
            f"the emulator listens only on loopback (127.0.0.1, ::1, localhost), not {args.host!r}"
        )
        return ExitCode.USAGE
    try:
        port = _check_port(args.host, args.port)
    except OSError as exc:
        output.error(
            f"cannot listen on {args.host} port {args.port}: {exc.strerror or exc} "
            "(pick another with --port)"
        )
        return ExitCode.USAGE
    host = f"[{args.host}]" if ":" in args.host else args.host
    base_url = f"http://{host}:{port}"
    output.result(f"Real-ESRGAN gateway emulator on {base_url}")
    output.result(f"  API key:  {', '.join(sorted(keys))}")
    samples = Emulator.sample_urls(base_url)
    output.result(f"  samples:  {samples[0]} and {len(samples) - 1} more under /samples/")
    output.result(
        f"  try:      {BASE_URL_ENV}={base_url} REAL_ESRGAN_API_KEY={min(keys)} "
        f"{PROG} upscale {samples[0]}"
    )
    output.result("Press Ctrl+C to stop.")
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl+C is how a server is meant to stop
        serve(config, host=args.host, port=port, log_level=args.log_level)
    return ExitCode.OK


def _check_port(host: str, port: int) -> int:
    """Bind and release `host`:`port` to report a busy port in one clear line; with port 0,
    pick a free port now, so that the URL printed is the real one.

    Raises:
        OSError: The port cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As uvicorn binds: a port in TIME_WAIT after a previous run is not busy.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        bound: int = probe.getsockname()[1]
        return bound


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost
        return False
