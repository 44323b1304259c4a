"""Fixtures of the provider-quirk tests: dummy credentials, no proxies, a recorder per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.providers._replay import Recorder
from vital_callbacks import InMemorySink, Settings, VitalCallbackHandler

_DUMMY_ENV = {
    "OPENAI_API_KEY": "sk-test", "ANTHROPIC_API_KEY": "sk-ant-test", "GOOGLE_API_KEY": "test-key",
    "MISTRAL_API_KEY": "test-key", "GROQ_API_KEY": "gsk-test", "AZURE_OPENAI_API_KEY": "azure-test",
    "AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": "secret-test", "AWS_SESSION_TOKEN": "tok",
    "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
}
_PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@pytest.fixture(autouse=True)
def _offline_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy keys for every client (the cassettes answer); no proxy between a client and vcrpy; no
    price overrides from the caller's environment."""
    for name, value in _DUMMY_ENV.items():
        monkeypatch.setenv(name, value)
    for name in (*_PROXIES, "VITAL_PRICING_DIR", "AWS_PROFILE", "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    sink = InMemorySink()
    handler = VitalCallbackHandler(Settings(flush_interval_s=0.05), sinks=[sink])
    yield Recorder(sink, handler)
    handler.shutdown()
