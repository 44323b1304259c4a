"""Cache savings, of two different kinds, labelled apart because different people act on each.

* ``prompt_cache``: provider-side prompt caching (OpenAI automatic caching, Anthropic cache_control).
  The call was made and billed, but its cache-read tokens at the cache-read rate. Saving = what those
  tokens cost at the model's list input price minus what was paid for them, both priced by the same
  :class:`~vital_callbacks.pricing.PriceBook` that priced the calls, at the price in force that day.
* ``response_cache``: LangChain's response cache answered and the provider was never called; the
  handler recorded what the call would have cost in ``saved_cost`` (the call itself costs 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from vital_callbacks.analytics._common import LLM_CALLS, dimension, key_text, window
from vital_callbacks.core.events import TokenUsage
from vital_callbacks.pricing.book import PriceBook

CacheKind = Literal["prompt_cache", "response_cache"]


@dataclass(frozen=True)
class CacheSaving:
    """What one kind of caching saved on one model; ``saved_usd`` is None when the model has no price."""

    kind: CacheKind
    provider: str | None
    model: str | None
    calls: int
    cached_tokens: int
    saved_usd: Decimal | None


@dataclass
class _Sum:
    calls: int = 0
    tokens: int = 0
    saved: Decimal | None = field(default_factory=Decimal)


def _prompt_cache_saving(book: PriceBook, provider: str | None, model: str | None, tokens: int,
                         day: str) -> Decimal | None:
    if not model or tokens <= 0:
        return Decimal(0) if tokens <= 0 else None
    when = datetime.fromisoformat(day).replace(tzinfo=timezone.utc)
    listed = book.quote(provider, model, TokenUsage(input=tokens, total=tokens), when)
    paid = book.quote(provider, model, TokenUsage(input=tokens, total=tokens, cache_read=tokens), when)
    if listed is None or paid is None:
        return None
    return listed.cost.total - paid.cost.total


def cache_savings_rows(engine: Engine, *, since: datetime | None = None, until: datetime | None = None,
                       tenant_id: str | None = None, graph: str | None = None,
                       prices: PriceBook | None = None) -> list[CacheSaving]:
    """Savings of provider prompt caching and of response-cache hits per model, largest first."""
    book = prices or _default_book()
    t = LLM_CALLS.c
    conditions = window(LLM_CALLS, since=since, until=until, tenant_id=tenant_id, graph=graph)
    day = dimension(LLM_CALLS, "day", engine.dialect.name)
    prompt = (
        select(t.provider, t.model, day, func.count(), func.sum(t.cache_read_tokens))
        .where(t.cache_read_tokens > 0, t.cache_hit.is_(False), *conditions)
        .group_by(t.provider, t.model, day)
    )
    response = (
        select(t.provider, t.model, func.count(), func.sum(t.input_tokens), func.sum(t.saved_cost))
        .where(t.cache_hit.is_(True), *conditions)
        .group_by(t.provider, t.model)
    )
    merged: dict[tuple[str | None, str | None], _Sum] = {}
    out: list[CacheSaving] = []
    with engine.connect() as conn:
        for provider, model, bucket, calls, tokens in conn.execute(prompt):
            entry = merged.setdefault((provider, model), _Sum())
            entry.calls += int(calls)
            entry.tokens += int(tokens or 0)
            saved = _prompt_cache_saving(book, provider, model, int(tokens or 0), key_text(bucket) or "1970-01-01")
            entry.saved = None if saved is None or entry.saved is None else entry.saved + saved
        for (provider, model), entry in merged.items():
            out.append(CacheSaving("prompt_cache", provider, model, entry.calls, entry.tokens, entry.saved))
        for provider, model, calls, tokens, saved in conn.execute(response):
            out.append(CacheSaving("response_cache", provider, model, int(calls), int(tokens or 0),
                                   None if saved is None else Decimal(saved)))
    out.sort(key=lambda s: (s.kind, -(s.saved_usd or Decimal(0)), s.model or ""))
    return out


def _default_book() -> PriceBook:
    from vital_callbacks.core.settings import Settings

    settings = Settings()
    return PriceBook([settings.pricing_dir] if settings.pricing_dir else [])


def total_saved(rows: Sequence[CacheSaving], kind: CacheKind | None = None) -> Decimal:
    """Sum of the known savings (of one kind, or both); :func:`unpriced_saving_calls` counts the cached
    calls it leaves out."""
    return sum((r.saved_usd or Decimal(0) for r in rows if kind is None or r.kind == kind), Decimal(0))


def unpriced_saving_calls(rows: Sequence[CacheSaving], kind: CacheKind | None = None) -> int:
    """Cached calls of models without a price, whose saving is unknown and not in :func:`total_saved`."""
    return sum(r.calls for r in rows if r.saved_usd is None and (kind is None or r.kind == kind))
