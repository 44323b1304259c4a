"""The fast cost path gives exactly what genai-prices' calc_price gives, for every model in the catalog."""

from __future__ import annotations

import random
from datetime import datetime, timezone

from genai_prices import Usage, data_snapshot

from vital_callbacks.core.events import TokenUsage
from vital_callbacks.pricing.catalog_math import fast_cost

WHEN = datetime(2026, 11, 1, tzinfo=timezone.utc)


def usages(rng: random.Random) -> list[TokenUsage]:
    out = [TokenUsage(input=200_000, output=10, total=200_010), TokenUsage(input=200_001, output=10, total=200_011),
           TokenUsage(input=0, output=0, total=0)]
    for _ in range(6):
        inp = rng.choice([rng.randint(0, 5_000), rng.randint(100_000, 1_200_000)])
        read = rng.randint(0, inp // 2) if rng.random() < 0.5 else 0
        write = rng.randint(0, (inp - read) // 2) if rng.random() < 0.3 else 0
        out_tokens = rng.randint(0, 20_000)
        out.append(TokenUsage(input=inp, output=out_tokens, total=inp + out_tokens, cache_read=read, cache_write=write,
                              reasoning=rng.randint(0, out_tokens)))
    return out


def test_fast_path_equals_calc_price_for_the_whole_catalog() -> None:
    """Every model whose price takes the fast path gets the identical Decimal from calc_price."""
    rng = random.Random(7)
    checked = 0
    for provider in data_snapshot.get_snapshot().providers:
        for model in provider.models:
            model_price = model.get_prices(WHEN)
            for usage in usages(rng):
                fast = fast_cost(model_price, usage)
                if fast is None:
                    continue
                calc = model.calc_price(
                    Usage(input_tokens=usage.input, output_tokens=usage.output,
                          cache_read_tokens=usage.cache_read or None, cache_write_tokens=usage.cache_write or None),
                    provider, genai_request_timestamp=WHEN)
                assert fast == (calc.input_price, calc.output_price), (provider.id, model.id, usage)
                checked += 1
    assert checked > 5_000  # most of the catalog takes the fast path


def test_tier_prices_equal_calc_price_with_the_price_context() -> None:
    """For every model with service-tier prices: our kept tier prices, through the same fast path or
    calc_price, give genai-prices' own ``calc_price(price_context=...)``; a tier without prices of its
    own is the standard price."""
    from vital_callbacks.pricing.book import CATALOG_SOURCE, cost_of, tier_prices

    rng = random.Random(11)
    checked = tiered_models = 0
    for provider in data_snapshot.get_snapshot().providers:
        for model in provider.models:
            tiers = {t for v in model.price_variants or () if isinstance(t := v.when.get("service_tier"), str)}
            for tier in (*sorted(tiers), "default", "standard"):
                standard = model.get_prices(WHEN)
                tiered = tier_prices(provider, model, tier, WHEN, standard)
                assert tier_prices(provider, model, tier, WHEN, standard) is tiered  # kept, not rebuilt
                tiered_models += tiered is not None
                for usage in usages(rng)[:4]:
                    ours = cost_of(tiered if tiered is not None else standard, usage, CATALOG_SOURCE)
                    theirs = model.calc_price(
                        Usage(input_tokens=usage.input, output_tokens=usage.output,
                              cache_read_tokens=usage.cache_read or None, cache_write_tokens=usage.cache_write or None,
                              output_reasoning_tokens=usage.reasoning or None),
                        provider, genai_request_timestamp=WHEN, price_context={"service_tier": tier})
                    assert (ours.input, ours.output, ours.total) == (
                        theirs.input_price, theirs.output_price, theirs.total_price), (provider.id, model.id, tier)
                    checked += 1
    assert tiered_models > 10 and checked > 1_000  # OpenAI's flex / priority models at least
