"""Manual sanity check for the hand-authored cassettes in tests/cassettes/.

Not a test (leading underscore keeps pytest from collecting it). Replays each
cassette with ``record_mode="none"`` through the real LangChain chat model
clients and prints the resulting ``usage_metadata`` / ``response_metadata``.

Run:  python tests/_cassette_check.py
"""

from __future__ import annotations

from pathlib import Path
from pprint import pprint

import vcr
from langchain_anthropic import ChatAnthropic
from langchain_openai import ChatOpenAI

CASSETTES = Path(__file__).parent / "cassettes"


def _use(name: str):
    return vcr.use_cassette(str(CASSETTES / name), record_mode="none", allow_playback_repeats=False)


def _show(label: str, msg, cassette) -> None:
    print(f"=== {label} ===")
    assert cassette.play_count == len(cassette), (
        f"expected every interaction replayed, got {cassette.play_count}/{len(cassette)}"
    )
    print(f"cassette plays: {cassette.play_count}/{len(cassette)}")
    print(f"content: {msg.content!r}")
    print("usage_metadata:")
    pprint(msg.usage_metadata, sort_dicts=False)
    print("response_metadata:")
    pprint(msg.response_metadata, sort_dicts=False)
    print()


def check_openai_cached_reasoning() -> None:
    with _use("openai_chat_cached_reasoning.yaml") as cas:
        llm = ChatOpenAI(model="o3-mini", api_key="sk-test", max_retries=0)
        msg = llm.invoke("hi")
        _show("openai o3-mini (cached + reasoning)", msg, cas)


def check_openai_stream_usage() -> None:
    with _use("openai_chat_stream_usage.yaml") as cas:
        llm = ChatOpenAI(
            model="gpt-4o-mini",
            api_key="sk-test",
            max_retries=0,
            streaming=True,
            stream_usage=True,
        )
        agg = None
        n = 0
        last = None
        for chunk in llm.stream("hi"):
            n += 1
            last = chunk
            agg = chunk if agg is None else agg + chunk
        print(f"(stream produced {n} chunks; last chunk usage_metadata={last.usage_metadata})")
        _show("openai gpt-4o-mini (stream, aggregated)", agg, cas)


def check_anthropic_cache() -> None:
    with _use("anthropic_messages_cache.yaml") as cas:
        llm = ChatAnthropic(
            model="claude-sonnet-4-5-20250929", api_key="sk-ant-test", max_retries=0
        )
        msg = llm.invoke("hi")
        _show("anthropic claude-sonnet-4-5 (prompt cache)", msg, cas)


def check_anthropic_thinking() -> None:
    with _use("anthropic_messages_thinking.yaml") as cas:
        llm = ChatAnthropic(
            model="claude-sonnet-4-5-20250929",
            api_key="sk-ant-test",
            max_retries=0,
            max_tokens=4096,
            thinking={"type": "enabled", "budget_tokens": 2048},
        )
        msg = llm.invoke("What is 27*43?")
        print("content block types:", [b.get("type") for b in msg.content])
        _show("anthropic claude-sonnet-4-5 (thinking + cache TTL breakdown)", msg, cas)


if __name__ == "__main__":
    check_openai_cached_reasoning()
    check_openai_stream_usage()
    check_anthropic_cache()
    check_anthropic_thinking()
