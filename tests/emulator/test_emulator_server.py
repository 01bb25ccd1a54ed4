"""The public surface: exports, configuration, serving on loopback, stats, reset, inspection."""

from __future__ import annotations

import logging
import random
import signal
import socket
import subprocess
import sys
import time
import uuid

import httpx
import pytest
from emulator_helpers import (
    SUBMIT_PATH,
    async_client,
    fast_config,
    key_headers,
    run_job,
    submit,
    sync_client,
)

import real_esrgan_async.testing as testing
from real_esrgan_async.testing import (
    Emulator,
    EmulatorConfig,
    EmulatorStats,
    running_emulator,
)
from real_esrgan_async.testing._faults import DeliberateDropError, DropLogFilter
from real_esrgan_async.testing._ids import RequestIdFactory
from real_esrgan_async.testing._jobs import format_timestamp
from real_esrgan_async.testing._server import _bind


def test_exported_names_are_exactly_the_public_api() -> None:
    """``__all__`` lists exactly what is meant to be public, sorted."""
    assert [
        "DEFAULT_API_KEY",
        "MAX_INPUT_PIXELS",
        "Emulator",
        "EmulatorConfig",
        "EmulatorStats",
        "JobSnapshot",
        "RunningEmulator",
        "TimestampFormat",
        "running_emulator",
        "serve",
    ] == testing.__all__
    assert all(hasattr(testing, name) for name in testing.__all__)


def test_default_config_behaves_like_the_gateway() -> None:
    """The defaults: one key ``emulator-key``, real time, $0.002 a job, unlimited wallet, no
    rate limit, inputs fetched, ~1.5% ERRORs, one-hour media, ISO timestamps, no faults."""
    config = EmulatorConfig()
    assert frozenset({"emulator-key"}) == config.api_keys
    assert (1.0, 0.002, None, None, True) == (
        config.time_scale,
        config.price_per_image,
        config.wallet_balance,
        config.rate_limit,
        config.fetch_inputs,
    )
    assert (0.015, 3600.0, "iso") == (config.error_rate, config.media_ttl, config.timestamp_format)
    assert (0.0, 0.0, 0.0, 0.0) == (
        config.status_error_rate,
        config.drop_before_create_rate,
        config.drop_after_create_rate,
        config.latency,
    )


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"time_scale": -1}, ValueError, "time_scale must be >= 0, got -1"),
        ({"time_scale": float("nan")}, ValueError, "time_scale must be finite"),
        ({"time_scale": "fast"}, TypeError, "time_scale must be a number, got 'fast'"),
        ({"error_rate": 1.5}, ValueError, "error_rate is a probability and must be in [0, 1]"),
        ({"rate_limit": 0}, ValueError, "rate_limit must be >= 1, got 0"),
        ({"rate_limit": True}, TypeError, "rate_limit must be an int, got True"),
        ({"rate_limit_window": 0}, ValueError, "rate_limit_window must be > 0, got 0"),
        ({"api_keys": []}, ValueError, "api_keys must hold at least one API key"),
        ({"api_keys": [""]}, ValueError, "api_keys must hold non-empty strings"),
        ({"fetch_inputs": 1}, TypeError, "fetch_inputs must be a bool, got 1"),
        ({"timestamp_format": "rfc"}, ValueError, "timestamp_format must be one of"),
        ({"wallet_balance": -0.01}, ValueError, "wallet_balance must be >= 0"),
        ({"seed": "abc"}, TypeError, "seed must be an int or None"),
    ],
)
def test_invalid_config_says_what_is_wrong(
    options: dict[str, object], error: type[Exception], message: str
) -> None:
    """Invalid knobs are refused with the knob's name, the rule and the value."""
    with pytest.raises(error) as info:
        EmulatorConfig(**options)  # type: ignore[arg-type]
    assert str(info.value).startswith(message)


def test_config_is_frozen_and_takes_a_single_key_string() -> None:
    """The config is immutable; a lone string is one key, not a set of characters."""
    config = EmulatorConfig(api_keys="secret")
    assert frozenset({"secret"}) == config.api_keys
    with pytest.raises(AttributeError):
        config.time_scale = 2.0  # type: ignore[misc]


