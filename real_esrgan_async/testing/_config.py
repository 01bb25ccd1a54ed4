"""The emulator's knobs: one frozen, validated value object.

Every knob defaults to the behaviour of the real gateway (real time, real failure rates, no
injected faults), so ``EmulatorConfig()`` is a faithful stand-in and tests turn on only the
faults they exercise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal

import attrs

from ._images import MAX_INPUT_PIXELS
from ._timing import DEFAULT_NOMINAL_MEGAPIXELS

__all__ = ["DEFAULT_API_KEY", "EmulatorConfig", "TimestampFormat"]

DEFAULT_API_KEY = "emulator-key"

TimestampFormat = Literal["iso", "space", "mixed"]
_TIMESTAMP_FORMATS = ("iso", "space", "mixed")


def _to_key_set(value: str | Iterable[str]) -> frozenset[str]:
    # A lone string would otherwise be split into one-character keys.
    if isinstance(value, str):
        return frozenset((value,))
    return frozenset(value)


def _check_keys(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not value:
        raise ValueError(f"{attribute.name} must hold at least one API key, got an empty set")
    for key in value:
        if not isinstance(key, str) or not key:
            raise ValueError(f"{attribute.name} must hold non-empty strings, got {key!r}")


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def _non_negative(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if _number(value, attribute.name) < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _positive(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if _number(value, attribute.name) <= 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


def _optional_non_negative(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        _non_negative(inst, attribute, value)


def _rate(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not 0.0 <= _number(value, attribute.name) <= 1.0:
        raise ValueError(f"{attribute.name} is a probability and must be in [0, 1], got {value!r}")


def _positive_int(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{attribute.name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{attribute.name} must be >= 1, got {value!r}")


def _optional_positive_int(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        _positive_int(inst, attribute, value)


def _optional_int(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise TypeError(f"{attribute.name} must be an int or None, got {value!r}")


def _bool(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{attribute.name} must be a bool, got {value!r}")


_MAX_MEGAPIXELS = MAX_INPUT_PIXELS / 1e6


def _to_megapixels(value: Any) -> Any:
    # A JSON config (a benchmark's server process) brings the range as a list.
    if isinstance(value, list):
        return tuple(value)
    return value


def _megapixels(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    allowed = (
        f"a number of megapixels in (0, {_MAX_MEGAPIXELS}] or a (low, high) range of two such "
        "numbers with low <= high"
    )
    sizes = value if isinstance(value, tuple) else (value,)
    if isinstance(value, tuple) and len(value) != 2:
        raise ValueError(f"{attribute.name} must be {allowed}, got {value!r}")
    for size in sizes:
        if isinstance(size, bool) or not isinstance(size, int | float):
            raise TypeError(f"{attribute.name} must be {allowed}, got {value!r}")
        if not (math.isfinite(size) and 0 < size <= _MAX_MEGAPIXELS):
            raise ValueError(f"{attribute.name} must be {allowed}, got {value!r}")
    if isinstance(value, tuple) and value[0] > value[1]:
        raise ValueError(f"{attribute.name} must be {allowed}, got {value!r}")


def _timestamp_format(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value not in _TIMESTAMP_FORMATS:
        raise ValueError(f"{attribute.name} must be one of {_TIMESTAMP_FORMATS}, got {value!r}")


@attrs.frozen(kw_only=True)
class EmulatorConfig:
    """How the emulated gateway behaves.

    Durations of the job timing model are in *model seconds* and are multiplied by
    ``time_scale``; every other duration (latency, rate-limit window, media TTL, webhook
    retries) is in real seconds.

    Attributes:
        api_keys: Accepted values of the ``Ocp-Apim-Subscription-Key`` header. A single string
            is accepted as a one-key set.
        model_enabled: When false, every submit answers 400 "Model not found".
        time_scale: Multiplier of the timing model: 1.0 is real time, 0.001 turns a 16 s job
            into 16 ms, 0 makes jobs finish as soon as their input is processed.
        seed: Seed of the emulator's random generator (timing, injected faults, request ids);
            None draws a fresh seed.
        wallet_balance: Starting balance in USD; None is an unlimited wallet.
        price_per_image: Charged per created job, refunded when the job ends in ERROR.
        rate_limit: Job creations allowed per ``rate_limit_window``; None disables the limit.
        rate_limit_window: Length of the sliding rate-limit window, in seconds.
        fetch_inputs: When false, inputs are neither fetched nor decoded and every job (bar
            the injected ERRORs) completes with a tiny fixed image: for throughput benchmarks.
            Jobs are then timed by ``nominal_megapixels``, or by an ``emulator_megapixels=N``
            query parameter of the image URL when it has one.
        nominal_megapixels: The input size a job is timed by when inputs are not fetched: a
            fixed number of megapixels, or a ``(low, high)`` range drawn log-uniformly per job.
            The default, web-sized inputs of 0.3-2 MP, gives the calibrated model's 16 s median
            job (p95 about 33 s at ``time_scale=1``); see ``docs/gateway-model.md``.
        fetch_timeout: Timeout of the input download, in seconds.
        max_input_bytes: Downloads larger than this fail the job.
        processing_concurrency: How many inputs are fetched and upscaled at once.
        error_rate: Probability that a job ends in ERROR (a transient CUDA out-of-memory).
        cold_start_rate: Probability that a job waits for a cold start (20-90 model seconds).
        media_ttl: Seconds during which an output stays downloadable after completion.
        max_output_bytes: Bytes of outputs kept in memory at most: past it, the least
            recently completed or downloaded outputs are evicted and answer 404 as expired
            ones do (the most recent output is always kept, even if larger on its own).
        timestamp_format: ``"iso"`` (``2026-05-22T13:17:32.110Z``), ``"space"``
            (``2026-05-22 13:19:23``, UTC without a zone) or ``"mixed"`` (``created_at`` and
            ``updated_at`` in ISO form, ``completed_at`` in the space form).
        allow_http_webhooks: Accept ``http://`` webhook URLs whose host is loopback (for
            tests); non-loopback ``http://`` URLs are rejected regardless.
        allow_remote_hosts: Fetch inputs from, and POST webhooks to, hosts other than
            loopback. Off by default: the emulator accepts a published key, so anything that
            can submit to it could otherwise make it send requests into the user's network.
            Redirects are checked hop by hop either way.
        webhook_duplicate_rate: Probability that a delivered callback is delivered again.
        webhook_loss_rate: Probability that a callback is silently never sent.
        webhook_max_attempts: Attempts per callback before giving up on a failing receiver.
        webhook_retry_delay: Delay before the first retry of a failed callback, doubled on each
            further retry.
        webhook_timeout: Seconds a receiver has to answer a callback.
        status_error_rate: Probability that a status call answers 500.
        drop_before_create_rate: Probability that a submit connection is cut before the job is
            created (no job, no charge).
        drop_after_create_rate: Probability that a submit connection is cut after the job is
            created (the job runs and is charged, the client never learns its id).
        latency: Seconds added to every API request (submit and status).
        latency_jitter: Up to this many more seconds, drawn uniformly, added to ``latency``.
    """

    api_keys: frozenset[str] = attrs.field(
        default=frozenset((DEFAULT_API_KEY,)), converter=_to_key_set, validator=_check_keys
    )
    model_enabled: bool = attrs.field(default=True, validator=_bool)
    time_scale: float = attrs.field(default=1.0, validator=_non_negative)
    seed: int | None = attrs.field(default=None, validator=_optional_int)
    wallet_balance: float | None = attrs.field(default=None, validator=_optional_non_negative)
    price_per_image: float = attrs.field(default=0.002, validator=_non_negative)
    rate_limit: int | None = attrs.field(default=None, validator=_optional_positive_int)
    rate_limit_window: float = attrs.field(default=60.0, validator=_positive)
    fetch_inputs: bool = attrs.field(default=True, validator=_bool)
    nominal_megapixels: float | tuple[float, float] = attrs.field(
        default=DEFAULT_NOMINAL_MEGAPIXELS, converter=_to_megapixels, validator=_megapixels
    )
    fetch_timeout: float = attrs.field(default=30.0, validator=_positive)
    max_input_bytes: int = attrs.field(default=64 * 1024 * 1024, validator=_positive_int)
    processing_concurrency: int = attrs.field(default=8, validator=_positive_int)
    error_rate: float = attrs.field(default=0.015, validator=_rate)
    cold_start_rate: float = attrs.field(default=0.03, validator=_rate)
    media_ttl: float = attrs.field(default=3600.0, validator=_non_negative)
    max_output_bytes: int = attrs.field(default=256 * 1024 * 1024, validator=_positive_int)
    timestamp_format: TimestampFormat = attrs.field(default="iso", validator=_timestamp_format)
    allow_http_webhooks: bool = attrs.field(default=False, validator=_bool)
    allow_remote_hosts: bool = attrs.field(default=False, validator=_bool)
    webhook_duplicate_rate: float = attrs.field(default=0.0, validator=_rate)
    webhook_loss_rate: float = attrs.field(default=0.0, validator=_rate)
    webhook_max_attempts: int = attrs.field(default=4, validator=_positive_int)
    webhook_retry_delay: float = attrs.field(default=0.5, validator=_non_negative)
    webhook_timeout: float = attrs.field(default=5.0, validator=_positive)
    status_error_rate: float = attrs.field(default=0.0, validator=_rate)
    drop_before_create_rate: float = attrs.field(default=0.0, validator=_rate)
    drop_after_create_rate: float = attrs.field(default=0.0, validator=_rate)
    latency: float = attrs.field(default=0.0, validator=_non_negative)
    latency_jitter: float = attrs.field(default=0.0, validator=_non_negative)
