"""The prepaid wallet: charge per created job, refund on ERROR.

Rules of this module: plain state, no lock and no clock (the emulator holds its lock around
every call). Amounts are kept in integer micro-dollars so that a balance of $0.01 pays for
exactly five $0.002 jobs, which binary floats would not guarantee.
"""

from __future__ import annotations

__all__ = ["Wallet"]

_MICROS_PER_USD = 1_000_000


def _to_micros(usd: float) -> int:
    return round(usd * _MICROS_PER_USD)


def _to_usd(micros: int) -> float:
    return micros / _MICROS_PER_USD


class Wallet:
    """A balance (or an unlimited wallet) and what it has been charged and refunded.

    Args:
        balance_usd: Starting balance; None for an unlimited wallet.
        price_usd: Price of one job.
    """

    def __init__(self, balance_usd: float | None, price_usd: float) -> None:
        self._balance = None if balance_usd is None else _to_micros(balance_usd)
        self._price = _to_micros(price_usd)
        self._charged = 0
        self._refunded = 0

    @property
    def balance_usd(self) -> float | None:
        """The current balance, None when unlimited."""
        return None if self._balance is None else _to_usd(self._balance)

    @property
    def charged_usd(self) -> float:
        """Everything charged so far, refunds not deducted."""
        return _to_usd(self._charged)

    @property
    def refunded_usd(self) -> float:
        """Everything refunded so far."""
        return _to_usd(self._refunded)

    def can_pay(self) -> bool:
        """Whether the balance covers one more job."""
        return self._balance is None or self._balance >= self._price

    def charge(self) -> None:
        """Take the price of one job."""
        if not self.can_pay():
            raise RuntimeError("charge() called on a wallet that cannot pay")
        if self._balance is not None:
            self._balance -= self._price
        self._charged += self._price

    def refund(self) -> None:
        """Give back the price of one job (it ended in ERROR)."""
        if self._balance is not None:
            self._balance += self._price
        self._refunded += self._price

    def top_up(self, amount_usd: float) -> None:
        """Add ``amount_usd`` to a limited wallet.

        Raises:
            ValueError: If the amount is negative or the wallet is unlimited.
        """
        if amount_usd < 0:
            raise ValueError(f"a top-up must be >= 0 USD, got {amount_usd!r}")
        if self._balance is None:
            raise ValueError("the wallet is unlimited (wallet_balance=None); nothing to top up")
        self._balance += _to_micros(amount_usd)
