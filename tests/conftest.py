from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from fleet.valkey_server import RedisServer, start_server

# The fake gateway's `fake` and `client` fixtures; a test module may define its own instead.
pytest_plugins = ["fake_gateway"]


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {}), id="asyncio"),
        pytest.param(("trio", {}), id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, object]]:
    """Every async test runs once on asyncio and once on trio."""
    return request.param  # type: ignore[no-any-return]


# A real Valkey server for every test that needs one outside tests/fleet (the CLI's --store,
# the README's fleet recipes); tests/fleet/conftest.py has the same fixtures for its own.


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One server for the whole session, on a free loopback port."""
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
