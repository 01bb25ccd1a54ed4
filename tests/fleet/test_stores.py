"""The `Store` contract, held by `SQLiteStore` and by `RedisStore` on a real Valkey server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from real_esrgan_async import (
    RedisStore,
    SQLiteStore,
    Store,
    StoreMismatchError,
    StoreUnavailableError,
)
from real_esrgan_async._keys import Bucket, take_token

GATEWAY = "http://127.0.0.1:8000"


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        opened: Store = SQLiteStore(tmp_path / "keys.db")
    else:
        url = request.getfixturevalue("redis_url")
        opened = RedisStore(url, prefix=request.getfixturevalue("prefix"))
    opened.open(GATEWAY)
    yield opened
    opened.close()


def test_only_the_first_claim_writes(store: Store) -> None:
    """Two claims on one key: the first writes and leases, the second reads the first's record."""
    first = store.claim("k", "A", "owner-1", 30.0)
    second = store.claim("k", "B", "owner-2", 30.0)
    assert ((True, "A", True), (False, "A", True)) == (first, second)


def test_swap_is_a_compare_and_set_that_releases_the_lease(store: Store) -> None:
    store.claim("k", "A", "o", 30.0)
    stale = store.swap("k", "X", "B")
    done = store.swap("k", "A", "B")
    assert (False, True, ("B", False)) == (stale, done, store.get("k"))


def test_swap_to_none_frees_the_key(store: Store) -> None:
    """A POST that provably created nothing frees its key for the next claim."""
    store.claim("k", "A", "o", 30.0)
    store.swap("k", "A", None)
    assert (None, False) == store.get("k")
    assert (True, "C", True) == store.claim("k", "C", "o2", 30.0)


def test_a_lapsed_lease_lets_a_lapsed_only_swap_through(store: Store) -> None:
    """While the owner holds its lease nobody may mark the key; once it lapses they may."""
    store.claim("k", "A", "o", 0.2)
    held = store.swap("k", "A", "AMB", lapsed_only=True)
    time.sleep(0.4)
    lapsed = store.get("k")
    marked = store.swap("k", "A", "AMB", lapsed_only=True)
    assert (False, ("A", False), True) == (held, lapsed, marked)


def test_only_the_owner_renews_its_lease(store: Store) -> None:
    store.claim("k", "A", "o", 0.3)
    assert (True, False) == (store.renew("k", "o", 30.0), store.renew("k", "intruder", 30.0))
    time.sleep(0.5)
    assert ("A", True) == store.get("k")


def test_a_store_of_another_gateway_is_refused(
    store: Store, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Keys name jobs at one gateway: the same store opened for another is refused."""
    if isinstance(store, SQLiteStore):
        again: Store = SQLiteStore(store.path)
    else:
        assert isinstance(store, RedisStore)
        again = RedisStore(store.url, prefix=store.prefix)
    with pytest.raises(StoreMismatchError, match=r"not 'https://other\.example'"):
        again.open("https://other.example")


def test_a_redis_store_of_another_format_is_refused(redis_url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    client.set(f"{prefix}:meta", '{"format": "real-esrgan-async/keys/0", "gateway": "x"}')
    client.close()
    with pytest.raises(StoreMismatchError, match="keys/0"):
        RedisStore(redis_url, prefix=prefix).open(GATEWAY)


def test_an_unreachable_redis_is_named_without_its_password(redis_server: object) -> None:
    from conftest import free_port

    url = f"redis://user:hunter2@127.0.0.1:{free_port()}/0"
    with pytest.raises(StoreUnavailableError) as caught:
        RedisStore(url, socket_timeout=1.0).open(GATEWAY)
    message = str(caught.value)
    assert (True, False) == (
        "127.0.0.1" in message and "user:***@" in message,
        "hunter2" in message,
    )


def test_the_server_bucket_agrees_with_the_pure_one(redis_url: str, prefix: str) -> None:
    """Burst 3 at a slow rate: the Lua bucket grants three submits, then asks for a wait
    close to the pure function's (the server's clock moved a little meanwhile)."""
    store = RedisStore(redis_url, prefix=prefix, submit_rate=0.5, submit_burst=3)
    store.open(GATEWAY)
    try:
        server = [store.take_submit_token() for _ in range(4)]
    finally:
        store.close()
    pure = take_token(Bucket(0.0, 0.0), now=0.0, rate=0.5, burst=3.0).wait
    assert [0.0, 0.0, 0.0] == server[:3]
    assert pure == pytest.approx(server[3], abs=0.1)


def test_a_fleet_pause_holds_every_workers_tokens(redis_url: str, prefix: str) -> None:
    """After one worker reports a 429, another worker's next token waits out the pause."""
    one = RedisStore(redis_url, prefix=prefix, submit_rate=100.0)
    two = RedisStore(redis_url, prefix=prefix, submit_rate=100.0)
    one.open(GATEWAY)
    two.open(GATEWAY)
    try:
        before = two.take_submit_token()
        one.pause_fleet(5.0)
        during = two.take_submit_token()
    finally:
        one.close()
        two.close()
    assert 0.0 == before
    assert 4.0 < during <= 5.0
