"""`RedisStore`: idempotency keys and the fleet's rate limit in Redis (or Valkey).

Every operation is one Lua script, so that it is atomic on the server: a claim
is a ``SET`` only if the key is absent, a swap a compare-and-set, and the
submit budget a token bucket read and written in one step on the server's
clock (``TIME``), so that the workers' clocks never matter. Leases are keys
with a TTL: a process that dies mid-POST stops renewing, the lease vanishes on
the server, and the next caller finds the key AMBIGUOUS.

It uses redis-py's *blocking* client, called from worker threads like every
`Store` (see `_store`): one implementation that behaves the same on asyncio
and trio (redis-py's asyncio client cannot run on trio). The cost is a thread
hop per call, small beside the paid POST it guards.

Keys, under ``prefix``::

    <prefix>:meta            the format marker (format, gateway)
    <prefix>:key:<key>       a KeyRecord
    <prefix>:lease:<key>     its owner's lease (TTL)
    <prefix>:bucket          the submit token bucket (tokens, at)
    <prefix>:cooldown        until when every worker pauses after a 429 (server time)
    <prefix>:callbacks       the channel on which webhook callbacks are relayed (pub/sub)
    <prefix>:check:<id>      a job's last relayed status answer (answer, at, terminal; TTL)
    <prefix>:checking:<id>   the claim of the worker whose status call of it is out (TTL)
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ._exceptions import InvalidRequestError, StoreUnavailableError
from ._keys import CHECK_ANSWER_TTL, CHECK_LEASE, CheckStep
from ._options import flag, number
from ._store import DEFAULT_LEASE, check_marker, marker_for

try:
    import redis
except ImportError:  # pragma: no cover - exercised only without the extra
    redis = None  # type: ignore[assignment]

_CLAIM = """
local cur = redis.call('GET', KEYS[1])
if cur then return {0, cur, redis.call('EXISTS', KEYS[2])} end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return {1, ARGV[1], 1}
"""

_GET = """
return {redis.call('GET', KEYS[1]), redis.call('EXISTS', KEYS[2])}
"""

_SWAP = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[3] == '1' and redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2]) end
redis.call('DEL', KEYS[2])
return 1
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

#: `_keys.take_token`, line for line, plus the fleet's 429 pause: while it lasts,
#: no token is taken and the wait is what is left of it. Floats go out as strings
#: (Redis truncates Lua numbers to integers).
BUCKET_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local pause = tonumber(redis.call('GET', KEYS[2]) or '0')
if pause > now then return tostring(pause - now) end
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = burst
if b[1] then tokens = math.min(burst, tonumber(b[1]) + math.max(0, now - tonumber(b[2])) * rate) end
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""

#: `_keys.cooldown_until` on the server's clock: the pause only ever extends.
PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local untl = now + math.max(0, tonumber(ARGV[1]))
if untl > cur then
  redis.call('SET', KEYS[1], tostring(untl), 'PX', math.ceil((untl - now) * 1000) + 1000)
  return tostring(untl - now)
end
return tostring(cur - now)
"""


#: `_keys.plan_check` on the server's clock, and on CALL the claim taken (SET NX, a TTL).
CLAIM_CHECK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local a = redis.call('HMGET', KEYS[1], 'answer', 'at', 'terminal')
if a[1] and (a[3] == '1' or now - tonumber(a[2]) < tonumber(ARGV[2])) then
  return {'share', a[1]}
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[3]) then return {'call'} end
return {'wait'}
"""

#: The answer, stamped with the server's time, relayed; the writer's claim ended.
SHARE_CHECK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('HSET', KEYS[1], 'answer', ARGV[2], 'at', tostring(now), 'terminal', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
"""

_RELEASE_CHECK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""


