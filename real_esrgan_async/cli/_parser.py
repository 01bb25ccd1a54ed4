"""The command line: every subcommand and option, their value types, and the exit codes.

Parsing only: nothing here touches the network or the file system. Usage
errors exit with status 2 (argparse's convention), with the API key masked
out of the message. Each option value type says what it expected and what it
got; each exit code has one meaning, so that scripts can branch on it.
"""

from __future__ import annotations

import argparse
import enum
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeAlias

from real_esrgan_async import __version__
from real_esrgan_async._client import API_KEY_ENV, BASE_URL_ENV
from real_esrgan_async._models import ALLOWED_SCALES

from ._output import PROG

__all__ = [
    "BACKENDS",
    "BASE_URL_ENV",
    "ExitCode",
    "api_keys_in",
    "build_parser",
    "non_negative",
    "port_number",
    "positive_int",
    "positive_seconds",
    "probability",
]

BACKENDS = ("asyncio", "trio")
DEFAULT_OUT = Path("upscaled")
DEFAULT_CONCURRENCY = 32


class ExitCode(enum.IntEnum):
    """What the exit status of ``real-esrgan`` means."""

    #: Every input was upscaled and saved (or the command did what it was asked).
    OK = 0
    #: At least one input failed, errored, was rejected or could not be saved; for
    #: ``status``, the job ended FAILED or ERROR, or the gateway does not know its id.
    INCOMPLETE = 1
    #: A usage error: a bad option, a missing API key, an unreadable batch file.
    USAGE = 2
    #: The gateway refused the key or the wallet (401, 402, 403): the run stopped.
    REFUSED = 3
    #: No connection to the gateway could be made: the run stopped (nothing more was sent).
    UNREACHABLE = 4
    #: Stopped by Ctrl+C (128 + SIGINT, as shells report it).
    INTERRUPTED = 130


_DESCRIPTION = f"""\
Upscale images with the hosted Real-ESRGAN gateway: many at once, with bounded
concurrency, a live progress bar, and no paid job ever lost.

The API key comes from --api-key or the {API_KEY_ENV} environment variable
(prefer the variable: a command line is visible to other users of the machine)."""

_EPILOG = f"""\
examples:
  {PROG} demo                                    # try it offline, no key needed
  {PROG} upscale https://example.com/cat.jpg --scale 2
  {PROG} batch urls.txt --out big/ --concurrency 64
  {PROG} batch part-3.txt --store redis://redis.internal:6379/0  # one bill for many
  grep -h '^https' lists/*.txt | {PROG} batch - --json > run.json
  {PROG} status real-esrgan_019d...
  {PROG} emulator --time-scale 0.1               # a local gateway to test against

exit status:
  0    every input was upscaled and saved
  1    some input failed, errored, was rejected or could not be saved;
       for status: the job ended FAILED or ERROR, or the gateway does not know it
  2    usage error (bad option, missing API key, unreadable batch file,
       a --store that cannot be reached or is of another version)
  3    the gateway refused the key or the wallet (401/402/403); the run stopped
  4    the gateway could not be reached (wrong --base-url, network down); the run stopped
  130  interrupted (Ctrl+C); the ids of unfinished paid jobs are printed"""

_NAMING = """\
outputs are saved as OUT/<index>-<name>.png: <index> is the input's position
among the URLs (from 0, comments and blank lines not counted), <name> the input
file's name without its extension, e.g. upscaled/0003-cat.png. A rerun with the
same inputs writes the same names (and replaces the files)."""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks; a little wider option column."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


