"""Langfuse: runs as traces of spans and generations, sent by the langfuse SDK."""

from vital_callbacks.sinks.langfuse.sink import LangfuseSink, langfuse_trace_id, sampled, trace_id_for

__all__ = ["LangfuseSink", "langfuse_trace_id", "sampled", "trace_id_for"]
