"""The five commands: ``upscale``, ``batch``, ``status``, ``emulator`` and ``demo``.

Each takes the parsed options and the command's `Output`, and returns its exit
status. ``upscale``, ``batch`` and ``demo`` differ only in where their URLs and
their gateway come from: all three go through `execute_batch`. The emulator's
server and imaging libraries are imported only by the two commands that use them.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import socket
import sys
from pathlib import Path
from typing import TextIO

import anyio
import attrs
import httpx

from real_esrgan_async import (
    APIConnectionError,
    InvalidRequestError,
    JobState,
    RealESRGANError,
    RedisStore,
    SQLiteStore,
    Status,
    Store,
)
from real_esrgan_async._client import API_KEY_ENV, DEFAULT_BASE_URL
from real_esrgan_async._urls import is_loopback_url

from ._batch import (
    BATCH_ENCODING,
    ArgumentInputs,
    BatchOptions,
    GatewayAccess,
    LineInputs,
    count_inputs,
    execute_batch,
    make_client,
)
from ._local import check_local_inputs, expand_folders, local_inputs, parse_image_host
from ._output import PROG, Output
from ._parser import BASE_URL_ENV, ExitCode
from ._progress import wants_progress
from ._report import REFUSALS, GatewayUnreachableError, print_state, state_json

__all__ = [
    "run_batch_command",
    "run_demo_command",
    "run_emulator_command",
    "run_status_command",
    "run_upscale_command",
]


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


def _options(args: argparse.Namespace) -> BatchOptions:
    return BatchOptions(
        scale=args.scale,
        face_enhance=args.face_enhance,
        out_dir=args.out,
        concurrency=args.concurrency,
        job_timeout=args.timeout,
        preflight=args.preflight,
    )


def run_upscale_command(args: argparse.Namespace, output: Output) -> int:
    """``real-esrgan upscale URL_OR_FILE_OR_FOLDER...``: local files go through ``--image-host``."""
    gateway = gateway_access(args, output)
    if gateway is None:
        return ExitCode.USAGE
    image_host = None
    try:
        inputs = expand_folders(args.urls)
    except InvalidRequestError as exc:
        output.error(str(exc))
        return ExitCode.USAGE
    local = local_inputs(inputs, with_host=args.image_host is not None)
    if local:
        if args.image_host is None:
            output.error(
                f"{local[0]!r} is a local file, and the gateway fetches only URLs: pass "
                "--image-host s3://BUCKET/PREFIX to publish local files through your bucket"
            )
            return ExitCode.USAGE
        errors = check_local_inputs(local)
        for error in errors:
            output.error(error)
        if errors:
            return ExitCode.USAGE
        try:
            image_host = parse_image_host(args.image_host, endpoint_url=args.endpoint_url)
        except InvalidRequestError as exc:
            output.error(str(exc))
            return ExitCode.USAGE
    return execute_batch(
        output,
        gateway,
        ArgumentInputs(inputs),
        _options(args),
        backend=args.backend,
        json=args.json,
        total=len(inputs),
        image_host=image_host,
    )


def run_batch_command(args: argparse.Namespace, output: Output) -> int:
    """``real-esrgan batch FILE|-``."""
    gateway = gateway_access(args, output)
    if gateway is None:
        return ExitCode.USAGE
    store = None
    if args.store is not None:
        try:
            store = parse_store(args.store)
        except (InvalidRequestError, ImportError) as exc:
            output.error(str(exc))
            return ExitCode.USAGE
        if args.resubmit_ambiguous:
            output.error(
                "--resubmit-ambiguous applies to a journal: with --store an ambiguous key stays "
                "ambiguous (check the provider's dashboard for its job)"
            )
            return ExitCode.USAGE
    # utf-8-sig: a list saved by an editor that writes a byte order mark (Windows
    # Notepad) must not reject its first URL; without a BOM it reads as UTF-8.
    stream: TextIO
    if args.file == "-":
        stream, name = _stdin_as_utf8(), "<stdin>"
    else:
        try:
            # Closed below; a context manager would hold the whole run indented for nothing.
            stream = open(args.file, encoding=BATCH_ENCODING)  # noqa: SIM115
        except OSError as exc:
            output.error(f"cannot read {args.file}: {exc.strerror or exc}")
            return ExitCode.USAGE
        name = args.file
    options = attrs.evolve(
        _options(args),
        journal=None if store is not None else _journal_path(args),
        resubmit_ambiguous=args.resubmit_ambiguous,
        keyed=store is not None,
    )
    # The bar's total: worth a first read of a file only when a bar is drawn; a
    # stream (stdin) has none, and is never read ahead.
    total = None
    if stream is not sys.stdin and wants_progress(output, json=args.json):
        total = count_inputs(Path(args.file))
    try:
        return execute_batch(
            output,
            gateway,
            LineInputs(stream, name),
            options,
            backend=args.backend,
            json=args.json,
            total=total,
            store=store,
        )
    finally:
        if stream is not sys.stdin:
            stream.close()


def _stdin_as_utf8() -> TextIO:
    """stdin, decoded as a batch file is (UTF-8, a BOM skipped), whatever the locale says."""
    stdin = sys.stdin
    if isinstance(stdin, io.TextIOWrapper):
        # Allowed while nothing has been read from it, as at the start of the command.
        stdin.reconfigure(encoding=BATCH_ENCODING)
    return stdin


def parse_store(text: str) -> Store:
    """``--store``: a `RedisStore` for a ``redis://``, ``rediss://`` or ``unix://`` URL, an
    `SQLiteStore` for ``sqlite:///PATH`` or a plain path.

    Raises:
        InvalidRequestError: Another scheme, or an empty path.
        ImportError: A Redis URL without redis-py installed (the fleet extra).
    """
    scheme, sep, rest = text.partition("://")
    if not sep:
        path = text
    elif scheme in ("redis", "rediss", "unix"):
        return RedisStore(text)  # (an ImportError naming the fleet extra without redis-py)
    elif scheme == "sqlite":
        # As SQLAlchemy reads it: sqlite:///keys.db is keys.db, sqlite:////var/k.db is /var/k.db.
        path = rest[1:] if rest.startswith("/") else rest
    else:
        raise InvalidRequestError(
            f"--store must be redis://HOST:PORT/DB (or rediss://, unix://), sqlite:///PATH or a "
            f"file path, got a {scheme}:// URL"
        )
    if not path:
        raise InvalidRequestError("--store needs a file path after sqlite:///")
    return SQLiteStore(path)


def _journal_path(args: argparse.Namespace) -> Path | None:
    """``--journal``; else, for a file, ``<OUT>.<FILE>.journal`` beside the output folder.

    Named after the batch file, so that another list saved to the same folder
    gets its own journal. None with ``--no-journal``, and for stdin: a stream
    cannot be replayed, so a rerun would only be refused as another batch.
    """
    if args.no_journal or (args.journal is None and args.file == "-"):
        return None
    if args.journal is not None:
        return Path(args.journal)
    out = Path(args.out).resolve()
    return out.with_name(f"{out.name}.{Path(args.file).name}.journal")


def run_status_command(args: argparse.Namespace, output: Output) -> int:
    """``real-esrgan status REQUEST_ID``: one status call.

    Exits 0 for a job QUEUED, PROCESSING or COMPLETED, 1 for one that ended
    FAILED or ERROR or an id the gateway does not know, 3 when the gateway
    refuses the key, 4 when it cannot be reached.
    """
    gateway = gateway_access(args, output)
    if gateway is None:
        return ExitCode.USAGE
    try:
        client = make_client(gateway)
    except InvalidRequestError as exc:
        output.error(str(exc))
        return ExitCode.USAGE

    async def fetch() -> JobState:
        async with client:
            return await client.status(args.request_id)

    try:
        state = anyio.run(fetch, backend=args.backend)
    except InvalidRequestError as exc:  # an empty id
        output.error(str(exc))
        return ExitCode.USAGE
    except REFUSALS as exc:
        output.error(str(exc))
        return ExitCode.REFUSED
    except APIConnectionError as exc:
        output.error(str(GatewayUnreachableError(str(client.base_url), exc)))
        return ExitCode.UNREACHABLE
    except RealESRGANError as exc:  # 404 for an unknown id, the gateway unreachable...
        output.error(str(exc))
        return ExitCode.INCOMPLETE
    document = state_json(state)
    if args.json:
        output.document(json.dumps(document, indent=2))
    else:
        print_state(document, output)
    # A script can branch on the exit status alone: a job that ended without an
    # output (FAILED, or ERROR) is not a success; one still running is not a failure.
    if state.status in (Status.FAILED, Status.ERROR):
        return ExitCode.INCOMPLETE
    return ExitCode.OK


# --- demo: the samples through a local emulator, in this process


def run_demo_command(args: argparse.Namespace, output: Output) -> int:
    """Upscale the emulator's samples into ``--out``; print the summary.

    The emulator runs in a background thread of this process; the upscaling goes
    through the very code path of ``batch``. Its random faults (ERROR jobs, cold
    starts) are off, so the demo finishes in a few seconds and ends with exit
    status 0; ``real-esrgan emulator`` has them all as options.
    """
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


# --- emulator: serve it on loopback until Ctrl+C


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
            allow_http_webhooks=args.allow_http_webhooks,
            webhook_duplicate_rate=args.webhook_duplicate_rate,
            webhook_loss_rate=args.webhook_loss_rate,
            allow_remote_hosts=args.allow_remote_hosts,
        )
    except (TypeError, ValueError) as exc:
        output.error(str(exc))
        return ExitCode.USAGE
    host = f"[{args.host}]" if ":" in args.host else args.host
    if not _is_loopback(host):
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
    base_url = f"http://{host}:{port}"
    output.result(f"Real-ESRGAN gateway emulator on {base_url}")
    output.result(f"  API key:  {', '.join(sorted(keys))}")
    samples = Emulator.sample_urls(base_url)
    output.result(f"  samples:  {samples[0]} and {len(samples) - 1} more under /samples/")
    # Through the emulator's own lookup, which refuses a name it does not serve.
    for name, effect in Emulator.FAILURE_SAMPLES.items():
        output.result(f"  failure:  {Emulator.sample_url(base_url, name)}: {effect}")
    output.result(
        f"  try:      {BASE_URL_ENV}={base_url} {API_KEY_ENV}={min(keys)} "
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
    """Whether `host` (IPv6 in brackets) names this machine, judged as the library judges URLs."""
    try:
        return is_loopback_url(f"http://{host}/")
    except httpx.InvalidURL:  # not a host at all
        return False
