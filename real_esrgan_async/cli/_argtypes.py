"""Option value types for argparse: each says what it expected and what it got."""

from __future__ import annotations

import argparse
import math

__all__ = ["non_negative", "port_number", "positive_int", "positive_seconds", "probability"]


def positive_int(text: str) -> int:
    """A whole number >= 1 (``--concurrency``, ``--rate-limit``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def _number(text: str, *, low: float, high: float = math.inf, low_open: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    too_low = value <= low if low_open else value < low
    if not math.isfinite(value) or too_low or value > high:
        bound = f"> {low:g}" if low_open else f">= {low:g}"
        if high < math.inf:
            bound += f" and <= {high:g}"
        raise argparse.ArgumentTypeError(f"expected a number {bound}, got {text!r}")
    return value


def positive_seconds(text: str) -> float:
    """A duration > 0 (``--timeout``)."""
    return _number(text, low=0.0, low_open=True)


def non_negative(text: str) -> float:
    """A number >= 0 (``--time-scale``, ``--wallet``)."""
    return _number(text, low=0.0)


def probability(text: str) -> float:
    """A number in [0, 1] (``--error-rate``)."""
    return _number(text, low=0.0, high=1.0)


def port_number(text: str) -> int:
    """A TCP port, 0 for any free one."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port in 0..65535, got {value}")
    return value
