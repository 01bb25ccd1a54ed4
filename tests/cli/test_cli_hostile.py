"""What the command prints for people never acts on the terminal, whatever the gateway says.

A gateway's error text and a line of a batch file are data: their control
characters print escaped (``\\x1b``), never raw, while ``--json`` keeps them
exact (JSON escapes them itself).
"""

from __future__ import annotations

from pathlib import Path

from cli_helpers import KEY, RunCli, gateway_args
from scripted_gateway import BASE, scripted_gateway

from real_esrgan_async.testing import RunningEmulator

#: Retitles the terminal, then clears it, when printed raw.
HOSTILE = "\x1b]0;pwned\x07\x1b[2J"
ESCAPED = "\\x1b]0;pwned\\x07\\x1b[2J"


def _scripted_args() -> list[str]:
    return ["--base-url", BASE, "--api-key", KEY]


#: The scripted gateway mocks no image host for preflight to read: these tests are about the
#: gateway's error texts.
NO_PREFLIGHT = "--no-preflight"


def test_a_gateway_error_with_control_characters_prints_escaped_and_json_keeps_it_exact(
    run_cli: RunCli, tmp_path: Path
) -> None:
    with scripted_gateway(error=f"bad input {HOSTILE}") as gateway:
        human = run_cli(
            "upscale", "https://img.test/a.png", "--out", tmp_path, NO_PREFLIGHT, *_scripted_args()
        )
        document = run_cli(
            "upscale",
            "https://img.test/a.png",
            "--out",
            tmp_path,
            "--json",
            NO_PREFLIGHT,
            *_scripted_args(),
        )

    assert (1, 1) == (human.code, document.code)
    assert 2 == len(gateway.request_ids)
    assert "\x1b" not in human.out + human.err
    assert "#0 https://img.test/a.png: failed: " in human.err
    assert f"bad input {ESCAPED}" in human.err
    message = document.json()["results"][0]["error"]["message"]
    assert f"bad input {HOSTILE}" in message


def test_status_prints_a_hostile_error_escaped(run_cli: RunCli) -> None:
    with scripted_gateway(error=f"bad input {HOSTILE}"):
        result = run_cli("status", "real-esrgan_00000000", *_scripted_args())

    assert 1 == result.code  # FAILED
    assert "\x1b" not in result.out + result.err
    assert f"error         bad input {ESCAPED}\n" in result.out


def test_a_batch_line_with_control_characters_prints_escaped(
    run_cli: RunCli, shared_gateway: RunningEmulator, tmp_path: Path
) -> None:
    listing = tmp_path / "urls.txt"
    listing.write_text(f"https://img.test/{HOSTILE}.png\n", encoding="utf-8")

    result = run_cli("batch", listing, "--out", tmp_path / "out", *gateway_args(shared_gateway))

    assert 1 == result.code
    assert "\x1b" not in result.out + result.err
    assert f"{listing}:1: https://img.test/{ESCAPED}.png: rejected: " in result.err


def test_a_very_long_gateway_error_is_shortened_for_people_and_whole_in_json(
    run_cli: RunCli, tmp_path: Path
) -> None:
    error = "Traceback: " + "x" * 1_500  # long for a terminal, within what the library keeps
    with scripted_gateway(error=error) as gateway:
        human = run_cli(
            "upscale", "https://img.test/a.png", "--out", tmp_path, NO_PREFLIGHT, *_scripted_args()
        )
        document = run_cli(
            "upscale",
            "https://img.test/a.png",
            "--out",
            tmp_path,
            "--json",
            NO_PREFLIGHT,
            *_scripted_args(),
        )
        status = run_cli("status", "real-esrgan_00000000", *_scripted_args())

    message = document.json()["results"][0]["error"]["message"]
    assert message.endswith(error)  # whole in --json
    message = message.replace(*reversed(gateway.request_ids))  # the human run's job, as printed
    left_out = len(message) - 300
    expected = (
        f"#0 https://img.test/a.png: failed: {message[:300]}... "
        f"({left_out} more characters; --json has them all)\n"
    )
    assert expected == human.err
    fields = dict(line.split(maxsplit=1) for line in status.out.splitlines())
    left_out = len(error) - 300
    assert f"{error[:300]}... ({left_out} more characters; --json has them all)" == fields["error"]
