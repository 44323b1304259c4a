"""Shared machinery of the provider-quirk tests: replay an authored cassette through a real LangChain
client (inside a one-node LangGraph graph, or called directly), then return the one ``LLMCall`` the
handler recorded, and compute the expected cost independently with ``genai_prices.calc_price``.

The cassettes under ``tests/cassettes/quirks_*.yaml`` were written for these tests in the exact wire
format of each API (JSON bodies, SSE framing, content types), modelled on real recorded responses;
no network is ever touched (``record_mode="none"``, matched on method + host + path).
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, TypedDict

import vcr
import yaml
from genai_prices import Usage, calc_price
from langchain_core.messages import AnyMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from vital_callbacks import GraphRun, InMemorySink, LLMCall, VitalCallbackHandler

CASSETTES = Path(__file__).resolve().parent.parent / "cassettes"
PROMPT = "hello"
MATCH_ON = ("method", "host", "path")


def cassette_vcr() -> Any:
    """A vcrpy instance that only replays, matching on method + host + path (bodies and query strings
    vary with client versions), and that also reads :func:`eventstream_serializer` cassettes."""
    replayer = vcr.VCR(record_mode="none", match_on=list(MATCH_ON), decode_compressed_response=False)
    replayer.register_serializer("eventstream", EventStreamYaml())
    return replayer


# -- the graph ------------------------------------------------------------------------------------
class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def one_node_graph(llm: Any, *, use_async: bool = False) -> Any:
    """START -> call_model -> END, the node calling ``llm`` (``ainvoke`` in an async node)."""

    def call_model(state: State) -> dict[str, Any]:
        return {"messages": [llm.invoke(state["messages"])]}

    async def acall_model(state: State) -> dict[str, Any]:
        return {"messages": [await llm.ainvoke(state["messages"])]}

    builder = StateGraph(State)
    if use_async:
        builder.add_node("call_model", acall_model)
    else:
        builder.add_node("call_model", call_model)
    builder.add_edge(START, "call_model")
    builder.add_edge("call_model", END)
    return builder.compile(name="quirk_graph")


@dataclass
class Recorder:
    """An in-memory sink and the handler writing into it."""

    sink: InMemorySink
    handler: VitalCallbackHandler

    def config(self) -> dict[str, Any]:
        return {"callbacks": [self.handler], "metadata": {"tenant_id": "quirks"}}

    def one_call(self) -> LLMCall:
        """The single LLM call recorded, after the pipeline has delivered everything."""
        assert self.handler.flush(10)
        calls = self.sink.of(LLMCall)
        assert len(calls) == 1, calls
        return calls[0]

    def graph_run(self) -> GraphRun:
        (run,) = self.sink.of(GraphRun)
        return run


def replay(recorder: Recorder, cassette: str, llm: Any, *, stream: bool = False, graph: bool = True,
           serializer: str = "yaml") -> LLMCall:
    """Run one call through ``llm`` against ``cassette`` (sync), and return what was recorded."""
    with cassette_vcr().use_cassette(str(CASSETTES / cassette), serializer=serializer) as cass:
        config = recorder.config()
        if graph:
            app = one_node_graph(llm)
            inputs = {"messages": [("user", PROMPT)]}
            if stream:
                for _ in app.stream(inputs, config=config, stream_mode="messages"):
                    pass
            else:
                app.invoke(inputs, config=config)
        elif stream:
            for _ in llm.stream(PROMPT, config=config):
                pass
        else:
            llm.invoke(PROMPT, config=config)
        assert cass.play_count == 1 and cass.all_played
    return _recorded(recorder, graph)


def _recorded(recorder: Recorder, graph: bool) -> LLMCall:
    """The one call recorded; in a graph, also the graph run's totals, which must be exactly that call's."""
    call = recorder.one_call()
    if graph:
        run = recorder.graph_run()
        assert (run.llm_calls, run.usage) == (1, call.usage)
        assert run.cost_usd == (call.cost.total if call.cost is not None else None)
        assert call.graph == run.name == "quirk_graph" and call.node == "call_model"
    return call


async def areplay(recorder: Recorder, cassette: str, llm: Any, *, stream: bool = False, graph: bool = True,
                  serializer: str = "yaml") -> LLMCall:
    """:func:`replay` through ``ainvoke`` / ``astream`` (an async graph node, or the model directly)."""
    with cassette_vcr().use_cassette(str(CASSETTES / cassette), serializer=serializer) as cass:
        config = recorder.config()
        if graph:
            app = one_node_graph(llm, use_async=True)
            inputs = {"messages": [("user", PROMPT)]}
            if stream:
                async for _ in app.astream(inputs, config=config, stream_mode="messages"):
                    pass
            else:
                await app.ainvoke(inputs, config=config)
        elif stream:
            async for _ in llm.astream(PROMPT, config=config):
                pass
        else:
            await llm.ainvoke(PROMPT, config=config)
        assert cass.play_count == 1 and cass.all_played
    return _recorded(recorder, graph)


# -- truth ----------------------------------------------------------------------------------------
def call_time(call: LLMCall) -> datetime:
    return datetime.fromtimestamp(call.start_time, tz=timezone.utc)


def catalog_cost(call: LLMCall, model_ref: str, provider_id: str, *, service_tier: str | None = None,
                 **usage: int) -> Decimal:
    """genai-prices' price of ``usage`` (its own units: ``input_tokens`` includes cache and audio,
    ``output_tokens`` includes reasoning) at the time of the call, for ``service_tier``."""
    context = {"service_tier": service_tier} if service_tier else None
    price = calc_price(Usage(**usage), model_ref, provider_id=provider_id,
                       genai_request_timestamp=call_time(call), price_context=context)
    return Decimal(price.total_price)


def assert_clean(call: LLMCall, recorder: Recorder) -> None:
    """What every replayed call must show: a successful call with provider-reported tokens, recorded
    without a single handler error."""
    assert call.status == "success", (call.error_type, call.error_message)
    assert call.token_source == "provider"
    assert recorder.handler.stats()["handler_errors"] == 0


def raw_usage(call: LLMCall) -> dict[str, Any]:
    """The raw usage the call recorded (``LLMCall.raw_usage``), parsed; fails when none was kept."""
    assert call.raw_usage is not None, "no raw usage recorded"
    parsed = json.loads(call.raw_usage)
    assert isinstance(parsed, dict)
    return parsed


def drop_none(value: Any) -> Any:
    """``value`` without ``None`` members, recursively: SDK models dump fields the wire never had as
    ``null`` (``"model": null`` on a message iteration), which is no difference in what was billed."""
    if isinstance(value, Mapping):
        return {k: drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_none(v) for v in value]
    return value


def response_body(cassette: str) -> str:
    """The response body text of a cassette's only interaction."""
    data = yaml.safe_load((CASSETTES / cassette).read_text(encoding="utf-8"))
    (interaction,) = data["interactions"]
    body = interaction["response"]["body"]["string"]
    assert isinstance(body, str)
    return body


