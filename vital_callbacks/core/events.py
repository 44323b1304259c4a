"""The immutable events that the handler emits and sinks consume.

Events are the only contract between the callback hot path and the sinks: the handler builds one per
finished run (so ``run_id`` doubles as the event's unique, idempotent id) and never touches it again.
Timestamps are epoch floats because ``time.time()`` is several times cheaper than building a
``datetime`` on the caller's thread; sinks use the ``started_at`` / ``ended_at`` properties.
Costs and graph totals are ``None`` when the handler emits an event and are filled in on the
worker (pricing is too slow for the caller's thread), before any sink sees the event.

Events are frozen ``msgspec`` structs: built in C (a tenth of a frozen dataclass's cost), encoded by
the journal without a conversion, and left alone by the garbage collector (``gc=False``: an event
refers to strings, numbers and other such structs, never back to anything that refers to it, so it
can be in no reference cycle). Thousands of events waiting in a sink's queue then cost the
application's collections nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, ClassVar, Literal

import msgspec

Status = Literal["success", "error", "interrupted", "cancelled"]
"""``cancelled``: the caller stopped waiting (a client disconnected, a task was cancelled): not a failure
of the run, so not counted as an error."""
TokenSource = Literal["provider", "estimate", "none"]


class TokenUsage(msgspec.Struct, frozen=True, gc=False):
    """What the provider billed, in LangChain's convention: ``input`` already includes cache reads and
    writes and audio, ``output`` already includes reasoning and audio. The details are breakdowns,
    never addends (genai-prices' units are the same hierarchy)."""

    input: int = 0
    output: int = 0
    total: int = 0
    cache_read: int = 0
    cache_write: int = 0
    reasoning: int = 0
    cache_write_1h: int = 0
    """The part of ``cache_write`` with a one-hour TTL (Anthropic bills it higher)."""
    input_audio: int = 0
    """The audio part of ``input`` (cache reads of audio included); audio is billed at its own rate."""
    cache_audio_read: int = 0
    """The audio part of ``cache_read``."""
    output_audio: int = 0
    """The audio part of ``output``."""
    web_searches: int = 0
    """Server-side web searches the provider ran and bills per request (not tokens)."""

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            self.input + other.input,
            self.output + other.output,
            self.total + other.total,
            self.cache_read + other.cache_read,
            self.cache_write + other.cache_write,
            self.reasoning + other.reasoning,
            self.cache_write_1h + other.cache_write_1h,
            self.input_audio + other.input_audio,
            self.cache_audio_read + other.cache_audio_read,
            self.output_audio + other.output_audio,
            self.web_searches + other.web_searches,
        )

    def columns(self) -> dict[str, int]:
        """The counts under the stable field names rows, log lines and exports use."""
        return {
            "input_tokens": self.input,
            "output_tokens": self.output,
            "total_tokens": self.total,
            "cache_read_tokens": self.cache_read,
            "cache_write_tokens": self.cache_write,
            "cache_write_1h_tokens": self.cache_write_1h,
            "reasoning_tokens": self.reasoning,
            "input_audio_tokens": self.input_audio,
            "cache_audio_read_tokens": self.cache_audio_read,
            "output_audio_tokens": self.output_audio,
            "web_searches": self.web_searches,
        }

    @property
    def is_empty(self) -> bool:
        return self.input == 0 and self.output == 0 and self.total == 0

    @property
    def is_plain(self) -> bool:
        """Only the token kinds every price has (input, output, cache reads and five-minute writes)."""
        return not (self.cache_write_1h or self.input_audio or self.cache_audio_read or self.output_audio
                    or self.web_searches)


NO_USAGE = TokenUsage()
"""Frozen, so one instance serves every event without usage."""


class Cost(msgspec.Struct, frozen=True, gc=False):
    """USD cost of one call, and where the price came from. ``total`` is ``input + output`` plus any
    per-request fees (web searches), which belong to neither."""

    input: Decimal
    output: Decimal
    total: Decimal
    source: str = "genai-prices"
    """``genai-prices <version>`` (the catalog) or ``override:<file>`` (a ``pricing/`` YAML file)."""
    detail: str | None = None
    """What else decided the amount, when anything did: a service tier's prices, server-tool fees, the
    billed iterations of a call priced at more than one model's rate."""


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


