"""``real-esrgan emulator``: its options become the emulator's knobs; loopback only."""

from __future__ import annotations

from typing import Any

import pytest
from cli_helpers import RunCli

import real_esrgan_async.testing
from real_esrgan_async.testing import Emulator, EmulatorConfig


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What the command asked `serve` for (the config and the server's options), not served."""
    served: dict[str, Any] = {}

    def fake_serve(config: EmulatorConfig, **kwargs: Any) -> None:
        served.update(kwargs, config=config)

    monkeypatch.setattr(real_esrgan_async.testing, "serve", fake_serve)
    return served


def test_the_options_configure_the_served_emulator(run_cli: RunCli, served: dict[str, Any]) -> None:
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


def test_the_webhook_knobs_configure_the_served_emulator(
    run_cli: RunCli, served: dict[str, Any]
) -> None:
    result = run_cli(
        "emulator", "--port", "0", "--allow-http-webhooks",
        "--webhook-duplicate-rate", "0.25", "--webhook-loss-rate", "0.1",
    )  # fmt: skip

    assert 0 == result.code, result.err
    config = served["config"]
    assert (True, 0.25, 0.1) == (
        config.allow_http_webhooks,
        config.webhook_duplicate_rate,
        config.webhook_loss_rate,
    )


def test_a_webhook_rate_outside_0_to_1_is_a_usage_error(run_cli: RunCli) -> None:
    result = run_cli("emulator", "--webhook-loss-rate", "1.5")

    assert 2 == result.code
    assert "--webhook-loss-rate: expected a number >= 0 and <= 1, got '1.5'" in result.err


def test_the_banner_lists_the_failure_samples(run_cli: RunCli, served: dict[str, Any]) -> None:
    result = run_cli("emulator", "--port", "0")

    assert 0 == result.code, result.err
    base_url = f"http://127.0.0.1:{served['port']}"
    for name in ("oversized.png", "corrupt.png", "missing.png"):
        effect = Emulator.FAILURE_SAMPLES[name]
        assert f"  failure:  {base_url}/samples/{name}: {effect}\n" in result.out


def test_remote_hosts_are_refused_unless_allowed(run_cli: RunCli, served: dict[str, Any]) -> None:
    """The emulator fetches whatever URL it is given: only loopback unless asked."""
    assert 0 == run_cli("emulator", "--port", "0").code
    assert served["config"].allow_remote_hosts is False
    assert 0 == run_cli("emulator", "--port", "0", "--allow-remote-hosts").code
    assert served["config"].allow_remote_hosts is True
