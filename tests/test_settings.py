"""Settings from VITAL_* env vars, sink selection, and the sink entry points."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest

from vital_callbacks import Settings, Sink
from vital_callbacks.runtime.registry import UnknownSinkError, sink_class


def test_env_vars_are_read_when_settings_are_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """VITAL_* variables set after import still apply; lists are comma-separated."""
    monkeypatch.setenv("VITAL_SINKS", "sql, memory")
    monkeypatch.setenv("VITAL_CAPTURE_CONTENT", "true")
    monkeypatch.setenv("VITAL_BATCH_SIZE", "64")
    s = Settings()
    assert s.resolved_sinks() == ["sql", "memory"] and s.capture_content and s.batch_size == 64


def test_default_sinks_follow_what_is_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset VITAL_SINKS: sql, plus prometheus and langfuse when their settings are present."""
    for var in ("VITAL_SINKS", "LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY", "PROMETHEUS_MULTIPROC_DIR",
                "VITAL_PROMETHEUS_PORT", "VITAL_PUSHGATEWAY_URL", "VITAL_LANGFUSE_ENABLED"):
        monkeypatch.delenv(var, raising=False)
    assert Settings().resolved_sinks() == ["sql"]
    monkeypatch.setenv("VITAL_PROMETHEUS_PORT", "9464")
    monkeypatch.setenv("LANGFUSE_PUBLIC_KEY", "pk")
    monkeypatch.setenv("LANGFUSE_SECRET_KEY", "sk")
    assert Settings().resolved_sinks() == ["sql", "prometheus", "langfuse"]
    monkeypatch.setenv("VITAL_LANGFUSE_ENABLED", "false")
    assert Settings().resolved_sinks() == ["sql", "prometheus"]


def test_sqlite_auto_migrates_by_default() -> None:
    """The schema is created on first use for SQLite, not for PostgreSQL unless asked."""
    assert Settings(database_url="sqlite:///x.db").auto_migrate()
    assert not Settings(database_url="postgresql://u@h/db").auto_migrate()
    assert Settings(database_url="postgresql://u@h/db", database_auto_migrate=True).auto_migrate()


def test_every_entry_point_loads_a_sink() -> None:
    """Each name in the vital_callbacks.sinks group imports and is a Sink subclass."""
    names = {ep.name for ep in entry_points(group="vital_callbacks.sinks")}
    assert {"sql", "memory"} <= names
    for name in names:
        cls = sink_class(name)
        assert issubclass(cls, Sink), name


def test_unknown_sink_name_is_a_clear_error() -> None:
    """A typo in VITAL_SINKS names the known sinks."""
    with pytest.raises(UnknownSinkError, match=r"known: .*sql"):
        sink_class("sqll")


def test_readme_documents_every_setting() -> None:
    """Each VITAL_* variable appears in the README's configuration table."""
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    missing = [f"VITAL_{name.upper()}" for name in Settings.model_fields if f"VITAL_{name.upper()}" not in readme]
    assert not missing, f"README lacks {missing}"