class Event(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Fields every event carries: identity, place in the run tree, attribution, timing, outcome."""

    kind: ClassVar[str] = "event"

    run_id: str
    parent_run_id: str | None
    """The nearest *recorded* ancestor (graph run or node run), not LangChain's raw parent, which is
    often an internal chain (a routing function, a subgraph's inner root) that has no row."""
    trace_id: str
    """``run_id`` of the root run of the invoke/stream this event belongs to."""
    tenant_id: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    graph: str | None = None
    node: str | None = None
    """The LangGraph node this run executed in (for a node run: its own name)."""
    tags: tuple[str, ...] = ()
    metadata: str | None = None
    """The application's own keys of the run's ``config["metadata"]`` (``feature``, ``experiment``,
    ``release`` ...) as JSON: redacted, bounded, selected by ``VITAL_METADATA_KEYS``."""
    thread_id: str | None = None
    """LangGraph's ``thread_id`` (the checkpointer's conversation), also when a session id is given."""
    subgraph: str | None = None
    """The subgraph this run executed in (its compiled name), when not the trace's own graph: a node
    is identified by ``(graph, subgraph, node)``."""
    traceparent: str | None = None
    """The application's OpenTelemetry span the trace ran in (W3C ``traceparent``), when an OTel sink
    is configured and there was one: the trace's spans are its children."""
    start_time: float = 0.0
    end_time: float = 0.0
    duration_s: float = 0.0
    status: Status = "success"
    error_type: str | None = None
    error_message: str | None = None

    @property
    def started_at(self) -> datetime:
        return _utc(self.start_time)

    @property
    def ended_at(self) -> datetime:
        return _utc(self.end_time)


class GraphRun(Event, frozen=True, kw_only=True, gc=False):
    """The root run of one invoke/stream; totals cover every LLM call under it."""

    kind: ClassVar[str] = "graph_run"

    name: str = ""
    usage: TokenUsage = NO_USAGE
    cost_usd: Decimal | None = None
    """Sum of the priced calls; ``None`` when no call under it could be priced."""
    llm_calls: int = 0
    unpriced_calls: int = 0
    interrupts: int = 0
    resumed: bool = False


class NodeRun(Event, frozen=True, kw_only=True, gc=False):
    """One execution of a LangGraph node (each ``Send`` branch and each subgraph node separately)."""

    kind: ClassVar[str] = "node_run"

    step: int | None = None
    checkpoint_ns: str | None = None


class LLMCall(Event, frozen=True, kw_only=True, gc=False):
    """One chat-model or completion-model call."""

    kind: ClassVar[str] = "llm_call"

    provider: str | None = None
    model: str | None = None
    """The served model when the response names it (``response_metadata``), else the requested one."""
    requested_model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    usage: TokenUsage = NO_USAGE
    token_source: TokenSource = "provider"
    cost: Cost | None = None
    service_tier: str | None = None
    """The tier the provider says served the call (``flex``, ``priority``...): it selects the price."""
    raw_usage: str | None = None
    """The usage object the provider returned, as JSON (bounded), with where it was read from: what
    the cost was computed from, so it can be audited and recomputed (``vital-callbacks reprice``)."""
    tool: str | None = None
    """The tool this call was made in (an agent-as-tool, a RAG or summarize tool), when it was."""
    time_to_first_token_s: float | None = None
    streamed: bool = False
    finish_reason: str | None = None
    prompt: str | None = None
    """Prompt text: carried to the worker for token estimates, kept only with content capture on."""
    completion: str | None = None
    cache_hit: bool = False
    """Served from LangChain's response cache: the provider was not called, so ``cost`` is 0."""
    saved_cost: Decimal | None = None
    """For a cache hit: what the call would have cost at list price."""
    raw_input: object = None
    """The prompts/messages as LangChain passed them; read on the worker, then dropped."""
    raw_output: object = None
    """A snapshot of the ``LLMResult``; usage, served model and finish reason are read from it on the
    worker."""


class ToolCall(Event, frozen=True, kw_only=True, gc=False):
    kind: ClassVar[str] = "tool_call"

    name: str = ""
    input: str | None = None
    output: str | None = None
    usage: TokenUsage = NO_USAGE
    """Of the LLM calls made inside the tool (nested tools' included), as a graph run's totals."""
    cost_usd: Decimal | None = None
    """Sum of the priced calls inside the tool; ``None`` when none could be priced."""
    llm_calls: int = 0
    unpriced_calls: int = 0
    raw_output: object = None


class RetrieverCall(Event, frozen=True, kw_only=True, gc=False):
    kind: ClassVar[str] = "retriever_call"

    name: str = ""
    documents: int = 0
    query: str | None = None


class Score(Event, frozen=True, kw_only=True, gc=False):
    """A quality score (evaluator, user feedback) for a run or a whole trace.

    ``run_id`` is the score's own id; ``parent_run_id`` the scored run and ``trace_id`` its trace when
    known. A score for an id nobody has seen yet keeps ``matched=False`` and ``trace_id = target_id``
    (the SQL sink looks the id up again when it stores it), so it is flagged, never lost.
    """

    kind: ClassVar[str] = "score"

    target_id: str = ""
    name: str = ""
    value: float | None = None
    """Numeric value; booleans are 1.0 / 0.0; categorical scores have none."""
    string_value: str | None = None
    data_type: Literal["numeric", "boolean", "categorical"] = "numeric"
    comment: str | None = None
    matched: bool = False


AnyEvent = GraphRun | NodeRun | LLMCall | ToolCall | RetrieverCall | Score
EVENT_CLASSES: dict[str, type[Event]] = {cls.kind: cls for cls in (GraphRun, NodeRun, LLMCall, ToolCall,
                                                                    RetrieverCall, Score)}
"""Every event class by its ``kind``."""


class Draft(dict[str, Any]):
    """An event's field values before it is built, and its class in ``cls``: what the dispatcher's
    assembler makes of an ended run, which the processors then complete in place (usage, cost, graph
    totals) before the event's one construction. One dict, so completing it copies nothing; only
    the dispatcher thread reads or changes a draft.
    """

    __slots__ = ("cls",)
    cls: type[Event]
    """Set right after construction. No ``__init__`` of its own: a draft is built from keywords
    (``Draft(run_id=..., ...)``), which ``dict`` fills in C without an intermediate dict to copy."""

    @classmethod
    def of(cls, event_cls: type[Event], fields: Mapping[str, Any]) -> Draft:
        draft = cls(fields)
        draft.cls = event_cls
        return draft

    @property
    def kind(self) -> str:
        return self.cls.kind

    def build(self) -> Event:
        """The event as captured, without the worker's fields (the pipeline's fallback when a
        processor failed); values only the worker reads are left out, the raw LangChain input and
        output too: they are no sink's to see (nor to repr, journal or hash)."""
        return self.cls(**{k: v for k, v in self.items() if k not in _NOT_BUILT})


RAW_LLM_OUTPUT = "raw_llm_output"
"""The draft key of ``LLMResult.llm_output`` (read on the worker, not a field of :class:`LLMCall`)."""
BILLED_PARTS = "billed_parts"
"""The draft key of the usage billed per model (read, then priced, on the worker; not a field)."""
READING = "reading"
"""The draft key of a reading already done on the caller's thread (a stop budget's price): the worker
uses it instead of reading the response again."""
PRICED = "priced_on_caller"
"""The draft key that says the caller's thread priced the call (its cost may be ``None``: unpriced,
counted there once)."""
USER_METADATA = "user_metadata"
"""The draft key of the run's own metadata keys (a dict): made JSON, redacted and bounded on the worker."""
ENCLOSING_TOOLS = "enclosing_tools"
"""The draft key of the run ids of the tools an LLM call was made in (their totals include it)."""
LATE_CALLS = "late_calls"
"""The draft key of a graph run that ended (cancelled, failed) with this many of its LLM calls still
running: the worker holds the run until they end, so its totals include them."""
WORKER_KEYS = frozenset({RAW_LLM_OUTPUT, BILLED_PARTS, READING, PRICED, ENCLOSING_TOOLS, USER_METADATA,
                         LATE_CALLS})
_NOT_BUILT = WORKER_KEYS | {"raw_input", "raw_output"}
