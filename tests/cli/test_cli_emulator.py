"""``real-esrgan emulator``: its options become the emulator's knobs; loopback only."""

from __future__ import annotations

from typing import Any

import pytest
from cli_helpers import RunCli

import real_esrgan_async.testing
from real_esrgan_async.testing import EmulatorConfig


def test_the_options_configure_the_served_emulator(
    run_cli: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    served: dict[str, Any] = {}

    def fake_serve(config: EmulatorConfig, **kwargs: Any) -> None:
        served.update(kwargs, config=config)

    monkeypatch.setattr(real_esrgan_async.testing, "serve", fake_serve)

    result = run_cli(
        "emulator", "--port", "0", "--time-scale", "0.05", "--seed", "9", "--wallet", "1.5",
        "--error-rate", "0.2", "--rate-limit", "30", "--rate-limit-window", "10",
        "--no-fetch-inputs", "--api-key", "k-one", "--api-key", "k-two", "--log-level", "warning",
    )  # fmt: skip

    assert 0 == result.code, result.err
    config = served["config"]
    assert (
        EmulatorConfig(
            api_keys={"k-one", "k-two"},
            time_scale=0.05,
            seed=9,
            wallet_balance=1.5,
            error_rate=0.2,
            rate_limit=30,
            rate_limit_window=10.0,
            fetch_inputs=False,
        )
        == config
    )
    assert ("127.0.0.1", "warning") == (served["host"], served["log_level"])
    port = served["port"]
    assert port > 0  # a free port was picked, so that the URL printed is the real one
    assert f"Real-ESRGAN gateway emulator on http://127.0.0.1:{port}\n" in result.out
    assert "API key:  k-one, k-two" in result.out  # the emulator's own keys are no secret


def test_the_emulator_refuses_to_listen_beyond_loopback(run_cli: RunCli) -> None:
    result = run_cli("emulator", "--host", "0.0.0.0")

    assert 2 == result.code
    assert "listens only on loopback" in result.err
    assert "" == result.out
