"""How an amount of USD is shown to a person: one rule for the CLI, the notebooks and anyone else.

A total of LLM spend is only as complete as the price catalog: calls of a model nobody has a price
for add nothing to the sum. So a sum is always shown with the number of calls it leaves out, and a
sum that leaves calls out is marked as a lower bound; a group where nothing could be priced says so
instead of showing $0:

    format_usd(Decimal("12.4"))        -> "$12.40"
    format_usd(Decimal("12.4"), 3)     -> "≥ $12.40 (3 unpriced)"
    format_usd(None, 3)                -> "unpriced (3 calls)"

Only the standard library here: the CLI imports this without pulling in the rest of the package.
"""

from __future__ import annotations

import math
from decimal import Decimal

_SMALLEST = Decimal("0.000001")
_CENTS_FROM = Decimal("0.10")
LOWER_BOUND = "≥"


def _decimal(amount: Decimal | float | int | None) -> Decimal | None:
    """The amount as a Decimal; ``None`` and NaN (how pandas spells a missing cost) are no amount."""
    if amount is None:
        return None
    if isinstance(amount, Decimal):
        return None if amount.is_nan() else amount
    if isinstance(amount, int):
        return Decimal(amount)
    number = float(amount)  # also numpy's floats, which a frame's cells are
    # repr: the shortest text that reads back as this float, not its binary tail
    return None if math.isnan(number) else Decimal(repr(number))


def usd(amount: Decimal | float | int) -> str:
    """A known amount: cents from $0.10 up (``$12.40``, ``$1,204.00``), else three significant digits
    (``$0.0123``, ``$0.000075``), because LLM calls are often a fraction of a cent and ``$0.00`` would hide
    them; ``<$0.000001`` for a positive amount too small for that."""
    value = _decimal(amount)
    if value is None:
        raise ValueError("usd() needs an amount; use format_usd() for a cost that may be missing")
    sign, magnitude = ("-" if value < 0 else ""), abs(value)
    if magnitude == 0:
        return "$0.00"
    if magnitude >= _CENTS_FROM:
        return f"{sign}${magnitude:,.2f}"
    if magnitude < _SMALLEST:
        return f"{sign}<${_SMALLEST}"
    places = min(6, 2 - magnitude.adjusted())  # adjusted(): the exponent of the leading digit
    return f"{sign}${magnitude:,.{places}f}"


def calls(count: int) -> str:
    return f"{count} call" if count == 1 else f"{count} calls"


def format_usd(amount: Decimal | float | int | None, unpriced_calls: int = 0) -> str:
    """A sum of priced calls next to the calls it leaves out.

    ``amount`` is the priced calls' sum, ``None`` (or NaN) when no call of the group was priced;
    ``unpriced_calls`` the calls that had tokens but no known price. ``-`` when there is neither (a
    group of failed calls without usage costs nothing and has nothing to price).
    """
    value = _decimal(amount)
    unpriced = int(unpriced_calls or 0)
    if value is None:
        return f"unpriced ({calls(unpriced)})" if unpriced > 0 else "-"
    if unpriced > 0:
        return f"{LOWER_BOUND} {usd(value)} ({unpriced} unpriced)"
    return usd(value)


def priced_sum(total: Decimal | None, unpriced_calls: int) -> Decimal | None:
    """A group's cost as the aggregates report it: ``None`` when it has unpriced calls and nothing was
    paid for the rest, else the sum (``0`` for a group with nothing to price, e.g. failed calls).

    Summing ``coalesce(cost, 0)`` (what the daily rollup stores) cannot tell "no priced call" from
    "priced calls that cost $0" (response-cache hits), so both read as unpriced when unpriced calls
    are present. Applied alike to raw sums and rollup sums, it keeps both paths' answers equal.
    """
    if unpriced_calls > 0 and (total is None or total == 0):
        return None
    return Decimal(0) if total is None else total


__all__ = ["LOWER_BOUND", "calls", "format_usd", "priced_sum", "usd"]