def test_port_zero_picks_a_free_port_per_emulator() -> None:
    """Two emulators on port 0 get two real, different ports, reflected in ``base_url``."""
    with running_emulator() as first, running_emulator() as second:
        assert first.port != second.port
        assert 0 not in (first.port, second.port)
        assert f"http://127.0.0.1:{first.port}" == first.base_url
        with sync_client() as client:
            assert 200 == client.get(first.base_url + "/_emulator/stats").status_code
            assert 200 == client.get(second.base_url + "/_emulator/stats").status_code
        assert "emulator-key" == first.api_key


def test_explicit_port_is_used() -> None:
    """An explicit free port is the one listened on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with running_emulator(port=port) as gateway, sync_client() as client:
        assert port == gateway.port
        assert 200 == client.get(f"http://127.0.0.1:{port}/_emulator/stats").status_code


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com", "::"])
def test_only_loopback_hosts_are_served(host: str) -> None:
    """Serving on any non-loopback address is refused before binding."""
    with pytest.raises(ValueError, match="only listens on loopback"), running_emulator(host=host):
        pass  # pragma: no cover


def test_the_server_stops_on_exit() -> None:
    """After the ``with`` block the port no longer accepts connections."""
    with running_emulator() as gateway:
        base_url = gateway.base_url
    with sync_client() as client, pytest.raises(httpx.ConnectError):
        client.get(base_url + "/_emulator/stats")


def test_listening_socket_is_tcp_so_asyncio_disables_nagle() -> None:
    """The socket handed to uvicorn says IPPROTO_TCP; otherwise asyncio leaves Nagle on and
    each response on a kept-alive connection waits ~40 ms for a delayed ACK."""
    sock = _bind("127.0.0.1", 0)
    try:
        assert socket.IPPROTO_TCP == sock.proto
    finally:
        sock.close()


@pytest.mark.anyio
async def test_works_from_async_code_on_either_backend() -> None:
    """The threaded server runs its own loop: an asyncio or trio test talks to it with an
    async client."""
    with running_emulator(fast_config(fetch_inputs=False)) as gateway:
        async with async_client() as client:
            response = await client.post(
                gateway.base_url + SUBMIT_PATH,
                json={"image": "https://example.com/a.png"},
                headers=key_headers(gateway),
            )
    assert 202 == response.status_code


def test_stats_endpoint_serves_the_snapshot_as_json(gateway: testing.RunningEmulator) -> None:
    """``GET /_emulator/stats`` (no key) returns every counter of ``Emulator.stats()``."""
    with sync_client() as client:
        body = run_job(client, gateway, gateway.sample_url("tiny.png"))
        served = client.get(gateway.base_url + "/_emulator/stats").json()
    expected = gateway.emulator.stats().to_json()
    assert sorted(expected) == sorted(served)
    assert 1 == served["jobs_created"]
    assert {gateway.sample_url("tiny.png"): 1} == served["submits_by_image"]
    assert served["status_calls_by_request_id"][body["request_id"]] >= 1
    assert 0.002 == served["amount_charged"]


def test_stats_snapshot_is_frozen(gateway: testing.RunningEmulator) -> None:
    """A snapshot does not change afterwards and cannot be changed."""
    snapshot = gateway.emulator.stats()
    with sync_client() as client:
        submit(client, gateway, gateway.sample_url("tiny.png"))
    assert 0 == snapshot.jobs_created
    assert isinstance(snapshot, EmulatorStats)
    with pytest.raises(AttributeError):
        snapshot.jobs_created = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        snapshot.submits_by_image["x"] = 1  # type: ignore[index]


def test_job_inspection_and_reset(gateway: testing.RunningEmulator) -> None:
    """``job()`` shows a job's parameters and status; ``reset()`` forgets jobs and counters."""
    with sync_client() as client:
        body = run_job(client, gateway, gateway.sample_url("tiny.png"), scale=2)
    snapshot = gateway.emulator.job(body["request_id"])
    assert snapshot is not None
    assert ("COMPLETED", 2, False, None) == (
        snapshot.status,
        snapshot.scale,
        snapshot.face_enhance,
        snapshot.error,
    )
    assert gateway.emulator.job("real-esrgan_unknown") is None
    gateway.emulator.reset()
    assert gateway.emulator.job(body["request_id"]) is None
    assert 0 == gateway.emulator.stats().jobs_created


