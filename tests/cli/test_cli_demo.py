"""``real-esrgan demo``: the bundled samples through the batch runner and an embedded emulator."""

from __future__ import annotations

from pathlib import Path

from cli_helpers import RunCli, png_size
from PIL import Image

from real_esrgan_async.testing import Emulator

SAMPLES = Path(__file__).parents[2] / "real_esrgan_async" / "testing" / "samples"


def test_demo_writes_one_png_per_bundled_sample_at_the_requested_scale(
    run_cli: RunCli, tmp_path: Path
) -> None:
    samples = [url.rsplit("/", 1)[-1] for url in Emulator.sample_urls("http://127.0.0.1")]

    result = run_cli(
        "demo", "--out", tmp_path, "--time-scale", "0.01", "--seed", "5", "--scale", "3"
    )

    assert 0 == result.code, result.err
    outputs = sorted(tmp_path.iterdir())
    assert len(samples) == len(outputs)
    for index, name in enumerate(samples):
        output = tmp_path / f"{index:04d}-{Path(name).stem}.png"
        with Image.open(SAMPLES / name) as sample:
            width, height = sample.size
        assert (3 * width, 3 * height) == png_size(output)
    assert f"{len(samples)} of {len(samples)} inputs upscaled" in result.out
    assert "(emulated: nothing was charged)" in result.out
    assert "Starting the gateway emulator" in result.err


def test_demo_json_needs_no_key_and_prints_only_the_document(
    run_cli: RunCli, tmp_path: Path
) -> None:
    result = run_cli("demo", "--out", tmp_path, "--time-scale", "0", "--json", "--backend", "trio")

    assert 0 == result.code, result.err
    summary = result.json()["summary"]
    assert summary["emulated"]
    assert summary["inputs"] == summary["completed"] == len(list(tmp_path.iterdir()))
