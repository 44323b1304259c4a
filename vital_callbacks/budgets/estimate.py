"""A call's worst-case cost before it is made: what a stop budget reserves.

The prompt is counted with tiktoken (on the caller's thread: only under a stop budget), with a margin
for the provider's own message framing, and the output at the call's ``max_tokens``, or
``VITAL_BUDGET_DEFAULT_MAX_TOKENS`` when the call sets none. Priced with the same book as the calls.
"""

from __future__ import annotations

import time
from decimal import Decimal

from vital_callbacks.core.events import TokenUsage
from vital_callbacks.pricing.book import PriceBook
from vital_callbacks.providers.tokens import EncodingUnavailable, count_tokens
from vital_callbacks.providers.usage import prompt_text

PROMPT_MARGIN = 1.1
PROMPT_FRAMING_TOKENS = 16
"""Per-request framing a provider adds to the counted text (roles, separators): counted on top."""
CHARS_PER_TOKEN = 3
"""Without tiktoken's encoding (an air-gapped machine): a generous characters-per-token guess."""
UNPRICED = Decimal("1e-12")
"""What an unpriced model's call reserves: nothing to count, but a budget already at its limit refuses it."""


def prompt_tokens(raw_input: object, model: str | None) -> int:
    text = prompt_text(raw_input)
    try:
        counted = count_tokens(text, model)
    except (EncodingUnavailable, ValueError):
        counted = len(text) // CHARS_PER_TOKEN + 1
    return int(counted * PROMPT_MARGIN) + PROMPT_FRAMING_TOKENS


def worst_case(prices: PriceBook, provider: str | None, model: str | None, raw_input: object,
               max_tokens: int | None, default_max_tokens: int) -> Decimal:
    """The most the call can cost, by the book's price now; never raises (an input it cannot read
    reserves as an unpriced call: still refused once the limit is reached)."""
    try:
        return _worst_case(prices, provider, model, raw_input, max_tokens, default_max_tokens)
    except Exception:
        return UNPRICED


def _worst_case(prices: PriceBook, provider: str | None, model: str | None, raw_input: object,
                max_tokens: int | None, default_max_tokens: int) -> Decimal:
    if model is None:
        return UNPRICED
    tokens_in = prompt_tokens(raw_input, model)
    tokens_out = max_tokens if max_tokens is not None and max_tokens > 0 else default_max_tokens
    usage = TokenUsage(input=tokens_in, output=tokens_out, total=tokens_in + tokens_out)
    cost = prices.estimate(provider, model, usage, time.time())
    return cost.total if cost is not None and cost.total > 0 else UNPRICED
