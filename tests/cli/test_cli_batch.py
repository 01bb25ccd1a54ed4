"""``real-esrgan batch FILE|-``: the same runner, URLs streamed from a file or stdin."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from cli_helpers import KEY, RunCli, fast_config, gateway_args, png_size, sample_name, sample_size

from real_esrgan_async.testing import RunningEmulator, running_emulator


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_batch_from_a_file_skips_comments_and_saves_every_output(
    run_cli: RunCli, shared_gateway: RunningEmulator, tmp_path: Path, backend: str
) -> None:
    urls = shared_gateway.sample_urls()
    listing = tmp_path / "urls.txt"
    listing.write_text(
        "# the emulator's samples\n\n"
        + "".join(f"  {url}   # sample {n}\n" for n, url in enumerate(urls))
        + "\n# the end\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"

    result = run_cli(
        "batch",
        listing,
        "--scale",
        "2",
        "--out",
        out,
        "--backend",
        backend,
        *gateway_args(shared_gateway),
    )

    assert 0 == result.code, result.err
    expected = [f"{n:04d}-{Path(sample_name(url)).stem}.png" for n, url in enumerate(urls)]
    assert expected == sorted(p.name for p in out.iterdir())
    for url, name in zip(urls, expected, strict=True):
        width, height = sample_size(shared_gateway, sample_name(url))
        assert (2 * width, 2 * height) == png_size(out / name)
    assert f"{len(urls)} of {len(urls)} inputs upscaled" in result.out


def test_batch_from_stdin_with_json_prints_one_document_with_an_entry_per_input(
    run_cli: RunCli,
    shared_gateway: RunningEmulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    urls = [shared_gateway.sample_url(name) for name in ("pattern.png", "gray.png", "photo.jpg")]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(urls) + "\n"))

    result = run_cli(
        "batch", "-", "--scale", "2", "--out", tmp_path, "--json", *gateway_args(shared_gateway)
    )

    assert 0 == result.code, result.err
    document = result.json()
    summary = document["summary"]
    assert (3, 3, 0) == (summary["inputs"], summary["completed"], summary["exit_code"])
    assert 0.006 == summary["cost_usd"]
    assert summary["latency_p50_s"] <= summary["latency_p95_s"]
    assert urls == [entry["url"] for entry in document["results"]]
    for index, entry in enumerate(document["results"]):
        assert index == entry["index"]
        assert entry["ok"]
        assert entry["error"] is None
        assert entry["request_id"].startswith("real-esrgan_")
        assert Path(entry["output"]).is_file()
    assert "" == result.err


def test_batch_reads_its_input_lazily(
    run_cli: RunCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wallet that pays for 1 job stops the run: of 10,000 lines only 2 are ever read."""
    with running_emulator(fast_config(wallet_balance=0.002)) as gateway:
        stdin = io.StringIO(f"{gateway.sample_url('tiny.png')}\n" * 10_000)
        monkeypatch.setattr("sys.stdin", stdin)

        result = run_cli(
            "batch", "-", "--concurrency", "1", "--out", tmp_path, *gateway_args(gateway, KEY)
        )

    assert 3 == result.code
    assert "<stdin> was read up to line 2; the lines after it were not read" in result.err
    assert 2 == stdin.getvalue().count("\n", 0, stdin.tell())
    assert ["0000-tiny.png"] == [p.name for p in tmp_path.iterdir()]


def test_an_unreadable_batch_file_is_a_usage_error(run_cli: RunCli, tmp_path: Path) -> None:
    result = run_cli("batch", tmp_path / "nope.txt", "--api-key", "k" * 12)

    assert 2 == result.code
    assert f"real-esrgan: error: cannot read {tmp_path / 'nope.txt'}: No such file" in result.err
    assert "" == result.out


def test_a_batch_file_saved_with_a_byte_order_mark_keeps_its_first_url(
    run_cli: RunCli, shared_gateway: RunningEmulator, tmp_path: Path
) -> None:
    """Editors such as Notepad start UTF-8 files with a BOM: it is not part of the first URL."""
    urls = [shared_gateway.sample_url("tiny.png"), shared_gateway.sample_url("gray.png")]
    listing = tmp_path / "urls.txt"
    listing.write_bytes(b"\xef\xbb\xbf" + "\n".join(urls).encode() + b"\n")

    result = run_cli(
        "batch", listing, "--out", tmp_path / "out", "--json", *gateway_args(shared_gateway)
    )

    assert 0 == result.code, result.err
    assert urls == [entry["url"] for entry in result.json()["results"]]


def test_stdin_with_a_byte_order_mark_keeps_its_first_url(
    run_cli: RunCli,
    shared_gateway: RunningEmulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """stdin is decoded as a batch file is, whatever encoding the locale gave it."""
    url = shared_gateway.sample_url("tiny.png")
    raw = io.BytesIO(b"\xef\xbb\xbf" + url.encode() + b"\n")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(raw, encoding="latin-1"))

    result = run_cli(
        "batch", "-", "--out", tmp_path / "out", "--json", *gateway_args(shared_gateway)
    )

    assert 0 == result.code, result.err
    assert [url] == [entry["url"] for entry in result.json()["results"]]
