"""The structured-log sink: one JSON line per event on ``vital_callbacks.events``, every field, content opt-in."""

from __future__ import annotations

import io
import json
import logging
import re
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from msgspec.structs import fields

from tests.graphs import FANOUT, INPUT, METADATA, build_graph
from tests.sinks.conftest import Lines
from vital_callbacks import Event, InMemorySink, LLMCall, Settings, VitalCallbackHandler
from vital_callbacks.sinks.logs import LOGGER_NAME, LogSink, to_record
from vital_callbacks.testing.fakes import ScriptedChatModel

TOKEN_KEYS = {"input": "input_tokens", "output": "output_tokens", "total": "total_tokens",
              "cache_read": "cache_read_tokens", "cache_write": "cache_write_tokens",
              "cache_write_1h": "cache_write_1h_tokens", "reasoning": "reasoning_tokens"}




def run_graph(*, capture: bool, **models: Any) -> InMemorySink:
    memory = InMemorySink()
    handler = VitalCallbackHandler(Settings(flush_interval_s=0.05, capture_content=capture),
                                   sinks=[memory, LogSink()])
    try:
        build_graph(**models).invoke(INPUT, config={"callbacks": [handler], "metadata": METADATA})
    finally:
        assert handler.flush()
        handler.shutdown()
    return memory


def expected(event: Event) -> dict[str, Any]:
    """What the line must say about each field of the event, computed independently of the sink."""
    out: dict[str, Any] = {"kind": event.kind}
    for f in fields(event):
        value = getattr(event, f.name)
        if f.name.startswith("raw_"):
            continue
        if f.name == "usage":
            out.update({key: getattr(value, attr) for attr, key in TOKEN_KEYS.items()})
        elif f.name == "cost":
            out.update({"cost_usd": value and str(value.total), "input_cost_usd": value and str(value.input),
                        "output_cost_usd": value and str(value.output), "price_source": value and value.source})
        elif f.name in ("start_time", "end_time"):
            out[f.name] = value
        elif f.name == "saved_cost":
            out["saved_cost_usd"] = None if value is None else str(value)
        elif isinstance(value, Decimal):
            out[f.name] = str(value)
        elif isinstance(value, tuple):
            out[f.name] = list(value)
        else:
            out[f.name] = value
    return out


def test_one_json_line_per_event_with_every_field(lines: Lines) -> None:
    """Each event of the reference graph is one JSON line carrying every field of the event, with
    Decimals as exact strings and times as ISO-8601 UTC."""
    events = run_graph(capture=False).events
    parsed = lines.parsed()
    assert len(parsed) == len(events) == 1 + (4 + FANOUT) + 2 + FANOUT + 1
    by_run = {line["run_id"]: line for line in parsed}
    for event in events:
        line = by_run[event.run_id]
        for key, want in expected(event).items():
            if key in ("start_time", "end_time"):
                stamp = datetime.fromisoformat(line[key])
                assert stamp.utcoffset() is not None and stamp.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
                assert stamp.timestamp() == pytest.approx(want, abs=1e-6)
            else:
                assert line[key] == want, (event.kind, key)
    graph_line = next(line for line in parsed if line["kind"] == "graph_run")
    assert Decimal(graph_line["cost_usd"]) > 0 and graph_line["tenant_id"] == "acme"
    assert graph_line["input_tokens"] == 1600 and graph_line["level"] == "info"


@pytest.mark.parametrize("capture", [False, True])
def test_content_only_with_capture(lines: Lines, capture: bool) -> None:
    """Prompt, completion, tool input/output and retriever query are present only with capture on,
    while the keys stay (as null) so the schema is stable."""
    run_graph(capture=capture)
    parsed = lines.parsed()
    content = [(line[key]) for line in parsed for key in ("prompt", "completion", "input", "output", "query")
               if key in line]
    assert len(content) == 2 * 2 + 2 * FANOUT + 1
    if capture:
        assert all(value for value in content)
    else:
        assert all(value is None for value in content)


def test_failed_runs_log_at_error_level(lines: Lines) -> None:
    """A failing call is logged at ERROR with its error type and message, ready for "errors containing timeout"."""
    with pytest.raises(RuntimeError):
        run_graph(capture=False, plan_model=ScriptedChatModel(model_name="o3-mini", fail_with="upstream timeout"))
    errors = [(r.levelno, json.loads(r.getMessage())) for r in lines.records if r.levelno == logging.ERROR]
    llm = next(line for _, line in errors if line["kind"] == "llm_call")
    assert llm["status"] == "error" and llm["level"] == "error"
    assert llm["error_type"] == "RuntimeError" and "timeout" in llm["error_message"]


def test_root_logger_untouched_and_stream_option() -> None:
    """The sink never configures the root logger; a stream gets bare JSON lines and is detached at shutdown."""
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    stream = io.StringIO()
    sink = LogSink(stream=stream)
    handler = VitalCallbackHandler(Settings(flush_interval_s=0.05), sinks=[sink])
    ScriptedChatModel().invoke("hi", config={"callbacks": [handler]})
    handler.shutdown()
    assert (list(root.handlers), root.level) == before
    (line,) = stream.getvalue().splitlines()
    assert json.loads(line)["kind"] == LLMCall.kind
    assert logging.getLogger(LOGGER_NAME).propagate is True
    assert sink._handler is None and not any(isinstance(h, logging.StreamHandler) for h in sink.logger.handlers)


def test_settings_select_stream() -> None:
    """``VITAL_LOGS_STREAM=stdout`` builds a sink writing to standard output; unknown values are rejected."""
    sink = LogSink.from_settings(Settings(logs_stream="stdout"))
    try:
        assert isinstance(sink, LogSink) and sink._handler is not None
    finally:
        sink.shutdown()
    with pytest.raises(ValueError):
        Settings(logs_stream="syslog")


def test_loki_configs_name_real_fields() -> None:
    """Every field the Promtail and Alloy pipelines extract is a field of the log lines."""
    record = to_record(LLMCall(run_id="r", parent_run_id=None, trace_id="r"))
    folder = Path(__file__).parents[2] / "integrations" / "loki"
    promtail = yaml.safe_load((folder / "promtail.yaml").read_text())
    stages = promtail["scrape_configs"][0]["pipeline_stages"]
    extracted = set(stages[0]["json"]["expressions"].values())
    alloy = (folder / "config.alloy").read_text()
    json_block = alloy.split("stage.json")[1].split("stage.labels")[0]
    assert extracted == set(re.findall(r"(\w+)\s*=\s*\"\"", json_block))
    assert extracted <= set(record)


def test_a_line_says_where_the_price_came_from() -> None:
    """Source, detail (tier, fees), service tier and the raw usage the cost was computed from."""
    from vital_callbacks.core.events import Cost, TokenUsage

    call = LLMCall(run_id="r", parent_run_id=None, trace_id="r", model="gpt-5-2025-08-07", service_tier="flex",
                   usage=TokenUsage(input=10, output=2, total=12, web_searches=1),
                   cost=Cost(Decimal("0.01"), Decimal("0.001"), Decimal("0.021"), "genai-prices 0.2.3",
                             "service_tier=flex; web_searches=1"),
                   raw_usage='{"shape":"langchain","usage":{"input_tokens":10}}')
    record = to_record(call)
    assert record["price_source"] == "genai-prices 0.2.3"
    assert record["price_detail"] == "service_tier=flex; web_searches=1"
    assert record["service_tier"] == "flex" and record["web_searches"] == 1
    assert json.loads(record["raw_usage"])["usage"] == {"input_tokens": 10}