def test_top_up_rules() -> None:
    """Top-ups are for limited wallets and non-negative amounts."""
    with pytest.raises(ValueError, match="unlimited"):
        Emulator().top_up(1.0)
    with pytest.raises(ValueError, match=">= 0"):
        Emulator(EmulatorConfig(wallet_balance=0.0)).top_up(-1.0)


def test_sample_urls() -> None:
    """Bundled samples are listed under ``/samples/``; failure samples can be named too."""
    assert [
        "http://h:1/samples/gray.png",
        "http://h:1/samples/gray16.png",
        "http://h:1/samples/logo-rgba.png",
        "http://h:1/samples/pattern.png",
        "http://h:1/samples/photo.jpg",
        "http://h:1/samples/tiny.png",
    ] == Emulator.sample_urls("http://h:1")
    assert "http://h:1/samples/oversized.png" == Emulator.sample_url("http://h:1/", "oversized.png")
    with pytest.raises(ValueError, match="unknown sample"):
        Emulator.sample_url("http://h:1", "cat.png")


def test_an_emulator_can_be_served_again_after_stopping() -> None:
    """The same ``Emulator`` keeps its state across two successive servers."""
    emulator = Emulator(fast_config(fetch_inputs=False))
    for _ in range(2):
        with running_emulator(emulator) as gateway, sync_client() as client:
            assert 202 == submit(client, gateway, "https://example.com/a.png").status_code
    assert 2 == emulator.stats().jobs_created


def test_serve_blocks_and_serves_until_interrupted() -> None:
    """``serve()`` (for the CLI) serves on the given loopback port until SIGINT."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = f"from real_esrgan_async.testing import serve\nserve(port={port}, log_level='warning')\n"
    process = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 20
        with sync_client() as client:
            while True:
                try:
                    response = client.get(f"http://127.0.0.1:{port}/_emulator/stats")
                    break
                except httpx.ConnectError:
                    assert time.monotonic() < deadline, "serve() did not start"
                    time.sleep(0.05)
        assert 200 == response.status_code
        process.send_signal(signal.SIGINT)
        assert 0 == process.wait(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_request_id_factory_is_monotonic_within_a_millisecond() -> None:
    """Ids made in the same millisecond, or after the clock stepped back, still increase,
    and carry the millisecond timestamp in their first 48 bits."""
    factory = RequestIdFactory(random.Random(0))
    ids = [factory.next_id(1_780_000_000.123) for _ in range(5000)]
    ids.append(factory.next_id(1_779_999_999.0))
    assert sorted(ids) == ids
    assert len(set(ids)) == len(ids)
    first = uuid.UUID(ids[0].removeprefix("real-esrgan_"))
    assert 1_780_000_000_123 == first.int >> 80
    assert (7, uuid.RFC_4122) == (first.version, first.variant)


def test_timestamp_forms() -> None:
    """ISO 8601 with milliseconds and Z, or the space-separated form without zone (UTC)."""
    assert "2026-05-22T13:17:32.110Z" == format_timestamp(1779455852.110, "iso")
    assert "2026-05-22 13:17:32" == format_timestamp(1779455852.999, "space")


def test_one_emulator_cannot_be_served_twice_at_once() -> None:
    """A second server for an emulator already being served fails to start."""
    emulator = Emulator(fast_config())
    with running_emulator(emulator) as gateway:
        with (
            pytest.raises(RuntimeError, match="stopped during startup"),
            running_emulator(emulator),
        ):
            pass  # pragma: no cover
        with sync_client() as client:
            assert 200 == client.get(gateway.base_url + "/_emulator/stats").status_code


def test_drop_log_filter_hides_only_deliberate_drops() -> None:
    """uvicorn's error log keeps every record except those about a deliberate drop."""

    def record(exc: BaseException | None) -> logging.LogRecord:
        exc_info = (type(exc), exc, None) if exc is not None else None
        return logging.LogRecord("uvicorn.error", logging.ERROR, "", 0, "boom", (), exc_info)

    log_filter = DropLogFilter()
    assert not log_filter.filter(record(DeliberateDropError("on purpose")))
    assert log_filter.filter(record(RuntimeError("a real bug")))
    assert log_filter.filter(record(None))
