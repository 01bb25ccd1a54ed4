"""The CLI's small pure parts: file names, percentiles, the line reader, masking, escaping."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from cli_helpers import RunCli, gateway_args

from real_esrgan_async.cli._batch import Input, InputError, LineInputs, output_name
from real_esrgan_async.cli._output import Output, escape_controls
from real_esrgan_async.cli._parser import api_keys_in
from real_esrgan_async.cli._report import percentile
from real_esrgan_async.testing import RunningEmulator


@pytest.mark.parametrize(
    ("index", "url", "expected"),
    [
        (3, "https://example.com/img/cat.jpg", "0003-cat.png"),
        (0, "https://example.com/cat.jpg?size=large#top", "0000-cat.png"),
        (12345, "https://example.com/a/photo.PNG", "12345-photo.png"),
        (7, "https://example.com/", "0007-image.png"),
        (8, "https://example.com/..", "0008-image.png"),
        (9, "https://example.com/..%2F..%2Fetc%2Fpasswd", "0009-passwd.png"),
        (1, "https://example.com/my%20holiday%3F%20(1).jpeg", "0001-my_holiday_1.png"),
        (2, "not a url at all", "0002-not_a_url_at_all.png"),
    ],
)
def test_output_names_are_indexed_and_safe(index: int, url: str, expected: str) -> None:
    assert expected == output_name(index, url)


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(n) for n in range(100, 0, -1)]
    assert (50.0, 95.0, 100.0) == (
        percentile(values, 50),
        percentile(values, 95),
        percentile(values, 100),
    )
    assert 3.0 == percentile([3.0], 95)
    assert percentile([], 50) is None


async def _read_all(inputs: LineInputs) -> list[Input]:
    return [item async for item in inputs]


@pytest.mark.anyio
async def test_the_line_reader_skips_blanks_and_comments_and_keeps_line_numbers(
    tmp_path: Path,
) -> None:
    text = "# header\n\n  https://a.example/1.png  \nhttps://a.example/2.png # two\n#x\nhttps://a.example/3.png"
    expected = [
        Input(3, "https://a.example/1.png"),
        Input(4, "https://a.example/2.png"),
        Input(6, "https://a.example/3.png"),
    ]
    assert expected == await _read_all(LineInputs(io.StringIO(text), "<stdin>"))
    listing = tmp_path / "urls.txt"  # a regular file is read in chunks: same result
    listing.write_text(text, encoding="utf-8")
    with listing.open(encoding="utf-8") as stream:
        reader = LineInputs(stream, "urls.txt")
        assert expected == await _read_all(reader)
    assert 6 == reader.last_line


@pytest.mark.anyio
async def test_the_line_reader_reports_a_file_that_is_not_text(tmp_path: Path) -> None:
    listing = tmp_path / "urls.bin"
    listing.write_bytes(b"https://a.example/1.png\n\xff\xfe\x00garbage\n")
    with listing.open(encoding="utf-8") as stream, pytest.raises(InputError) as caught:
        await _read_all(LineInputs(stream, "urls.bin"))
    assert "urls.bin is not UTF-8 text (near line 1)" == str(caught.value)


def test_a_batch_file_that_is_not_text_stops_the_run_with_exit_status_1(
    run_cli: RunCli, shared_gateway: RunningEmulator, tmp_path: Path
) -> None:
    listing = tmp_path / "urls.bin"
    listing.write_bytes(b"\xff\xfe\x00garbage\n")

    result = run_cli("batch", listing, "--out", tmp_path / "out", *gateway_args(shared_gateway))

    assert 1 == result.code
    assert f"real-esrgan: error: the run stopped: {listing} is not UTF-8 text" in result.err
    assert "0 of 0 inputs upscaled" in result.out


def test_output_masks_secrets_longest_first_and_ignores_trivial_ones() -> None:
    stdout, stderr = io.StringIO(), io.StringIO()
    output = Output(stdout, stderr, secrets=["abcd", "abcdef", "", "xy"])
    output.result("key abcdef, part abcd, xy")
    output.error("bad key abcdef\n  twice")
    assert "key ***, part ***, xy\n" == stdout.getvalue()
    assert "real-esrgan: error: bad key *** twice\n" == stderr.getvalue()


def test_api_keys_are_found_in_argv_in_both_spellings() -> None:
    argv = ["upscale", "--api-key", "one", "u", "--api-key=two", "--api-key"]
    assert ["one", "two"] == api_keys_in(argv)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain text, café, 日本語", "plain text, café, 日本語"),
        ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),
        ("tab\there\r\n", "tab\\x09here\\x0d\\x0a"),
        ("\x9b2J C1 CSI", "\\x9b2J C1 CSI"),  # the one-byte CSI of 8-bit terminals
        ("abc\u202edef", "abc\\u202edef"),  # a bidi override reorders what follows
        ("\U000e0041 tag", "\\U000e0041 tag"),
    ],
)
def test_escape_controls_escapes_what_a_terminal_would_act_on_and_keeps_text(
    text: str, expected: str
) -> None:
    assert expected == escape_controls(text)
