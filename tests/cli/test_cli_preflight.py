"""Preflight is on in ``upscale`` and ``batch``: an input that would FAIL (charged) is refused
unpaid; ``--no-preflight`` sends it to the gateway as before."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import RunCli, fast_config, gateway_args

from real_esrgan_async.testing import running_emulator


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_an_oversized_or_corrupt_input_gets_no_post_and_the_others_go_on(
    run_cli: RunCli, tmp_path: Path, backend: str
) -> None:
    with running_emulator(fast_config()) as gateway:
        urls = [
            gateway.sample_url("oversized.png"),  # 1080x2400, over the model's limit
            gateway.sample_url("corrupt.png"),  # not an image
            gateway.sample_url("tiny.png"),
        ]
        listing = tmp_path / "urls.txt"
        listing.write_text("\n".join(urls) + "\n", encoding="utf-8")

        result = run_cli(
            "batch", listing, "--out", tmp_path / "out", "--json", "--backend", backend,
            *gateway_args(gateway),
        )  # fmt: skip
        posted = [
            job.image
            for rid in gateway.emulator.request_ids()
            if (job := gateway.emulator.job(rid))
        ]

    assert 1 == result.code
    assert [urls[2]] == posted  # only the good input was paid for
    oversized, corrupt, good = result.json()["results"]
    assert ("rejected", "rejected", "completed") == (
        oversized["status"], corrupt["status"], good["status"],
    )  # fmt: skip
    assert "1080x2400 = 2,592,000 pixels, over the model's limit" in oversized["error"]["message"]
    assert "nothing was submitted" in corrupt["error"]["message"].lower()
    assert (None, None) == (oversized["request_id"], corrupt["request_id"])
    assert 0.002 == result.json()["summary"]["cost_usd"]


def test_no_preflight_sends_them_to_the_gateway_which_fails_them(
    run_cli: RunCli, tmp_path: Path
) -> None:
    with running_emulator(fast_config()) as gateway:
        urls = [gateway.sample_url("oversized.png"), gateway.sample_url("corrupt.png")]

        result = run_cli(
            "upscale", *urls, "--out", tmp_path, "--json", "--no-preflight", *gateway_args(gateway)
        )
        paid = gateway.emulator.stats().jobs_created

    assert 1 == result.code
    assert 2 == paid
    assert ["failed", "failed"] == [entry["status"] for entry in result.json()["results"]]
