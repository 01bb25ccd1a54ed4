"""The gateway commands: ``upscale``, ``batch`` and ``status``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

import anyio
import attrs

from real_esrgan_async import InvalidRequestError, JobState, RealESRGANError

from ._batch import BatchOptions
from ._execute import execute_batch, gateway_access, make_client
from ._exitcodes import ExitCode
from ._inputs import ArgumentInputs, LineInputs
from ._output import Output
from ._report import REFUSALS

__all__ = ["run_batch_command", "run_status_command", "run_upscale_command"]


def _options(args: argparse.Namespace) -> BatchOptions:
    return BatchOptions(
        scale=args.scale,
        face_enhance=args.face_enhance,
        out_dir=args.out,
        concurrency=args.concurrency,
        job_timeout=args.timeout,
    )


def run_upscale_command(args: argparse.Namespace, output: Output) -> int:
    """``real-esrgan upscale URL...``."""
    gateway = gateway_access(args, output)
    if gateway is None:
        return ExitCode.USAGE
    return execute_batch(
        output,
        gateway,
        ArgumentInputs(args.urls),
        _options(args),
        backend=args.backend,
        json=args.json,
        total=len(args.urls),
    )


def run_batch_command(args: argparse.Namespace, output: Output) -> int:
    """``real-esrgan batch FILE|-``."""
    gateway = gateway_access(args, output)
    if gateway is None:
        return ExitCode.USAGE
    stream: TextIO
    if args.file == "-":
        stream, name = sys.stdin, "<stdin>"
    else:
        try:
            # Closed below; a context manager would hold the whole run indented for nothing.
            stream = open(args.file, encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            output.error(f"cannot read {args.file}: {exc.strerror or exc}")
            return ExitCode.USAGE
        name = args.file
    options = attrs.evolve(
        _options(args), journal=_journal_path(args), resubmit_ambiguous=args.resubmit_ambiguous
    )
    try:
        return execute_batch(
            output,
            gateway,
            LineInputs(stream, name),
            options,
            backend=args.backend,
            json=args.json,
            total=None,  # streamed: counting the lines first would read the file twice
        )
    finally:
        if stream is not sys.stdin:
            stream.close()


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
    """``real-esrgan status REQUEST_ID``: one status call."""
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
    except RealESRGANError as exc:  # 404 for an unknown id, the gateway unreachable...
        output.error(str(exc))
        return ExitCode.INCOMPLETE
    except KeyboardInterrupt:
        output.error("interrupted")
        return ExitCode.INTERRUPTED
    document = state_json(state)
    if args.json:
        output.result(json.dumps(document, indent=2))
    else:
        _print_state(document, output)
    return ExitCode.OK


def state_json(state: JobState) -> dict[str, Any]:
    """A job state as JSON-ready data (timestamps in ISO 8601, UTC)."""
    return {
        "request_id": state.request_id,
        "status": state.status.value,
        "model_id": state.model_id,
        "error": state.error,
        "media_urls": list(state.media_urls),
        "media_type": state.media_type,
        "created_at": None if state.created_at is None else state.created_at.isoformat(),
        "updated_at": None if state.updated_at is None else state.updated_at.isoformat(),
        "completed_at": None if state.completed_at is None else state.completed_at.isoformat(),
    }


def _print_state(document: dict[str, Any], output: Output) -> None:
    for field, value in document.items():
        if field == "media_urls":
            for url in value or ["-"]:
                output.result(f"{'media_url':<13} {url}")
        else:
            output.result(f"{field:<13} {'-' if value is None else value}")
