"""Cost columns of a frame as people should read them, with the unpriced calls each one leaves out."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vital_callbacks.core.money import format_usd

if TYPE_CHECKING:
    import pandas as pd


def spend(frame: pd.DataFrame, cost: str = "cost_usd", unpriced: str = "unpriced_calls") -> pd.Series:
    """``frame[cost]`` as text next to ``frame[unpriced]``: ``$12.40``, ``≥ $12.40 (3 unpriced)``,
    ``unpriced (3 calls)``; a frame without the unpriced column is taken to have none."""
    import pandas as pd

    counts = frame[unpriced] if unpriced in frame.columns else pd.Series(0, index=frame.index)
    return pd.Series([format_usd(c, int(u)) for c, u in zip(frame[cost], counts, strict=True)],
                     index=frame.index, dtype=object, name="cost")
