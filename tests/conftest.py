from __future__ import annotations

import pytest

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
