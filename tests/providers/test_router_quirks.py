"""Who served the call, when the client says "openai": ``ChatOpenAI(base_url=...)`` reaches OpenRouter,
Groq or a self-hosted server, and ``AzureChatOpenAI`` a deployment whose name is not the model. The
provider comes from the URL the request went to and the model from the body, so the price is the
router's (OpenRouter's own ``usage.cost`` agrees), Azure's catalog entry for the served model, or none
at all for a self-hosted server (never OpenAI's list price, whatever name the server answers under)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from tests.providers._replay import (
    Recorder,
    assert_clean,
    catalog_cost,
    drop_none,
    json_body,
    raw_usage,
    replay,
)

langchain_openai = pytest.importorskip("langchain_openai")
langchain_groq = pytest.importorskip("langchain_groq")

OPENROUTER = "quirks_openrouter_chat.yaml"
GROQ = "quirks_groq_chat.yaml"
AZURE = "quirks_azure_deployment.yaml"


def _assert_chat_raw(call: Any, provider_id: str | None, cassette: str) -> None:
    """The raw usage is the body's ``usage`` object itself (OpenAI chat shape), every field kept."""
    raw = raw_usage(call)
    assert (raw["provider"], raw["shape"]) == (provider_id, "openai-chat")
    assert drop_none(raw["usage"]) == drop_none(json_body(cassette)["usage"])


def test_openrouter_is_priced_as_openrouter_bills(recorder: Recorder) -> None:
    """Through ``ChatOpenAI(base_url="https://openrouter.ai/api/v1")`` the provider is ``openrouter`` and
    the cost is OpenRouter's catalog price, equal to the ``usage.cost`` OpenRouter put in the body."""
    llm = langchain_openai.ChatOpenAI(model="openai/gpt-4o-mini", api_key="sk-or-test", max_retries=0,
                                      base_url="https://openrouter.ai/api/v1")
    call = replay(recorder, OPENROUTER, llm, graph=False)  # called directly, outside any graph
    assert_clean(call, recorder)
    assert (call.provider, call.model, call.finish_reason) == ("openrouter", "openai/gpt-4o-mini", "stop")
    assert (call.usage.input, call.usage.cache_read, call.usage.output) == (1250, 1024, 180)
    _assert_chat_raw(call, "openrouter", OPENROUTER)
    billed_by_openrouter = Decimal(str(json_body(OPENROUTER)["usage"]["cost"]))
    assert call.cost is not None
    assert call.cost.total == catalog_cost(call, "openai/gpt-4o-mini", "openrouter", input_tokens=1250,
                                           cache_read_tokens=1024, output_tokens=180)
    assert call.cost.total == billed_by_openrouter == Decimal("0.0002187")


@pytest.mark.parametrize(("cassette", "base_url", "model", "usage"), [
    pytest.param("quirks_selfhosted_vllm_chat.yaml", "http://127.0.0.1:8000/v1", "llama-3.1-8b-instruct", (57, 32, 89),
                 id="vllm"),
    pytest.param("quirks_selfhosted_localai_alias.yaml", "http://localhost:8080/v1", "gpt-4o-mini", (64, 27, 91),
                 id="localai-alias-of-an-openai-name"),
])
def test_self_hosted_server_is_unpriced(recorder: Recorder, cassette: str, base_url: str, model: str,
                                        usage: tuple[int, int, int]) -> None:
    """A server the catalog does not know is ``openai-compatible``: its tokens are recorded, its cost is
    ``None`` and counted unpriced, even when it answers under an OpenAI model name."""
    llm = langchain_openai.ChatOpenAI(model=model, api_key="sk-local", max_retries=0, base_url=base_url)
    call = replay(recorder, cassette, llm)
    assert_clean(call, recorder)
    assert (call.provider, call.model) == ("openai-compatible", model)
    assert (call.usage.input, call.usage.output, call.usage.total) == usage
    _assert_chat_raw(call, None, cassette)
    assert call.cost is None
    assert recorder.handler.stats()["unpriced_calls"] == {model: 1}
    assert recorder.graph_run().unpriced_calls == 1


def _groq_via_openai() -> Any:
    return langchain_openai.ChatOpenAI(model="llama-3.3-70b-versatile", api_key="gsk-test", max_retries=0,
                                       base_url="https://api.groq.com/openai/v1")


def _groq_native() -> Any:
    return langchain_groq.ChatGroq(model="llama-3.3-70b-versatile", api_key="gsk-test", max_retries=0)


@pytest.mark.parametrize("make_client", [pytest.param(_groq_via_openai, id="ChatOpenAI-base_url"),
                                         pytest.param(_groq_native, id="ChatGroq")])
def test_groq_is_priced_at_groqs_rates(recorder: Recorder, make_client: Callable[[], Any]) -> None:
    """Groq's OpenAI-compatible endpoint is provider ``groq`` whether reached by ``ChatOpenAI(base_url=)``
    or ``ChatGroq``, priced from Groq's catalog entry; its ``on_demand`` tier selects no other price."""
    call = replay(recorder, GROQ, make_client())
    assert_clean(call, recorder)
    assert (call.provider, call.model, call.finish_reason) == ("groq", "llama-3.3-70b-versatile", "stop")
    assert (call.usage.input, call.usage.output, call.usage.total) == (412, 158, 570)
    _assert_chat_raw(call, "groq", GROQ)
    assert call.cost is not None
    assert call.cost.total == catalog_cost(call, "llama-3.3-70b-versatile", "groq", input_tokens=412,
                                           output_tokens=158)
    # 412 x $0.59 + 158 x $0.79, per million tokens.
    assert call.cost.total == Decimal("0.0003679")


def test_azure_deployment_is_priced_as_the_served_model(recorder: Recorder) -> None:
    """``AzureChatOpenAI`` on deployment ``support-bot-prod``: the call's model is the served
    ``gpt-4.1-2025-04-14`` from the body, provider ``azure``, priced from Azure's catalog."""
    llm = langchain_openai.AzureChatOpenAI(azure_deployment="support-bot-prod", api_version="2024-10-21",
                                           azure_endpoint="https://contoso-eastus2.openai.azure.com",
                                           api_key="azure-test", max_retries=0)
    call = replay(recorder, AZURE, llm)
    assert_clean(call, recorder)
    assert (call.provider, call.model, call.finish_reason) == ("azure", "gpt-4.1-2025-04-14", "stop")
    assert call.requested_model == "support-bot-prod"  # the deployment LangChain sent to, not a model
    assert (call.usage.input, call.usage.cache_read, call.usage.output) == (2317, 1792, 142)
    _assert_chat_raw(call, "azure", AZURE)
    assert call.cost is not None
    assert call.cost.total == catalog_cost(call, "gpt-4.1-2025-04-14", "azure", input_tokens=2317,
                                           cache_read_tokens=1792, output_tokens=142)
    # 525 x $2 + 1792 x $0.50 + 142 x $8, per million tokens.
    assert call.cost.total == Decimal("0.003082")