def redact(url: str) -> str:
    """`url` without its password, to name it in errors and reprs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


class RedisStore:
    """Idempotency keys (and, optionally, a submit budget) shared by a fleet through Redis.

    Give every worker the same `url`, `prefix` and `submit_rate`.

    Args:
        url: A ``redis://`` (or ``rediss://``, ``unix://``) URL; its password
            never appears in errors or reprs.
        prefix: The namespace of this store's keys, for several stores in one database.
        submit_rate: Submits per second allowed to the whole fleet (a token
            bucket on the server), or None for no fleet budget.
        submit_burst: Submits allowed at once after a quiet spell (default:
            one second's worth, at least 1).
        socket_timeout: Seconds to wait for the server before a call fails.
        lease: Seconds a claim outlives its process: a key whose claimant died
            mid-POST turns AMBIGUOUS this long after its last renewal.
        coalesce_checks: Share status checks across the fleet: when several
            workers wait on one job, one status call serves them all, at the
            cost of a store round trip (two Lua scripts) per status read.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "real-esrgan-async",
        submit_rate: float | None = None,
        submit_burst: float | None = None,
        socket_timeout: float = 5.0,
        lease: float = DEFAULT_LEASE,
        coalesce_checks: bool = True,
    ) -> None:
        owner = "RedisStore"
        if redis is None:  # pragma: no cover - exercised only without the extra
            raise ImportError("RedisStore needs redis-py: pip install 'real-esrgan-async[fleet]'")
        if not isinstance(url, str) or urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise InvalidRequestError(
                f"{owner}.url must be a redis://, rediss:// or unix:// URL, got {url!r}"[:200]
            )
        if not isinstance(prefix, str) or not prefix or any(c.isspace() for c in prefix):
            raise InvalidRequestError(
                f"{owner}.prefix must be a non-empty str without spaces, got {prefix!r}"
            )
        number(owner, "submit_rate", submit_rate, "> 0", lambda v: v > 0, optional=True)
        number(owner, "submit_burst", submit_burst, ">= 1", lambda v: v >= 1, optional=True)
        number(owner, "socket_timeout", socket_timeout, "> 0", lambda v: v > 0)
        number(owner, "lease", lease, ">= 0.1", lambda v: v >= 0.1)
        flag(owner, "coalesce_checks", coalesce_checks)
        self.lease = lease
        self.coalesce_checks = coalesce_checks
        self.url = url
        self.prefix = prefix
        self.submit_rate = submit_rate
        self.submit_burst = (
            submit_burst if submit_burst is not None else max(1.0, submit_rate or 1.0)
        )
        self._socket_timeout = socket_timeout
        self._client: Any = None
        self._scripts: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"RedisStore({redact(self.url)!r}, prefix={self.prefix!r})"

    def _key(self, kind: str, name: str = "") -> str:
        return f"{self.prefix}:{kind}:{name}" if name else f"{self.prefix}:{kind}"

    def open(self, gateway: str) -> None:
        """Connect, and check (or write) the format marker (see `Store.open`).

        Raises:
            StoreUnavailableError: The server cannot be reached (the URL is named).
            StoreMismatchError: The prefix holds another format's or gateway's keys.
        """
        where = redact(self.url)
        try:
            client = redis.Redis.from_url(
                self.url,
                socket_timeout=self._socket_timeout,
                socket_connect_timeout=self._socket_timeout,
                decode_responses=True,
            )
            expected = marker_for(gateway)
            client.set(self._key("meta"), json.dumps(expected, sort_keys=True), nx=True)
            found = client.get(self._key("meta"))
            found = None if found is None else str(found)
        except redis.RedisError as exc:
            raise StoreUnavailableError(
                f"cannot reach the idempotency store at {where}: {type(exc).__name__}: {exc}"
            ) from None  # redis-py's cause may carry the URL with its password
        try:
            check_marker(found, expected, f"the store {where} (prefix {self.prefix!r})")
        except BaseException:
            client.close()
            raise
        self._client = client
        self._scripts = {
            name: client.register_script(source)
            for name, source in (
                ("claim", _CLAIM),
                ("get", _GET),
                ("swap", _SWAP),
                ("renew", _RENEW),
                ("take", BUCKET_LUA),
                ("pause", PAUSE),
                ("claim_check", CLAIM_CHECK),
                ("share_check", SHARE_CHECK),
                ("release_check", _RELEASE_CHECK),
            )
        }

    def close(self) -> None:
        """Close the connections (idempotent)."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        if self._client is None:
            raise RuntimeError("this RedisStore is not open")
        try:
            return self._scripts[name](keys=keys, args=args)
        except redis.RedisError as exc:
            raise StoreUnavailableError(
                f"the idempotency store at {redact(self.url)} failed: {type(exc).__name__}: {exc}"
            ) from None

    def claim(self, key: str, record: str, owner: str, lease: float) -> tuple[bool, str, bool]:
        """See `Store.claim`."""
        claimed, value, leased = self._run(
            "claim",
            [self._key("key", key), self._key("lease", key)],
            [record, owner, max(1, round(lease * 1000))],
        )
        return bool(claimed), str(value), bool(leased)

    def get(self, key: str) -> tuple[str | None, bool]:
        """See `Store.get`."""
        value, leased = self._run("get", [self._key("key", key), self._key("lease", key)], [])
        return value, bool(leased)

    def swap(self, key: str, old: str, new: str | None, *, lapsed_only: bool = False) -> bool:
        """See `Store.swap`."""
        swapped = self._run(
            "swap",
            [self._key("key", key), self._key("lease", key)],
            [old, new or "", "1" if lapsed_only else "0"],
        )
        return bool(swapped)

    def renew(self, key: str, owner: str, lease: float) -> bool:
        """See `Store.renew`."""
        return bool(self._run("renew", [self._key("lease", key)], [owner, round(lease * 1000)]))

    # Shared status checks -------------------------------------------------------------

    def claim_check(
        self, request_id: str, owner: str, max_age: float, lease: float = CHECK_LEASE
    ) -> tuple[CheckStep, str | None]:
        """See `Store.claim_check`."""
        found = self._run(
            "claim_check",
            [self._key("check", request_id), self._key("checking", request_id)],
            [owner, repr(float(max_age)), max(1, round(lease * 1000))],
        )
        step = CheckStep(str(found[0]))
        return step, str(found[1]) if step is CheckStep.SHARE else None

    def share_check(self, request_id: str, owner: str, answer: str, *, terminal: bool) -> None:
        """See `Store.share_check`."""
        self._run(
            "share_check",
            [self._key("check", request_id), self._key("checking", request_id)],
            [owner, answer, "1" if terminal else "0", round(CHECK_ANSWER_TTL * 1000)],
        )

    def release_check(self, request_id: str, owner: str) -> None:
        """See `Store.release_check`."""
        self._run("release_check", [self._key("checking", request_id)], [owner])

    # The fleet's rate limit ---------------------------------------------------------

    def take_submit_token(self) -> float:
        """Take one submit token; return 0, or the seconds to wait before asking again.

        While the fleet is paused after a 429, no token is taken and the wait
        is what is left of the pause. Without `submit_rate`, only the pause counts.
        """
        rate = self.submit_rate if self.submit_rate is not None else 1e9
        burst = self.submit_burst if self.submit_rate is not None else 1e9
        return float(self._run("take", [self._key("bucket"), self._key("cooldown")], [rate, burst]))

    def pause_fleet(self, retry_after: float) -> float:
        """Pause every worker's submits for `retry_after` s (it only extends); return the pause."""
        return float(self._run("pause", [self._key("cooldown")], [retry_after]))

    # Webhook fan-in -------------------------------------------------------------------

    def publish_callback(self, text: str) -> None:
        """Relay a callback (a status JSON) to every worker."""
        if self._client is None:
            raise RuntimeError("this RedisStore is not open")
        try:
            self._client.publish(self._key("callbacks"), text)
        except redis.RedisError as exc:
            raise StoreUnavailableError(
                f"the store at {redact(self.url)} failed: {type(exc).__name__}: {exc}"
            ) from None

    def subscribe_callbacks(self) -> CallbackSubscription:
        """Start receiving the callbacks relayed by every worker."""
        if self._client is None:
            raise RuntimeError("this RedisStore is not open")
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(self._key("callbacks"))
        except redis.RedisError as exc:
            pubsub.close()
            raise StoreUnavailableError(
                f"the store at {redact(self.url)} failed: {type(exc).__name__}: {exc}"
            ) from None
        return CallbackSubscription(pubsub, redact(self.url))


class CallbackSubscription:
    """Callbacks relayed through one store; `get` blocks at most `timeout` seconds."""

    def __init__(self, pubsub: Any, where: str) -> None:
        self._pubsub = pubsub
        self._where = where

    def get(self, timeout: float) -> str | None:
        """The next relayed callback, or None if none came within `timeout`."""
        try:
            message = self._pubsub.get_message(timeout=timeout)
        except redis.RedisError as exc:
            raise StoreUnavailableError(
                f"the store at {self._where} failed: {type(exc).__name__}: {exc}"
            ) from None
        if message is None or message.get("type") != "message":
            return None
        return str(message["data"])

    def close(self) -> None:
        """Unsubscribe and release the connection."""
        self._pubsub.close()
