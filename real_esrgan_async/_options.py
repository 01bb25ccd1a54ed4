"""One way to check an option: the message says what was wrong and what is allowed.

Every constructor option of the library goes through these checks, so that
``RetryPolicy(base_delay="1")``, ``AsyncRealESRGAN(max_download_bytes=-1)`` and
``WebhookReceiver(client, max_body_bytes=True)`` all fail the same way::

    RetryPolicy.base_delay must be a finite number > 0, got '1'

Rules of this module: pure functions, no I/O. A wrong *type* raises
`InvalidRequestError` (both a `TypeError` and a `ValueError`), as does a wrong
value; ``bool`` is never accepted where a number is expected.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import attrs

from ._exceptions import InvalidRequestError

T = TypeVar("T")

#: A rule on a number: whether it is allowed, given the object being built (or None).
Rule = Callable[[Any, Any], bool]


def number(
    owner: str,
    name: str,
    value: object,
    allowed: str,
    ok: Callable[[Any], bool] = lambda _: True,
    *,
    kind: type[int] | type[float] = float,
    optional: bool = False,
) -> None:
    """Check that `value` is a number of `kind` (or None if `optional`) that `ok` accepts.

    Args:
        owner: What the option belongs to, e.g. ``"AsyncRealESRGAN"``.
        name: The option's name.
        value: What was given.
        allowed: What is allowed besides the type, e.g. ``">= 1"``.
        ok: The rule on the value.
        kind: `int`, or `float` (which accepts ints too).
        optional: Accept None.

    Raises:
        InvalidRequestError: The value has the wrong type or breaks the rule.
    """
    if value is None and optional:
        return
    noun = "an int" if kind is int else "a finite number"
    if (
        isinstance(value, bool)
        or not isinstance(value, int | kind)
        or not math.isfinite(value)
        or not ok(value)
    ):
        prefix = "None or " if optional else ""
        raise InvalidRequestError(f"{owner}.{name} must be {prefix}{noun} {allowed}, got {value!r}")


def flag(owner: str, name: str, value: object) -> None:
    """Check that `value` is a bool (not merely truthy).

    Raises:
        InvalidRequestError: It is not a bool.
    """
    if not isinstance(value, bool):
        raise InvalidRequestError(f"{owner}.{name} must be a bool (True or False), got {value!r}")


def flags(owner: str, **values: object) -> None:
    """`flag` for each keyword: ``flags("Client", verbose=True, strict=x)``."""
    for name, value in values.items():
        flag(owner, name, value)


def callables_or_none(owner: str, **values: object) -> None:
    """`callable_or_none` for each keyword."""
    for name, value in values.items():
        callable_or_none(owner, name, value)


def choice(owner: str, name: str, value: object, allowed: tuple[str, ...]) -> None:
    """Check that `value` is one of `allowed`.

    Raises:
        InvalidRequestError: It is not.
    """
    if not isinstance(value, str) or value not in allowed:
        spelled = " or ".join(repr(option) for option in allowed)
        raise InvalidRequestError(f"{owner}.{name} must be {spelled}, got {value!r}")


def callable_or_none(owner: str, name: str, value: object) -> None:
    """Check that `value` is None or callable.

    Raises:
        InvalidRequestError: It is neither.
    """
    if value is not None and not callable(value):
        raise InvalidRequestError(
            f"{owner}.{name} must be None or a callable, got {type(value).__name__} {value!r}"
        )


def instance(owner: str, name: str, value: object, cls: type[Any], *, optional: bool) -> None:
    """Check that `value` is an instance of `cls` (or None if `optional`).

    Raises:
        InvalidRequestError: It is not.
    """
    if (value is None and optional) or isinstance(value, cls):
        return
    prefix = "None or " if optional else ""
    raise InvalidRequestError(
        f"{owner}.{name} must be {prefix}a {cls.__name__}, got {type(value).__name__} {value!r}"
    )


def field(
    default: Any,
    allowed: str,
    ok: Rule,
    *,
    kind: type[int] | type[float] = float,
    optional: bool = False,
) -> Any:
    """An attrs field checked by `number`; `ok` also sees the object being built.

    The owner's name in the message is the class's, e.g. ``RetryPolicy.max_delay``.
    """

    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        number(
            type(instance).__name__,
            attribute.name,
            value,
            allowed,
            lambda v: ok(instance, v),
            kind=kind,
            optional=optional,
        )

    return attrs.field(default=default, validator=validate)
