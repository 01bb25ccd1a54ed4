"""The ``real-esrgan`` command: upscale URLs, a file of URLs, or the bundled samples.

``main(argv)`` is the entry point (``[project.scripts]``); it returns the exit
status instead of exiting, so tests and other programs can call it. The
library never imports this package: it needs the ``cli`` extra (rich for the
progress bar, the emulator for ``demo`` and ``emulator``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence

from real_esrgan_async._client import API_KEY_ENV

from ._commands import (
    run_batch_command,
    run_demo_command,
    run_emulator_command,
    run_status_command,
    run_upscale_command,
)
from ._output import Output
from ._parser import ExitCode, api_keys_in, build_parser

__all__ = ["ExitCode", "main"]

_Command = Callable[[argparse.Namespace, Output], int]


_COMMANDS: dict[str, _Command] = {
    "batch": run_batch_command,
    "demo": run_demo_command,
    "emulator": run_emulator_command,
    "status": run_status_command,
    "upscale": run_upscale_command,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``real-esrgan`` command.

    Args:
        argv: The arguments, without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 all done, 1 some input not done, 2 usage error,
        3 the gateway refused the key or the wallet, 4 the gateway could not be
        reached, 130 Ctrl+C (see `ExitCode`).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    user_key = os.environ.get(API_KEY_ENV, "")
    # Known before parsing, so that not even a usage error can print the key.
    output = Output(sys.stdout, sys.stderr, secrets=[user_key, *api_keys_in(argv)])
    parser = build_parser(redact=output.for_people)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (already printed)
        return exc.code if isinstance(exc.code, int) else ExitCode.USAGE
    if args.command == "emulator":
        # There --api-key names the emulator's own keys, which it prints on purpose.
        output = Output(sys.stdout, sys.stderr, secrets=[user_key])
    try:
        return _COMMANDS[args.command](args, output)
    except KeyboardInterrupt:
        # The one Ctrl+C handler outside a batch run (which turns it into a
        # cancellation, to keep every paid id: see `execute_batch`): a status call,
        # or the time before a run starts, when nothing was submitted yet.
        output.error("interrupted")
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        # The reader of stdout left early (`... | head`): end quietly, as other tools do,
        # without a second error when the interpreter flushes stdout at exit.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.INCOMPLETE
