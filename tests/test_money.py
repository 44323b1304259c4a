"""How amounts are shown: a sum with the unpriced calls it leaves out, never an unpriced group as $0."""

from __future__ import annotations

from decimal import Decimal

import pytest

from vital_callbacks.core.money import format_usd, priced_sum, usd


@pytest.mark.parametrize(("amount", "unpriced", "shown"), [
    (Decimal("12.4"), 0, "$12.40"),
    (Decimal("12.4"), 3, "≥ $12.40 (3 unpriced)"),
    (None, 3, "unpriced (3 calls)"),
    (None, 1, "unpriced (1 call)"),
    (float("nan"), 2, "unpriced (2 calls)"),  # how a frame spells a missing cost
    (None, 0, "-"),  # nothing priced and nothing to price (failed calls without usage)
    (Decimal(0), 0, "$0.00"),  # priced calls that cost nothing (response-cache hits)
    (Decimal("1234.5"), 0, "$1,234.50"),
    (Decimal("0.0123"), 0, "$0.0123"),
    (Decimal("0.000075"), 1, "≥ $0.000075 (1 unpriced)"),
    (Decimal("0.00000004"), 0, "<$0.000001"),
    (0.035, 0, "$0.0350"),
])
def test_format_usd(amount: Decimal | float | None, unpriced: int, shown: str) -> None:
    assert format_usd(amount, unpriced) == shown


def test_numpy_numbers_from_a_frame() -> None:
    """A DataFrame's cells are numpy numbers (NaN for a missing cost)."""
    np = pytest.importorskip("numpy")
    assert format_usd(np.float64(0.1), np.int64(2)) == "≥ $0.10 (2 unpriced)"
    assert format_usd(np.float64("nan"), np.int64(2)) == "unpriced (2 calls)"


def test_a_fraction_of_a_cent_is_never_shown_as_zero() -> None:
    """Three significant digits below $0.10, so one cheap call does not read as $0.00 or $0.000000."""
    for amount in ("0.0000093", "0.00042", "0.0051", "0.099"):
        shown = Decimal(usd(Decimal(amount)).lstrip("$"))
        last_digit = Decimal(1).scaleb(shown.as_tuple().exponent)  # type: ignore[arg-type]
        assert shown > 0 and abs(shown - Decimal(amount)) <= last_digit / 2, (amount, shown)
    with pytest.raises(ValueError, match="format_usd"):
        usd(float("nan"))


@pytest.mark.parametrize(("total", "unpriced", "cost"), [
    (None, 2, None), (Decimal(0), 2, None), (Decimal("0.5"), 2, Decimal("0.5")),
    (None, 0, Decimal(0)), (Decimal(0), 0, Decimal(0)),
])
def test_priced_sum(total: Decimal | None, unpriced: int, cost: Decimal | None) -> None:
    """Unpriced calls with nothing paid for the rest: no cost; otherwise the sum (0 with nothing to price)."""
    assert priced_sum(total, unpriced) == cost