class _Parser(argparse.ArgumentParser):
    """An `ArgumentParser` that masks the API key in its error messages."""

    def __init__(self, *args: Any, redact: Callable[[str], str] = str, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        # No abbreviated options: scripts stay valid when options are added, and
        # the key can be found in argv (to mask it) before parsing.
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self._redact = redact

    def error(self, message: str) -> NoReturn:
        """Print the usage and a one-line error on stderr, and exit with status 2."""
        super().error(self._redact(message))


# A string: argparse's class is generic only in typeshed, not at run time.
_Commands: TypeAlias = "argparse._SubParsersAction[_Parser]"


def api_keys_in(argv: Sequence[str]) -> list[str]:
    """The values given to ``--api-key`` in `argv` (to mask them even in usage errors)."""
    keys = []
    for position, arg in enumerate(argv):
        if arg == "--api-key" and position + 1 < len(argv):
            keys.append(argv[position + 1])
        elif arg.startswith("--api-key="):
            keys.append(arg.partition("=")[2])
    return keys


def _add_backend(parser: argparse.ArgumentParser) -> None:
    advanced = parser.add_argument_group("advanced")
    advanced.add_argument(
        "--backend",
        choices=BACKENDS,
        default="asyncio",
        help="the event loop to run on (default: %(default)s)",
    )


def _add_journal(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("resuming")
    where = group.add_mutually_exclusive_group()
    where.add_argument(
        "--journal",
        metavar="PATH",
        type=Path,
        help="record each input, its job id and its saved output in PATH, so that a rerun "
        "after a crash resumes: jobs in flight are polled and never paid for again, saved "
        "outputs are skipped (default for a FILE: <OUT>.<FILE>.journal beside the output "
        "folder; none for stdin, which a rerun cannot replay)",
    )
    where.add_argument(
        "--no-journal", action="store_true", help="keep no journal: a rerun submits everything"
    )
    where.add_argument(
        "--store",
        metavar="URL_OR_PATH",
        help="record an idempotency key per input (its URL, scale and face enhancement) in a "
        "store instead of a journal, so that every batch sharing it, on any machine and from "
        "any list, pays at most once per input, and a rerun resumes: redis://HOST:PORT/DB "
        "(also rediss://, unix://; needs the fleet extra) for several machines, or an SQLite "
        "file (PATH or sqlite:///PATH) for one",
    )
    group.add_argument(
        "--resubmit-ambiguous",
        action="store_true",
        help="submit again the inputs whose earlier submit may or may not have created a job "
        "(reported as AmbiguousSubmitError); each may then be paid for twice",
    )


def _client_options() -> _Parser:
    parent = _Parser(add_help=False)
    group = parent.add_argument_group("gateway")
    group.add_argument(
        "--api-key",
        metavar="KEY",
        help=f"the gateway key (default: ${API_KEY_ENV}); never printed",
    )
    group.add_argument(
        "--base-url",
        metavar="URL",
        help=f"the gateway's origin (default: ${BASE_URL_ENV}, or the hosted gateway); "
        "point it at `real-esrgan emulator` to test",
    )
    return parent


def _run_options(*, default_scale: int, default_concurrency: int) -> _Parser:
    """Options of the commands that go through the batch runner (upscale, batch, demo)."""
    parent = _Parser(add_help=False)
    group = parent.add_argument_group("upscaling")
    group.add_argument(
        "--scale",
        type=int,
        choices=ALLOWED_SCALES,
        default=default_scale,
        help="upscaling factor (default: %(default)s)",
    )
    group.add_argument(
        "--out",
        metavar="DIR",
        type=Path,
        default=DEFAULT_OUT,
        help="where to save the PNGs, created if needed (default: ./%(default)s)",
    )
    group.add_argument(
        "--concurrency",
        metavar="N",
        type=positive_int,
        default=default_concurrency,
        help="jobs in flight at once, at most (default: %(default)s)",
    )
    group.add_argument(
        "--json",
        action="store_true",
        help="print one JSON document on stdout (a summary and one entry per input), "
        "and no progress bar",
    )
    return parent


def _job_options() -> _Parser:
    """Options of real jobs (not the demo's)."""
    parent = _Parser(add_help=False)
    group = parent.add_argument_group("jobs")
    group.add_argument(
        "--face-enhance",
        action="store_true",
        help="apply GFPGAN face enhancement (for photos of real faces)",
    )
    group.add_argument(
        "--timeout",
        metavar="S",
        type=positive_seconds,
        help="stop waiting on a job after S seconds (it keeps running at the provider, and "
        "its id is printed); default: wait as long as it takes",
    )
    group.add_argument(
        "--no-preflight",
        dest="preflight",
        action="store_false",
        help="do not read each input's header from its host before paying for its job (by "
        "default an input over the model's 2,096,704 pixels, or not an image, is refused "
        "unpaid: a job on it would end FAILED, and FAILED is charged)",
    )
    return parent


def build_parser(redact: Callable[[str], str] = str) -> argparse.ArgumentParser:
    """The ``real-esrgan`` parser.

    Args:
        redact: Applied to usage-error messages (masks the API key, escapes control
            characters).

    Returns:
        The parser; ``parse_args`` sets ``command`` to the subcommand's name.
    """
    parser = _Parser(prog=PROG, description=_DESCRIPTION, epilog=_EPILOG, redact=redact)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    client = _client_options()
    run = _run_options(default_scale=4, default_concurrency=DEFAULT_CONCURRENCY)
    jobs = _job_options()

    upscale = commands.add_parser(
        "upscale",
        parents=[run, jobs, client],
        help="upscale the images at one or more URLs",
        description="Upscale the images at the given URLs and save the PNGs as they finish.",
        epilog=f"examples:\n  {PROG} upscale https://example.com/cat.jpg --scale 2\n"
        f"  {PROG} upscale https://a.example/1.png https://a.example/2.png --out big/\n"
        f"  {PROG} upscale ./photos/*.jpg --image-host s3://my-bucket/real-esrgan\n\n" + _NAMING,
        redact=redact,
    )
    upscale.add_argument(
        "urls",
        metavar="URL_OR_FILE",
        nargs="+",
        help="an image URL (http or https), a local image file, or a folder of them (its "
        "image files, by suffix, not recursing; with --image-host)",
    )
    local = upscale.add_argument_group("local files")
    local.add_argument(
        "--image-host",
        metavar="s3://BUCKET/PREFIX",
        help="publish local files to this S3-compatible bucket under short-lived signed URLs "
        "(credentials from the AWS_* environment; needs the s3 extra)",
    )
    local.add_argument(
        "--endpoint-url",
        metavar="URL",
        help="the S3-compatible store's URL (MinIO, R2, ...); default AWS_ENDPOINT_URL, else AWS",
    )
    _add_backend(upscale)

    batch = commands.add_parser(
        "batch",
        parents=[run, jobs, client],
        help="upscale every URL listed in a file (or stdin)",
        description="Upscale every URL listed in FILE, one per line; blank lines and\n"
        "# comments are skipped. The file is streamed: a list of millions is never\n"
        "loaded at once. Each output is saved as soon as its job completes.",
        epilog=f"examples:\n  {PROG} batch urls.txt --scale 2 --out big/\n"
        f"  crawl-images | {PROG} batch - --concurrency 200 --json > run.json\n\n" + _NAMING,
        redact=redact,
    )
    batch.add_argument("file", metavar="FILE", help="the list of URLs, or - for stdin")
    _add_journal(batch)
    _add_backend(batch)

    status = commands.add_parser(
        "status",
        parents=[client],
        help="show a job's state (one status call)",
        description="Show a job's state: its status, error, output URLs and timestamps\n"
        "(one status call; the output URLs stay valid for about an hour).",
        epilog=f"example:\n  {PROG} status real-esrgan_019d0c1e-7b8a-7f00-9a00-0123456789ab\n\n"
        "exit status: 0 QUEUED, PROCESSING or COMPLETED; 1 FAILED or ERROR, or an unknown id;\n"
        "3 the key was refused; 4 the gateway could not be reached",
        redact=redact,
    )
    status.add_argument("request_id", metavar="REQUEST_ID", help="the id a submit returned")
    status.add_argument("--json", action="store_true", help="print the state as JSON")
    _add_backend(status)

    _add_emulator(commands, redact)
    _add_demo(commands, redact)
    return parser


def _add_emulator(commands: _Commands, redact: Callable[[str], str]) -> None:
    emulator = commands.add_parser(
        "emulator",
        help="serve the gateway emulator on this machine",
        description="Serve an emulator of the gateway on a loopback address until Ctrl+C:\n"
        "the same API, real image upscaling, calibrated timing and optional faults.\n"
        "It also serves sample inputs under /samples/, and three that fail as the\n"
        "hosted model does: oversized.png, corrupt.png and missing.png.",
        epilog=f"examples:\n  {PROG} emulator --time-scale 0.1 --seed 7\n"
        f"  {PROG} emulator --wallet 0.01 --error-rate 0.2   # see how a client copes\n\n"
        f"then, in another shell:\n"
        f"  export {API_KEY_ENV}=emulator-key {BASE_URL_ENV}=http://127.0.0.1:8000\n"
        f"  {PROG} upscale http://127.0.0.1:8000/samples/photo.jpg",
        redact=redact,
    )
    emulator.add_argument(
        "--host", default="127.0.0.1", help="a loopback address (default: %(default)s)"
    )
    emulator.add_argument(
        "--port", type=port_number, default=8000, help="the port, 0 for any (default: %(default)s)"
    )
    emulator.add_argument(
        "--api-key",
        metavar="KEY",
        action="append",
        dest="api_keys",
        help="a key it accepts; repeat for several (default: emulator-key)",
    )
    timing = emulator.add_argument_group("timing")
    timing.add_argument(
        "--time-scale",
        metavar="X",
        type=non_negative,
        default=1.0,
        help="multiplier of the real service's timing: 1 is real time (about 16 s a job), "
        "0.01 is 100 times faster (default: %(default)s)",
    )
    timing.add_argument("--seed", type=int, help="seed of its randomness, for repeatable runs")
    timing.add_argument(
        "--cold-start-rate",
        metavar="P",
        type=probability,
        default=0.03,
        help="share of jobs that wait for a 20-90 s cold start (default: %(default)s)",
    )
    timing.add_argument(
        "--latency",
        metavar="S",
        type=non_negative,
        default=0.0,
        help="seconds added to every API request (default: %(default)s)",
    )
    faults = emulator.add_argument_group("wallet and faults")
    faults.add_argument(
        "--wallet",
        metavar="USD",
        type=non_negative,
        help="starting balance; submits answer 402 once it is spent (default: unlimited)",
    )
    faults.add_argument(
        "--error-rate",
        metavar="P",
        type=probability,
        default=0.015,
        help="share of jobs that end ERROR, a transient GPU out-of-memory (default: %(default)s)",
    )
    faults.add_argument(
        "--status-error-rate",
        metavar="P",
        type=probability,
        default=0.0,
        help="share of status calls that answer 500 (default: %(default)s)",
    )
    faults.add_argument(
        "--rate-limit",
        metavar="N",
        type=positive_int,
        help="job creations allowed per --rate-limit-window, then 429 (default: no limit)",
    )
    faults.add_argument(
        "--rate-limit-window",
        metavar="S",
        type=positive_seconds,
        default=60.0,
        help="length of the rate-limit window (default: %(default)s)",
    )
    faults.add_argument(
        "--no-fetch-inputs",
        dest="fetch_inputs",
        action="store_false",
        help="neither fetch nor upscale inputs: every job yields a tiny image (for benchmarks)",
    )
    faults.add_argument(
        "--timestamp-format",
        choices=("iso", "space", "mixed"),
        default="iso",
        help="the timestamp forms in status answers (default: %(default)s)",
    )
    faults.add_argument(
        "--allow-remote-hosts",
        action="store_true",
        help="fetch inputs from, and post webhooks to, hosts other than loopback (by default "
        "the emulator only reaches this machine: it fetches whatever URL it is given)",
    )
    webhooks = emulator.add_argument_group("webhooks")
    webhooks.add_argument(
        "--allow-http-webhooks",
        action="store_true",
        help="accept http:// webhook URLs on loopback (the real gateway requires https), "
        "so that a local app can receive callbacks",
    )
    webhooks.add_argument(
        "--webhook-duplicate-rate",
        metavar="P",
        type=probability,
        default=0.0,
        help="share of callbacks delivered twice (default: %(default)s)",
    )
    webhooks.add_argument(
        "--webhook-loss-rate",
        metavar="P",
        type=probability,
        default=0.0,
        help="share of callbacks never sent (default: %(default)s)",
    )
    emulator.add_argument(
        "--log-level",
        choices=("critical", "error", "warning", "info", "debug"),
        default="info",
        help="the server's log level (default: %(default)s)",
    )


def _add_demo(commands: _Commands, redact: Callable[[str], str]) -> None:
    run = _run_options(default_scale=2, default_concurrency=8)
    demo = commands.add_parser(
        "demo",
        parents=[run],
        help="upscale the bundled samples through a local emulator (no key, no network)",
        description="Start the gateway emulator in this process, upscale its bundled sample\n"
        "images through the library exactly as `batch` would, and save the PNGs.\n"
        "No key, no network, no charge.",
        epilog=f"examples:\n  {PROG} demo\n  {PROG} demo --out /tmp/demo --scale 4 --time-scale 1",
        redact=redact,
    )
    demo.add_argument(
        "--time-scale",
        metavar="X",
        type=non_negative,
        default=0.1,
        help="speed of the emulated service: 1 is real time, the default %(default)s "
        "is ten times faster",
    )
    demo.add_argument("--seed", type=int, help="seed of the emulator's randomness")
    _add_backend(demo)


# Option value types for argparse: each says what it expected and what it got.


def positive_int(text: str) -> int:
    """A whole number >= 1 (``--concurrency``, ``--rate-limit``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def _number(text: str, *, low: float, high: float = math.inf, low_open: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    too_low = value <= low if low_open else value < low
    if not math.isfinite(value) or too_low or value > high:
        bound = f"> {low:g}" if low_open else f">= {low:g}"
        if high < math.inf:
            bound += f" and <= {high:g}"
        raise argparse.ArgumentTypeError(f"expected a number {bound}, got {text!r}")
    return value


def positive_seconds(text: str) -> float:
    """A duration > 0 (``--timeout``)."""
    return _number(text, low=0.0, low_open=True)


def non_negative(text: str) -> float:
    """A number >= 0 (``--time-scale``, ``--wallet``)."""
    return _number(text, low=0.0)


def probability(text: str) -> float:
    """A number in [0, 1] (``--error-rate``)."""
    return _number(text, low=0.0, high=1.0)


def port_number(text: str) -> int:
    """A TCP port, 0 for any free one."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port in 0..65535, got {value}")
    return value
