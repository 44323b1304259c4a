"""With capture on, every sink sees the same redacted content: no e-mail, key or card leaves the process."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import text

from tests.graphs import build_graph
from tests.langfuse_receiver import LangfuseReceiver
from vital_callbacks import Settings, VitalCallbackHandler
from vital_callbacks.sinks.langfuse import LangfuseSink
from vital_callbacks.sinks.logs import LOGGER_NAME, LogSink
from vital_callbacks.sinks.otel import OTelSink
from vital_callbacks.sinks.sql import SQLSink
from vital_callbacks.sinks.sql.postgres import PostgresSink
from vital_callbacks.testing.servers import closed_port

EMAIL, KEY, CARD = "alice@example.com", "sk-proj-abcdefghijklmnopqrstuvwx", "4111 1111 1111 1111"
PROMPT = f"mail {EMAIL} with key {KEY} and card {CARD}"
SECRETS = (EMAIL, KEY, "4111 1111")



def clean(blob: str) -> bool:
    return not any(secret in blob for secret in SECRETS)


def test_no_sink_receives_a_secret_from_a_captured_prompt(tmp_path: Path) -> None:
    """One run with capture on, to SQL, a spilling PostgreSQL sink, logs, OTel and Langfuse: the prompt
    arrives redacted in the SQL row, the spill file, the log line, the span and the Langfuse payload."""
    sql = SQLSink(f"sqlite:///{tmp_path / 'v.db'}")
    spill_dir = tmp_path / "spill"
    postgres = PostgresSink(f"postgresql://u@127.0.0.1:{closed_port()}/db", spill_dir=spill_dir, connect_timeout_s=1)
    stream = io.StringIO()
    log_handler = logging.StreamHandler(stream)
    logging.getLogger(LOGGER_NAME).addHandler(log_handler)
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    otel = OTelSink(tracer_provider, MeterProvider(metric_readers=[InMemoryMetricReader()]))
    with LangfuseReceiver() as receiver:
        langfuse = LangfuseSink(public_key="pk-lf-redact", secret_key="sk-lf-test", base_url=receiver.url,
                                capture_content=True)
        handler = VitalCallbackHandler(Settings(capture_content=True, flush_interval_s=0.05, max_retries=0),
                                       sinks=[sql, postgres, LogSink(), otel, langfuse])
        try:
            build_graph().invoke({"question": PROMPT}, config={"callbacks": [handler]})
            handler.flush(10)
        finally:
            handler.shutdown(10)
            logging.getLogger(LOGGER_NAME).removeHandler(log_handler)
        sent = json.dumps([s.attributes for s in receiver.received()], default=str)

    with sql.engine.connect() as conn:
        prompt = conn.execute(text("SELECT prompt FROM llm_calls WHERE node = 'plan'")).scalar_one()
    assert "[REDACTED_EMAIL]" in prompt and "[REDACTED_API_KEY]" in prompt and "[REDACTED_CARD]" in prompt
    assert clean(prompt)
    spilled = "".join(p.read_text() for p in spill_dir.glob("*.jsonl"))
    assert "[REDACTED_EMAIL]" in spilled and clean(spilled)
    logged = stream.getvalue()
    assert "[REDACTED_EMAIL]" in logged and clean(logged)
    span_text = json.dumps([dict(s.attributes or {}) for s in spans.get_finished_spans()], default=str)
    assert clean(span_text)
    assert "[REDACTED_EMAIL]" in sent and clean(sent)
