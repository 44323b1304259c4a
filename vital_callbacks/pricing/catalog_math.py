"""Exact cost arithmetic for the common shapes of a genai-prices ``ModelPrice``, without its overhead.

``ModelInfo.calc_price`` resolves its unit registry on every call (~30-80 µs); the pipeline prices every
LLM call, so the dispatcher would spend most of its time there. For a price made only of per-token
input / output / cache prices (flat or tiered), the arithmetic is four multiplications, done here with
the same ``Decimal`` semantics. Anything else (per-request fees, audio, characters, reasoning prices,
one-hour cache writes) returns ``None`` and the caller uses ``calc_price``. The test suite checks this
path against ``calc_price`` for every model in the installed catalog.
"""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

from vital_callbacks.core.events import TokenUsage

_TOKEN_KEYS = frozenset({"input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok"})
# Priced units a plain usage (``TokenUsage.is_plain``) never has: present or not, they add 0 to it.
_NOT_REPORTED = frozenset({"web_searches_kcount", "storage_searches_kcount", "cache_write_1h_mtok"})
_PER = Decimal(1_000_000)

_plans: dict[int, tuple[Any, dict[str, Any] | None]] = {}
_lock = threading.Lock()


def _plan(model_price: Any) -> dict[str, Any] | None:
    """The token prices of ``model_price`` if it has the simple shape, else ``None``; cached per object."""
    key = id(model_price)
    cached = _plans.get(key)
    if cached is not None and cached[0] is model_price:
        return cached[1]
    prices = {k: v for k, v in vars(model_price).items() if v is not None and not k.startswith("_")}
    simple = set(prices) <= _TOKEN_KEYS | _NOT_REPORTED and "input_mtok" in prices and "output_mtok" in prices
    plan = {k: v for k, v in prices.items() if k in _TOKEN_KEYS} if simple else None
    with _lock:
        _plans[key] = (model_price, plan)  # keeps the object alive, so its id is never reused
    return plan


def _rate(price: Any, total_input: int) -> Decimal:
    tiers = getattr(price, "tiers", None)
    if tiers is None:
        return price  # type: ignore[no-any-return]
    rate = price.base
    for tier in reversed(tiers):  # "cliff" tiers: crossing one prices all tokens at its rate
        if total_input > tier.start:
            return tier.price  # type: ignore[no-any-return]
    return rate  # type: ignore[no-any-return]


def fast_cost(model_price: Any, usage: TokenUsage) -> tuple[Decimal, Decimal] | None:
    """(input, output) USD for ``usage`` under ``model_price``, or ``None`` when only calc_price can tell."""
    if not usage.is_plain:
        return None  # audio, one-hour cache writes, per-request fees: only calc_price knows them
    plan = _plan(model_price)
    if plan is None:
        return None
    if (usage.cache_read and "cache_read_mtok" not in plan) or (usage.cache_write and "cache_write_mtok" not in plan):
        return None
    total_input = usage.input
    uncached = usage.input - usage.cache_read - usage.cache_write
    if uncached < 0:
        return None
    inp = _rate(plan["input_mtok"], total_input) * uncached / _PER
    if usage.cache_read:
        inp += _rate(plan["cache_read_mtok"], total_input) * usage.cache_read / _PER
    if usage.cache_write:
        inp += _rate(plan["cache_write_mtok"], total_input) * usage.cache_write / _PER
    out = _rate(plan["output_mtok"], total_input) * usage.output / _PER
    return inp, out
