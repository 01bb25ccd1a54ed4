"""Inputs that fail, and runs the gateway stops: exit status 1 or 3, and every paid id kept."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import pytest
from cli_helpers import KEY, RunCli, fast_config, gateway_args, png_size, sample_size

from real_esrgan_async.testing import RunningEmulator, running_emulator


def _failure_listing(gateway: RunningEmulator, path: Path) -> list[str]:
    urls = [
        gateway.sample_url("photo.jpg"),
        gateway.sample_url("corrupt.png"),
        gateway.sample_url("missing.png"),
        gateway.sample_url("oversized.png"),
        "ftp://example.com/cat.png",  # refused before sending: nothing paid
        gateway.sample_url("gray.png"),
    ]
    path.write_text("# good, bad and ugly\n" + "\n".join(urls) + "\n", encoding="utf-8")
    return urls


def test_a_batch_with_failures_exits_1_and_reports_each_input(
    run_cli: RunCli, shared_gateway: RunningEmulator, tmp_path: Path
) -> None:
    listing = tmp_path / "urls.txt"
    urls = _failure_listing(shared_gateway, listing)
    out = tmp_path / "out"

    result = run_cli(
        "batch", listing, "--scale", "2", "--out", out, "--json", "--no-preflight",
        *gateway_args(shared_gateway),
    )  # fmt: skip

    assert 1 == result.code
    document = result.json()
    summary = document["summary"]
    expected_counts = {
        "inputs": 6, "completed": 2, "failed": 3, "errored": 0, "rejected": 1,
        "not_saved": 0, "unfinished": 0, "jobs_submitted": 5, "exit_code": 1,
    }  # fmt: skip
    assert expected_counts == {key: summary[key] for key in expected_counts}
    assert 0.01 == summary["cost_usd"]  # FAILED jobs are charged
    assert summary["stopped_by"] is None
    assert [] == summary["unfinished_request_ids"]

    results = document["results"]
    assert urls == [entry["url"] for entry in results]
    assert [2, 3, 4, 5, 6, 7] == [entry["line"] for entry in results]
    assert [True, False, False, False, False, True] == [entry["ok"] for entry in results]
    statuses = ["completed", "failed", "failed", "failed", "rejected", "completed"]
    assert statuses == [entry["status"] for entry in results]
    corrupt, missing, oversized, rejected = results[1:5]
    assert "JobFailedError" == corrupt["error"]["type"]
    assert "'NoneType' object has no attribute 'shape'" in corrupt["error"]["message"]
    assert "404" in missing["error"]["message"]
    assert "2096704" in oversized["error"]["message"]
    for entry in (corrupt, missing, oversized):
        assert entry["request_id"] in entry["error"]["message"]  # the id of a charged job
        assert entry["output"] is None
    assert "InvalidRequestError" == rejected["error"]["type"]
    assert rejected["request_id"] is None
    assert rejected["latency_s"] is None
    for entry in (results[0], results[5]):
        width, height = sample_size(shared_gateway, entry["url"].rsplit("/", 1)[-1])
        assert (2 * width, 2 * height) == png_size(Path(entry["output"]))

    # One line on stderr per input not saved, naming the file and line.
    lines = sorted(result.err.splitlines())
    prefixes = [f"{listing}:{n}: {urls[n - 2]}: " for n in (3, 4, 5, 6)]
    assert prefixes == [line[: len(prefix)] for line, prefix in zip(lines, prefixes, strict=True)]
    assert lines[3].startswith(f"{listing}:6: ftp://example.com/cat.png: rejected: image must be")


def test_the_human_summary_counts_each_kind_of_failure(
    run_cli: RunCli, shared_gateway: RunningEmulator, tmp_path: Path
) -> None:
    listing = tmp_path / "urls.txt"
    _failure_listing(shared_gateway, listing)

    result = run_cli(
        "batch", listing, "--scale", "1", "--out", tmp_path / "out", "--no-preflight",
        *gateway_args(shared_gateway),
    )  # fmt: skip

    assert 1 == result.code
    assert "2 of 6 inputs upscaled and saved" in result.out
    assert "completed 2, failed 3, errored 0, rejected 1, not saved 0" in result.out
    assert "estimated cost $0.010 for 5 jobs" in result.out
    assert 4 == len(result.err.splitlines())


def test_a_missing_key_is_a_usage_error(run_cli: RunCli, tmp_path: Path) -> None:
    result = run_cli("upscale", "https://example.com/cat.jpg", "--out", tmp_path)

    assert 2 == result.code
    assert (
        "real-esrgan: error: no API key: pass --api-key KEY or set the REAL_ESRGAN_API_KEY "
        "environment variable (`real-esrgan demo` runs without one)\n"
    ) == result.err
    assert "" == result.out
    assert [] == list(tmp_path.iterdir())


def test_bad_options_are_usage_errors(run_cli: RunCli, tmp_path: Path) -> None:
    for argv in (
        ["upscale", "https://example.com/a.png", "--concurrency", "0"],
        ["upscale", "https://example.com/a.png", "--scale", "5"],
        ["upscale", "https://example.com/a.png", "--timeout", "-1"],
        ["upscale", "https://example.com/a.png", "--base-url", "not a url"],
        ["status", "   "],
        ["frobnicate"],
    ):
        result = run_cli(*argv, "--api-key", KEY)
        assert 2 == result.code, argv
        assert "real-esrgan" in result.err, argv
        assert "error: " in result.err, argv
        assert "" == result.out, argv


def test_a_wrong_key_stops_the_run_with_exit_status_3(
    run_cli: RunCli, shared_gateway: RunningEmulator, tmp_path: Path
) -> None:
    wrong = "wrong-key-0123456789abcdef"

    result = run_cli(
        "upscale", shared_gateway.sample_url("tiny.png"), shared_gateway.sample_url("gray.png"),
        "--out", tmp_path, *gateway_args(shared_gateway, wrong), secrets=(KEY, wrong),
    )  # fmt: skip

    assert 3 == result.code
    assert "real-esrgan: error: the run stopped: gateway answered 401" in result.err
    assert "no paid job was left unfinished" in result.err
    assert "0 of 2 inputs upscaled" in result.out
    assert "unfinished 2" in result.out  # both were read, neither got an outcome
    assert [] == list(tmp_path.iterdir())


def test_an_empty_wallet_stops_the_run_with_exit_status_3_and_prints_the_unfinished_ids(
    run_cli: RunCli, tmp_path: Path
) -> None:
    """The wallet pays for 2 jobs; they outlive --timeout, so they are paid and unfinished."""
    config = fast_config(wallet_balance=0.004, time_scale=1.0)
    with running_emulator(config) as gateway:
        urls = [gateway.sample_url("tiny.png")] * 4
        result = run_cli(
            "upscale", *urls, "--timeout", "0.3", "--out", tmp_path, "--json",
            *gateway_args(gateway),
        )  # fmt: skip
        paid = gateway.emulator.request_ids()

    assert 3 == result.code
    assert 2 == len(paid)
    assert "real-esrgan: error: the run stopped: gateway answered 402: Insufficient Balance" in (
        result.err
    )
    assert "2 paid jobs not seen finished (check with `real-esrgan status REQUEST_ID`):" in (
        result.err
    )
    for request_id in paid:
        assert f"  {request_id}\n" in result.err
    document = result.json()
    summary = document["summary"]
    assert sorted(paid) == sorted(summary["unfinished_request_ids"])
    assert "InsufficientBalanceError" == summary["stopped_by"]["type"]
    assert (2, 2) == (summary["errored"], summary["rejected"])
    kinds = sorted((entry["status"], entry["error"]["type"]) for entry in document["results"])
    expected = [
        ("errored", "JobTimeoutError"),
        ("errored", "JobTimeoutError"),
        ("rejected", "InsufficientBalanceError"),
        ("rejected", "InsufficientBalanceError"),
    ]
    assert expected == kinds


def test_the_key_is_masked_even_where_the_library_cannot_see_it(
    run_cli: RunCli, shared_gateway: RunningEmulator, tmp_path: Path
) -> None:
    """A key pasted into an input URL is masked in the stderr lines and the JSON document."""
    leaky = shared_gateway.base_url + f"/samples/{KEY}.png"  # a 404: the job fails

    result = run_cli("upscale", leaky, "--out", tmp_path, "--json", *gateway_args(shared_gateway))

    assert 1 == result.code
    assert result.json()["results"][0]["url"].endswith("/samples/***.png")
    assert "/samples/***.png" in result.err


def test_the_key_from_the_environment_is_masked_in_usage_errors(
    run_cli: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REAL_ESRGAN_API_KEY", KEY)

    result = run_cli("status", "real-esrgan_0", KEY)  # the key pasted in the wrong place

    assert 2 == result.code
    assert "unrecognized arguments: ***" in result.err


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_an_unreachable_gateway_stops_the_run_early_with_exit_status_4(
    run_cli: RunCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, closed_port: int
) -> None:
    """Not 50 "rejected" lines: the first input that cannot be sent stops the run."""
    base_url = f"http://127.0.0.1:{closed_port}"
    monkeypatch.setattr("sys.stdin", io.StringIO("https://img.test/a.png\n" * 50))

    result = run_cli(
        "batch", "-", "--concurrency", "2", "--out", tmp_path, "--json",
        "--base-url", base_url, "--api-key", KEY,
    )  # fmt: skip

    assert 4 == result.code
    assert f"real-esrgan: error: the run stopped: cannot reach the gateway at {base_url} (" in (
        result.err
    )
    summary = result.json()["summary"]
    assert "GatewayUnreachableError" == summary["stopped_by"]["type"]
    assert 4 == summary["exit_code"]
    assert summary["rejected"] <= 2  # at most the inputs in flight when it stopped
    assert summary["inputs"] <= 3
    assert 0 == summary["jobs_submitted"]


def test_status_with_an_unreachable_gateway_exits_4(run_cli: RunCli, closed_port: int) -> None:
    base_url = f"http://127.0.0.1:{closed_port}"

    result = run_cli("status", "real-esrgan_0", "--base-url", base_url, "--api-key", KEY)

    assert 4 == result.code
    assert result.err.startswith(f"real-esrgan: error: cannot reach the gateway at {base_url} (")


def test_a_corrupt_or_oversized_input_gets_a_hint_in_plain_words(
    run_cli: RunCli, shared_gateway: RunningEmulator, tmp_path: Path
) -> None:
    urls = [shared_gateway.sample_url("corrupt.png"), shared_gateway.sample_url("oversized.png")]

    # Without preflight, which would refuse both unpaid (see test_cli_preflight.py).
    args = ["--out", tmp_path, "--no-preflight", *gateway_args(shared_gateway)]
    human = run_cli("upscale", *urls, *args)
    document = run_cli("upscale", *urls, "--json", *args)

    assert (1, 1) == (human.code, document.code)
    corrupt, oversized = sorted(human.err.splitlines())
    assert corrupt.startswith(
        f"#0 {urls[0]}: failed: could not decode the input image (job real-esrgan_"
    )
    assert "'NoneType' object has no attribute 'shape'" in corrupt
    assert oversized.startswith(
        f"#1 {urls[1]}: failed: the input image has too many pixels for the model"
    )
    hints = [entry["error"]["hint"] for entry in document.json()["results"]]
    assert "could not decode the input image" == hints[0]
    assert hints[1].startswith("the input image has too many pixels")
