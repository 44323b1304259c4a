"""``pricing/`` overrides on a real-shaped response: OpenAI answers a ``gpt-4o`` request with the dated
snapshot ``gpt-4o-2024-08-06``, so an override written for the family ``gpt-4o`` must still apply (by
the catalog's identity of the served model), an override naming the snapshot itself must win over
the family one, and ``vital-callbacks prices`` must show the very price the handler charged."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from genai_prices import Usage
from genai_prices.types import ModelPrice

from tests.providers._replay import Recorder, assert_clean, call_time, catalog_cost, json_body, raw_usage, replay
from vital_callbacks import InMemorySink, LLMCall, Settings, VitalCallbackHandler
from vital_callbacks.cli import main

langchain_openai = pytest.importorskip("langchain_openai")

SNAPSHOT = "quirks_openai_chat_gpt4o_snapshot.yaml"
SERVED = "gpt-4o-2024-08-06"
FAMILY_DISCOUNT = """\
models:
  - provider: openai
    model: gpt-4o
    prices:
      - effective_from: 2026-01-01
        discount: 0.2
"""
SNAPSHOT_PRICE = """\
models:
  - provider: openai
    model: gpt-4o-2024-08-06
    prices:
      - effective_from: 2026-01-01
        input_mtok: 2.00
        output_mtok: 8.00
        cache_read_mtok: 0.50
"""
TOKENS = {"input_tokens": 2048, "cache_read_tokens": 1280, "output_tokens": 356}


def _pricing_dir(root: Path, files: dict[str, str]) -> Path:
    folder = root / "pricing"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def _charged(pricing_dir: Path) -> LLMCall:
    """Replay the snapshot response through a handler using ``pricing_dir``; the call it recorded."""
    sink = InMemorySink()
    handler = VitalCallbackHandler(Settings(flush_interval_s=0.05, pricing_dir=pricing_dir), sinks=[sink])
    try:
        recorder = Recorder(sink, handler)
        llm = langchain_openai.ChatOpenAI(model="gpt-4o", api_key="sk-test", max_retries=0, use_responses_api=False)
        call = replay(recorder, SNAPSHOT, llm)
        assert_clean(call, recorder)
    finally:
        handler.shutdown()
    assert (call.provider, call.requested_model, call.model) == ("openai", "gpt-4o", SERVED)
    assert (call.usage.input, call.usage.cache_read, call.usage.output) == (2048, 1280, 356)
    assert raw_usage(call)["usage"]["prompt_tokens_details"]["cached_tokens"] == 1280
    return call


def test_family_discount_applies_to_the_served_snapshot(tmp_path: Path) -> None:
    """A ``discount: 0.2`` for ``openai`` / ``gpt-4o`` prices the ``gpt-4o-2024-08-06`` response at 80% of
    the catalog price, with an ``override:`` source."""
    call = _charged(_pricing_dir(tmp_path, {"family.yaml": FAMILY_DISCOUNT}))
    catalog = catalog_cost(call, SERVED, "openai", input_tokens=2048, cache_read_tokens=1280, output_tokens=356)
    assert call.cost is not None
    assert call.cost.source.startswith("override:") and call.cost.source == "override:family.yaml"
    assert call.cost.total == catalog * Decimal("0.8")
    # Catalog: 768 x $2.50 + 1280 x $1.25 + 356 x $10 = $0.00708 per million tokens; 20% off.
    assert call.cost.total == Decimal("0.005664")


def test_snapshot_override_wins_over_the_family_one(tmp_path: Path) -> None:
    """With both files present (the family one sorting first), the override naming the served snapshot
    prices the call, at its own explicit prices."""
    folder = _pricing_dir(tmp_path, {"a_family.yaml": FAMILY_DISCOUNT, "z_snapshot.yaml": SNAPSHOT_PRICE})
    call = _charged(folder)
    explicit = ModelPrice(input_mtok=Decimal("2.00"), output_mtok=Decimal("8.00"), cache_read_mtok=Decimal("0.50"))
    assert call.cost is not None
    assert call.cost.source == "override:z_snapshot.yaml"
    assert call.cost.total == explicit.calc_price(Usage(**TOKENS))["total_price"]
    # 768 x $2 + 1280 x $0.50 + 356 x $8, per million tokens.
    assert call.cost.total == Decimal("0.005024")


@pytest.fixture
def no_vital_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in ("VITAL_PRICING_DIR", "VITAL_DATABASE_URL", "VITAL_SINKS"):
        monkeypatch.delenv(name, raising=False)
    yield monkeypatch


@pytest.mark.parametrize(("files", "source"), [
    pytest.param({"family.yaml": FAMILY_DISCOUNT}, "override:family.yaml", id="family-discount"),
    pytest.param({"a_family.yaml": FAMILY_DISCOUNT, "z_snapshot.yaml": SNAPSHOT_PRICE}, "override:z_snapshot.yaml",
                 id="snapshot-wins"),
])
def test_prices_command_shows_what_the_handler_charged(tmp_path: Path, no_vital_env: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str], files: dict[str, str],
                                                       source: str) -> None:
    """``vital-callbacks prices gpt-4o-2024-08-06 --provider openai`` with the call's tokens and time,
    and the same ``VITAL_PRICING_DIR``, prints the total the handler recorded, from the same override."""
    folder = _pricing_dir(tmp_path, files)
    call = _charged(folder)
    assert call.cost is not None and call.cost.source == source
    usage = json_body(SNAPSHOT)["usage"]
    no_vital_env.setenv("VITAL_PRICING_DIR", str(folder))
    capsys.readouterr()
    status = main(["prices", SERVED, "--provider", "openai", "--input-tokens", str(usage["prompt_tokens"]),
                   "--output-tokens", str(usage["completion_tokens"]),
                   "--cache-read", str(usage["prompt_tokens_details"]["cached_tokens"]),
                   "--at", call_time(call).isoformat()])
    out = capsys.readouterr().out
    assert status == 0, out
    assert f"total ${call.cost.total:,.6f}" in out
    assert source in out
