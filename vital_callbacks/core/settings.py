"""Configuration from ``VITAL_*`` environment variables (pydantic-settings).

Read when a handler is built, never at import, so tests and apps can set the environment first.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

CommaList = Annotated[list[str], NoDecode]


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Every knob of the library; each field is also the env var ``VITAL_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="VITAL_", extra="ignore", validate_default=True)

    sinks: CommaList | None = Field(
        default=None,
        description="Comma-separated sink names (entry points of group vital_callbacks.sinks). "
        "Unset: sql, plus prometheus / langfuse when their settings are present.",
    )
    database_url: str = Field(
        default="sqlite:///vital_callbacks.db",
        description="SQLAlchemy URL of the SQL store; postgresql:// URLs use asyncpg.",
    )
    sink_processes: CommaList | None = Field(
        default=None,
        description="Comma-separated sinks to run each in a child process of its own (sql, langfuse), so their "
        "Python work stops sharing the GIL with the application; sinks that report into this process "
        "(prometheus, otel, logs) always run here.",
    )
    database_auto_migrate: bool | None = Field(
        default=None, description="Create or upgrade the schema on first use (default: on for SQLite)."
    )
    capture_content: bool = Field(default=False, description="Store prompt / response / tool text.")
    metadata_keys: CommaList | None = Field(
        default=None,
        description="The run metadata keys stored with each row (as JSON, redacted, at most 2 KB): unset, every "
        "key the application set (not LangChain's, LangGraph's or the attribution keys); a comma-separated "
        "allow-list; '-' for none.",
    )
    tenant_id: str | None = Field(default=None, description="Default tenant when a run names none.")
    user_id: str | None = Field(default=None, description="Default user when a run names none.")
    session_id: str | None = Field(default=None, description="Default session when a run names none.")
    pricing_dir: Path | None = Field(
        default=None, description="Extra folder of price-override YAML files, above the shipped ones."
    )
    tiktoken_encodings_dir: Path | None = Field(
        default=None,
        description="Folder with o200k_base.tiktoken / cl100k_base.tiktoken (optionally .gz) for "
        "offline token estimates; the `offline` extra ships them too.",
    )
    queue_size: int = Field(default=100_000, ge=1, description=(
        "Events buffered per stage before counting drops (the inbox holds callbacks: a start and an end per run)."))
    batch_size: int = Field(
        default=512, ge=1,
        description="Events per sink export; a sink that has fallen behind and declares `coalesce` "
        "(PostgreSQL: 8) takes up to that many batches in one export.",
    )
    flush_interval_s: float = Field(
        default=0.25, gt=0,
        description="Longest wait before a partial batch is sent (short, so queued events die young for the GC).",
    )
    max_retries: int = Field(default=5, ge=0, description="Retries of a failed export before counting it lost.")
    retry_backoff_s: float = Field(default=0.2, gt=0, description="First retry delay; doubles, capped at 10 s.")
    shutdown_timeout_s: float = Field(default=5.0, ge=0, description="Longest wait at interpreter exit.")
    spill_dir: Path | None = Field(
        default=None, description="Folder where the SQL sink spills events it cannot deliver (replayed later)."
    )
    journal: bool = Field(
        default=True,
        description="Write events for the SQL store to a local journal before export, so a crash "
        "(kill -9, OOM) loses only what the dispatcher had not processed; the next start replays it.",
    )
    journal_dir: Path | None = Field(
        default=None, description="Folder of the journal (default: <user cache>/vital-callbacks/journal)."
    )
    max_open_runs: int = Field(
        default=100_000, ge=1,
        description="Runs a handler keeps open at most; past it the oldest are forgotten (and counted).",
    )
    open_run_timeout_s: float = Field(
        default=3600.0, gt=0,
        description="A run open this long without its end callback (a cancelled ainvoke sends none) is "
        "forgotten (and counted); its children are still recorded.",
    )
    # Budgets
    budgets_file: Path | None = Field(default=None, description="YAML file of spend limits (validated at start-up).")
    budget_refresh_s: float = Field(default=10.0, ge=0, description="How often budget spend is re-summed from the "
                                    "SQL store, so replicas see each other's spend (0: never).")
    budget_timeout_s: float = Field(
        default=2.0, gt=0, description="Longest wait of a call under a stop budget for its reservation (the "
        "store's connect, lock and statement timeouts); past it, the budget's on_store_error decides.",
    )
    budget_redis_url: str | None = Field(
        default=None, description="Keep stop budgets' counters in Redis (redis://host:6379/0) instead of the SQL "
        "store: for many replicas. Needs the `redis` extra.",
    )
    budget_default_max_tokens: int = Field(
        default=4096, ge=1, description="Output tokens a stop budget reserves for a call that sets no max_tokens.",
    )
    # Prometheus
    prometheus_prefix: str = Field(default="vital_", description="Metric name prefix.")
    prometheus_port: int | None = Field(default=None, description="Start an exposition server on this port.")
    prometheus_addr: str = Field(default="0.0.0.0", description="Address of the exposition server.")
    prometheus_max_tenants: int = Field(default=100, ge=1, description="Distinct tenant labels before 'other'.")
    prometheus_user_label: bool = Field(default=False, description="Add user_id as a label (high cardinality).")
    pushgateway_url: str | None = Field(default=None, description="Push metrics here at flush (batch jobs).")
    # Langfuse
    langfuse_enabled: bool | None = Field(
        default=None, description="Force the Langfuse sink on/off (default: on when LANGFUSE_* keys are set)."
    )
    langfuse_sample_rate: float = Field(default=1.0, ge=0.0, le=1.0, description="Share of traces sent.")
    # Redaction of captured content
    redaction_hook: str | None = Field(
        default=None,
        description="'package.module:function' (str -> str) applied to captured text after the built-in "
        "e-mail / API-key / card-number patterns, before it is sent to a tracing backend.",
    )
    # OpenTelemetry and structured-log sinks
    otel_use_global: bool = Field(
        default=True,
        description="Use the application's global tracer / meter provider when one is set; off: always "
        "export over OTLP/HTTP as configured by OTEL_EXPORTER_OTLP_*.",
    )
    otel_metrics: bool | None = Field(
        default=None,
        description="GenAI metrics over OpenTelemetry. Unset: to the application's global meter provider "
        "when it set one, else only when OTEL_METRICS_EXPORTER=otlp or an OTLP endpoint is set; true: to "
        "the application's meter provider, else our own OTLP/HTTP exporter; false: never.",
    )
    logs_stream: str | None = Field(
        default=None,
        description="'stdout' or 'stderr': also write the JSON lines there (a handler on logger "
        "vital_callbacks.events). Unset: the application's logging configuration decides.",
        pattern="^(stdout|stderr)$",
    )
    # PostgreSQL store (sinks/sql/postgres.py); the URL's password is never logged
    database_pool_size: int = Field(default=2, ge=1, description="Connections the PostgreSQL writer keeps.")
    database_statement_timeout_s: float = Field(
        default=30.0, gt=0, description="PostgreSQL statement_timeout of the writer's sessions."
    )
    database_connect_timeout_s: float = Field(default=10.0, gt=0, description="Longest wait for a connection.")

    # Metrics / analytics HTTP API (vital_callbacks/server, `vital-callbacks serve`)
    api_tokens: SecretStr | None = Field(
        default=None,
        description="Bearer tokens of the HTTP API as 'tenant:token' pairs, comma-separated; tenant '*' "
        "makes an admin token that sees every tenant, e.g. 'acme:s3cret,*:adm1n'.",
    )

    _split = field_validator("sinks", "metadata_keys", "sink_processes", mode="before")(_split_commas)

    def resolved_sinks(self) -> list[str]:
        """The sink names to load: explicit ``VITAL_SINKS``, else defaults by what is configured."""
        if self.sinks is not None:
            return list(self.sinks)
        names = ["sql"]
        if self.prometheus_port is not None or self.pushgateway_url or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            names.append("prometheus")
        langfuse_keys = bool(os.environ.get("LANGFUSE_PUBLIC_KEY") and os.environ.get("LANGFUSE_SECRET_KEY"))
        if self.langfuse_enabled or (self.langfuse_enabled is None and langfuse_keys):
            names.append("langfuse")
        return names

    def auto_migrate(self) -> bool:
        if self.database_auto_migrate is not None:
            return self.database_auto_migrate
        return self.database_url.startswith("sqlite")