def sse_data(cassette: str) -> list[dict[str, Any]]:
    """The JSON payloads of a cassette's SSE ``data:`` lines, in order."""
    out: list[dict[str, Any]] = []
    for line in response_body(cassette).splitlines():
        if line.startswith("data:") and line[5:].strip() not in ("", "[DONE]"):
            out.append(json.loads(line[5:]))
    return out


def json_body(cassette: str) -> dict[str, Any]:
    body = json.loads(response_body(cassette))
    assert isinstance(body, dict)
    return body


# -- AWS eventstream ------------------------------------------------------------------------------
def eventstream_message(headers: Mapping[str, str], payload: bytes) -> bytes:
    """One ``application/vnd.amazon.eventstream`` message: prelude (total length, headers length,
    prelude CRC32), string headers (type 7), payload, message CRC32, all big-endian."""
    encoded = b""
    for name, value in headers.items():
        raw_name, raw_value = name.encode(), value.encode()
        encoded += struct.pack(">B", len(raw_name)) + raw_name + b"\x07" + struct.pack(">H", len(raw_value)) + raw_value
    total = 12 + len(encoded) + len(payload) + 4
    prelude = struct.pack(">II", total, len(encoded))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + encoded + payload
    return message + struct.pack(">I", zlib.crc32(message))


def eventstream_body(events: Sequence[Mapping[str, Any]]) -> bytes:
    """Bedrock's ``converse-stream`` body from ``[{"event": type, "payload": {...}}, ...]``."""
    out = b""
    for event in events:
        headers = {":event-type": str(event["event"]), ":content-type": "application/json", ":message-type": "event"}
        out += eventstream_message(headers, json.dumps(event["payload"], separators=(",", ":")).encode())
    return out


def decode_eventstream(body: bytes) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event type, JSON payload) of each message, CRCs checked: the inverse of :func:`eventstream_body`."""
    i = 0
    while i < len(body):
        total, header_len, prelude_crc = struct.unpack(">III", body[i:i + 12])
        assert zlib.crc32(body[i:i + 8]) == prelude_crc
        assert zlib.crc32(body[i:i + total - 4]) == struct.unpack(">I", body[i + total - 4:i + total])[0]
        j, headers = i + 12, {}
        while j < i + 12 + header_len:
            name_len = body[j]
            name = body[j + 1:j + 1 + name_len].decode()
            j += 1 + name_len + 1  # the type byte (7: string)
            (value_len,) = struct.unpack(">H", body[j:j + 2])
            headers[name] = body[j + 2:j + 2 + value_len].decode()
            j += 2 + value_len
        yield headers[":event-type"], json.loads(body[i + 12 + header_len:i + total - 4])
        i += total


class EventStreamYaml:
    """vcrpy serializer for a YAML cassette whose binary eventstream response is written as readable
    events (``body: {eventstream: [{event, payload}, ...]}``) and encoded at load time."""

    @staticmethod
    def deserialize(cassette_string: str) -> dict[str, Any]:
        data = yaml.safe_load(cassette_string)
        assert isinstance(data, dict)
        for interaction in data["interactions"]:
            body = interaction["response"]["body"]
            if "eventstream" in body:
                interaction["response"]["body"] = {"string": eventstream_body(body.pop("eventstream"))}
        return data

    @staticmethod
    def serialize(cassette_dict: dict[str, Any]) -> str:
        raise RuntimeError("replay only: these cassettes are written by hand")


def eventstream_events(cassette: str) -> list[tuple[str, dict[str, Any]]]:
    """The events of an eventstream cassette, encoded then decoded back (checks the encoder too)."""
    data = EventStreamYaml.deserialize((CASSETTES / cassette).read_text(encoding="utf-8"))
    (interaction,) = data["interactions"]
    body = interaction["response"]["body"]["string"]
    assert isinstance(body, bytes)
    return list(decode_eventstream(body))
