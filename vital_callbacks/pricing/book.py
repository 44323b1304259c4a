"""USD cost of a call: the ``genai-prices`` catalog, overridden by ``pricing/`` YAML files.

Runs on the pipeline's worker, never on the caller's thread. Catalog lookups (hits *and* misses) are
cached per (provider, model), so a busy process pays the ~50 µs model match once, not per call.
An unknown model is never guessed: it gets ``None``, one warning, and a count.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from importlib.metadata import version as _metadata_version
from pathlib import Path
from typing import Any

from vital_callbacks.core.events import Cost, TokenUsage
from vital_callbacks.pricing.catalog_math import fast_cost
from vital_callbacks.pricing.overrides import OverrideEntry, load_overrides
from vital_callbacks.providers.billing import Part, catalog_provider, to_genai_usage
from vital_callbacks.providers.names import PROVIDER_ALIASES

logger = logging.getLogger("vital_callbacks")


_ZERO = Decimal(0)
CATALOG_SOURCE = f"genai-prices {_metadata_version('genai-prices')}"
"""The ``source`` of a catalog price: which catalog release priced it."""

_SELF_HOSTED = {name for name, target in PROVIDER_ALIASES.items() if target is None}


@functools.lru_cache(maxsize=4096)
def candidates(provider: str | None, model: str) -> tuple[tuple[str | None, str], ...]:
    """(catalog provider, model) pairs to try, most specific first; strips router prefixes."""
    model = model.strip()
    mapped = catalog_provider(provider)
    out: list[tuple[str | None, str]] = [(mapped, model)]
    if "/" in model:
        prefix, rest = model.split("/", 1)
        prefix_provider = catalog_provider(prefix)
        if prefix_provider:
            out.append((prefix_provider, rest))
        out.append((mapped, rest))
    if provider is None or (provider.lower() not in _SELF_HOSTED and mapped not in _known_catalog_providers()):
        out.append((None, out[-1][1]))
    seen: set[tuple[str | None, str]] = set()
    return tuple(c for c in out if not (c in seen or seen.add(c)))  # type: ignore[func-returns-value]


@functools.lru_cache(maxsize=1)
def _known_catalog_providers() -> frozenset[str]:
    from genai_prices import data_snapshot

    return frozenset(p.id for p in data_snapshot.get_snapshot().providers)


@dataclass(frozen=True)
class Quote:
    """How a price was found: what ``vital-callbacks prices`` prints."""

    provider: str | None
    model: str
    cost: Cost
    describe: Callable[[], str] = field(repr=False, compare=False)
    """Built only when asked for: formatting a catalog price costs more than computing it."""

    @property
    def description(self) -> str:
        return self.describe()


_Step = tuple["OverrideEntry | None", "str | None", str, "tuple[Any, Any] | None"]


class PriceBook:
    """Prices calls; thread-safe, caches catalog matches."""

    def __init__(self, override_dirs: Iterable[Path] = ()) -> None:
        self._overrides: list[OverrideEntry] = load_overrides(override_dirs)
        self._catalog: dict[tuple[str | None, str], Any] = {}
        self._warned: set[tuple[str | None, str | None]] = set()
        self._lock = threading.Lock()
        self._resolved: dict[tuple[str | None, str], tuple[_Step, ...]] = {}
        self.unpriced: dict[str, int] = {}

    def price(self, provider: str | None, model: str | None, usage: TokenUsage, at: float | datetime, *,
              service_tier: str | None = None, parts: Sequence[Part] = ()) -> Cost | None:
        """The cost of ``usage`` at the price in force at ``at`` (and for ``service_tier``); ``None``
        (warned once, counted) if unknown. With ``parts`` (usage billed at several models' rates), the
        sum of the parts, and ``None`` if any part cannot be priced: never a partial amount.

        Runs for every call, so it skips what only :meth:`quote` needs (the description)."""
        when = at if isinstance(at, datetime) else datetime.fromtimestamp(at, tz=timezone.utc)
        if parts and len(parts) > 1:
            return self._price_parts(provider, model, parts, when, service_tier)
        if model:
            cost = self._price_one(provider, model, usage, when, service_tier)
            if cost is not None:
                return cost
        self._unpriced(provider, model)
        return None

    def estimate(self, provider: str | None, model: str, usage: TokenUsage, at: float | datetime) -> Cost | None:
        """What ``usage`` would cost, without counting or warning about an unknown model: for a price
        asked before a call (a stop budget's reservation), not for a call made."""
        when = at if isinstance(at, datetime) else datetime.fromtimestamp(at, tz=timezone.utc)
        return self._price_one(provider, model, usage, when, None)

    def _price_one(self, provider: str | None, model: str, usage: TokenUsage, when: datetime,
                   service_tier: str | None) -> Cost | None:
        override, found = self._match(provider, model, usage, when, service_tier)
        if override is not None:
            return override.cost
        if found is not None:
            return self._catalog_price(found[0], found[1], usage, when, service_tier)[0]
        return None

    def _price_parts(self, provider: str | None, model: str | None, parts: Sequence[Part], when: datetime,
                     service_tier: str | None) -> Cost | None:
        costs: list[Cost] = []
        for part in parts:
            part_model = part.model or model
            cost = self._price_one(provider, part_model, part.usage, when, service_tier) if part_model else None
            if cost is None:
                self._unpriced(provider, part_model)
                return None
            costs.append(cost)
        details = [f"{part.label or 'message'}@{part.model or model}" for part in parts]
        details += [c.detail for c in costs if c.detail]
        sources = sorted({c.source for c in costs})
        return Cost(sum((c.input for c in costs), _ZERO), sum((c.output for c in costs), _ZERO),
                    sum((c.total for c in costs), _ZERO), " + ".join(sources),
                    "billed iterations: " + ", ".join(details))

    def _unpriced(self, provider: str | None, model: str | None) -> None:
        key = (provider, model)
        with self._lock:
            self.unpriced[model or "<none>"] = self.unpriced.get(model or "<none>", 0) + 1
            first = key not in self._warned
            self._warned.add(key)
        if first:
            logger.warning(
                "vital-callbacks: no price for model %r (provider %r); cost recorded as null. "
                "Add it to a pricing/ override file to price it.", model, provider)

    def quote(self, provider: str | None, model: str, usage: TokenUsage, at: float | datetime, *,
              service_tier: str | None = None) -> Quote | None:
        """The cost and how it was found (what ``vital-callbacks prices`` prints): the same match and
        formula :meth:`price` uses, so the CLI shows what the handler charges."""
        when = at if isinstance(at, datetime) else datetime.fromtimestamp(at, tz=timezone.utc)
        override, found = self._match(provider, model, usage, when, service_tier)
        if override is not None:
            return override
        if found is not None:
            return self._quote_catalog(found[0], found[1], usage, when, service_tier)
        return None

    def _match(self, provider: str | None, model: str, usage: TokenUsage, when: datetime,
               service_tier: str | None = None) -> tuple[Quote | None, tuple[Any, Any] | None]:
        """The override quote, or else the catalog entry, that prices this call (neither: unknown)."""
        for entry, cand_provider, cand_model, found in self._steps(provider, model):
            if entry is not None:
                quote = self._quote_override(entry, cand_provider, cand_model, usage, when, service_tier)
                if quote is not None:
                    return quote, None
            if found is not None:
                return None, found
        return None, None

    def _steps(self, provider: str | None, model: str) -> tuple[_Step, ...]:
        """Where to look, in order, for this (provider, model): which override entry and which catalog
        match per candidate name. Fixed for the life of the book, so resolved once per pair; only the
        price in force at the call's time is looked up per call."""
        key = (provider, model)
        steps = self._resolved.get(key)
        if steps is None:
            # A self-hosted server's model is priced by an override only: the catalog's price for a model
            # of that name is another provider's, a made-up number for this call. The catalog still
            # names the model's family, so an override for `gpt-4o` (a gateway in front of OpenAI, say)
            # prices the snapshot the server answers with.
            self_hosted = (provider or "").strip().lower() in _SELF_HOSTED
            steps = tuple(
                (entry, cand_provider, cand_model, None if self_hosted else found)
                for cand_provider, cand_model in candidates(provider, model)
                for found in [self._catalog_lookup(cand_provider, cand_model)]
                for entry in [self._find_override(cand_provider, cand_model, provider)
                              or self._family_override(found, provider, self_hosted)]
                if entry is not None or (found is not None and not self_hosted)
            )
            self._resolved[key] = steps  # a race computes the same tuple twice, harmlessly
        return steps

    def _family_override(self, found: tuple[Any, Any] | None, raw_provider: str | None,
                         self_hosted: bool = False) -> OverrideEntry | None:
        """An override named by the catalog's identity of the model: one for ``gpt-4o`` applies to the
        served snapshot ``gpt-4o-2024-08-06`` (an override naming the snapshot itself wins, being
        looked up first). For a self-hosted server only an override naming that server's provider
        applies: an OpenAI discount is not a price for a local model of the same name."""
        if found is None:
            return None
        return self._find_override(raw_provider if self_hosted else found[0].id, found[1].id, raw_provider)

    # -- overrides ---------------------------------------------------------------------------------
    def _find_override(self, cand_provider: str | None, model: str,
                       raw_provider: str | None) -> OverrideEntry | None:
        for entry in self._overrides:
            if entry.matches(cand_provider, model) or entry.matches(raw_provider, model):
                return entry
        return None

    def _quote_override(self, entry: OverrideEntry, cand_provider: str | None, model: str,
                        usage: TokenUsage, when: datetime, service_tier: str | None) -> Quote | None:
        price = entry.price_at(when)
        if price is None:
            return None
        source = f"override:{entry.source_file}"
        if price.discount is not None:
            found = self._catalog_lookup(catalog_provider(entry.provider) or cand_provider, model)
            if found is None:
                logger.warning("vital-callbacks: %s discounts %r, which the catalog does not price",
                               entry.source_file, model)
                return None
            base = self._quote_catalog(found[0], found[1], usage, when, service_tier)
            factor = Decimal(1) - price.discount
            detail = "; ".join(filter(None, [base.cost.detail, f"{price.discount * 100}% off {base.cost.source}"]))
            cost = Cost(base.cost.input * factor, base.cost.output * factor, base.cost.total * factor, source, detail)
            discount = price.discount
            return Quote(entry.provider, model, cost, lambda: f"{base.description} less {discount * 100}% ({source})")
        cost = cost_of(price.model_price(), usage, source)
        return Quote(entry.provider, model, cost, lambda: f"{price.describe()} ({source})")

    # -- catalog -----------------------------------------------------------------------------------
    def _catalog_lookup(self, provider_id: str | None, model: str) -> tuple[Any, Any] | None:
        key = (provider_id, model.lower())
        with self._lock:
            if key in self._catalog:
                return self._catalog[key]  # type: ignore[no-any-return]
        from genai_prices import data_snapshot

        found: tuple[Any, Any] | None
        try:
            found = data_snapshot.get_snapshot().find_provider_model(model, None, provider_id, None)
        except LookupError:
            found = None
        with self._lock:
            self._catalog[key] = found
        return found

    @staticmethod
    def _quote_catalog(provider: Any, model: Any, usage: TokenUsage, when: datetime,
                       service_tier: str | None = None) -> Quote:
        cost, model_price = PriceBook._catalog_price(provider, model, usage, when, service_tier)
        return Quote(provider.id, model.id, cost, lambda: f"{provider.id}/{model.id}: {model_price}")

    @staticmethod
    def _catalog_price(provider: Any, model: Any, usage: TokenUsage, when: datetime,
                       service_tier: str | None = None) -> tuple[Cost, Any]:
        """The cost and the ``ModelPrice`` in force at ``when`` (for the tier) it came from, through
        :func:`cost_of` either way."""
        standard = model.get_prices(when)
        tiered = tier_prices(provider, model, service_tier, when, standard)
        if tiered is None:
            return cost_of(standard, usage, CATALOG_SOURCE), standard
        cost = cost_of(tiered, usage, CATALOG_SOURCE)
        detail = "; ".join(filter(None, [f"service_tier={service_tier}", cost.detail]))
        return Cost(cost.input, cost.output, cost.total, cost.source, detail), tiered


_tiers: dict[tuple[int, int, str, int, tuple[int, ...]], Any] = {}
_alive: list[tuple[Any, Any, Any]] = []
_tiers_lock = threading.Lock()


def tier_prices(provider: Any, model: Any, service_tier: str | None, when: datetime, standard: Any) -> Any:
    """The catalog's prices for ``service_tier`` (OpenAI ``flex`` / ``priority``), or ``None`` where the
    tier has no prices of its own (most calls: ``default``, ``standard``, a tier listed at the standard
    prices). Resolved by genai-prices (``ModelInfo.get_prices(..., price_context)``) once per model,
    tier and price period, and kept, so the tier's prices are one object the fast path can plan on
    (a fresh copy per call would be re-planned every time)."""
    if not service_tier or not model.price_variants:
        return None
    context = {"service_tier": service_tier}
    active = tuple(i for i, v in enumerate(model.price_variants)
                   if all(context.get(k) == value for k, value in v.when.items())
                   and (v.constraint is None or v.constraint.active(when)))
    if not active:
        return None
    # The provider is part of the key: a fallback provider (Azure over OpenAI's models) shares the
    # model objects but not their tier prices.
    key = (id(provider), id(model), service_tier, id(standard), active)
    found = _tiers.get(key, _MISSING)
    if found is _MISSING:
        # genai-prices applies variants only to a provider's own models, not to a fallback's
        own = any(model is m for m in provider.models)
        resolved = model.get_prices(when, context) if own else standard
        found = None if resolved == standard else resolved
        with _tiers_lock:
            _tiers[key] = found
            _alive.append((provider, model, standard))  # the ids in the key are never reused
    return found


_MISSING = object()


def _fees(usage: TokenUsage) -> str | None:
    return f"web_searches={usage.web_searches}" if usage.web_searches else None


def cost_of(model_price: Any, usage: TokenUsage, source: str) -> Cost:
    """THE cost formula, for catalog and override prices alike: genai-prices' ``ModelPrice.calc_price``,
    through the exact fast path of :mod:`~vital_callbacks.pricing.catalog_math` for per-token prices.
    Cached tokens are part of ``input`` and billed at their own rate; reasoning is part of ``output``."""
    fast = fast_cost(model_price, usage)
    if fast is not None:
        return Cost(fast[0], fast[1], fast[0] + fast[1], source)
    calc = model_price.calc_price(to_genai_usage(usage))
    return Cost(calc["input_price"], calc["output_price"], calc["total_price"], source, _fees(usage))
