"""``real-esrgan upscale URL...`` end to end, against the emulator on loopback."""

from __future__ import annotations

from pathlib import Path

from cli_helpers import RunCli, gateway_args, png_size, sample_size

from real_esrgan_async.testing import RunningEmulator


def test_upscale_saves_each_output_as_a_png_of_scale_times_the_input(
    run_cli: RunCli, shared_gateway: RunningEmulator, tmp_path: Path
) -> None:
    urls = [shared_gateway.sample_url("photo.jpg"), shared_gateway.sample_url("logo-rgba.png")]

    result = run_cli(
        "upscale", *urls, "--scale", "3", "--out", tmp_path, *gateway_args(shared_gateway)
    )

    assert 0 == result.code, result.err
    assert ["0000-photo.png", "0001-logo-rgba.png"] == sorted(p.name for p in tmp_path.iterdir())
    for name, file in [("photo.jpg", "0000-photo.png"), ("logo-rgba.png", "0001-logo-rgba.png")]:
        width, height = sample_size(shared_gateway, name)
        assert (3 * width, 3 * height) == png_size(tmp_path / file)
    assert f"2 of 2 inputs upscaled and saved to {tmp_path}/" in result.out
    assert "completed 2, failed 0, errored 0, rejected 0, not saved 0" in result.out
    assert "estimated cost $0.004 for 2 jobs" in result.out
    assert "latency per job: p50 " in result.out
    assert "" == result.err  # no bar (stderr is not a terminal), nothing went wrong


def test_urls_with_the_same_file_name_get_distinct_files_in_a_new_directory(
    run_cli: RunCli, shared_gateway: RunningEmulator, tmp_path: Path
) -> None:
    url = shared_gateway.sample_url("tiny.png")
    out = tmp_path / "a" / "b"

    result = run_cli("upscale", url, url, "--out", out, *gateway_args(shared_gateway))

    assert 0 == result.code, result.err
    assert ["0000-tiny.png", "0001-tiny.png"] == sorted(p.name for p in out.iterdir())
    assert (32, 32) == png_size(out / "0001-tiny.png")  # the default scale is the gateway's: 4
