"""Redaction of captured text: built-in patterns, Luhn-checked cards, the user hook, failing closed."""

from __future__ import annotations

import pytest

from vital_callbacks.core.redaction import API_KEY, CARD, EMAIL, WITHHELD, Redactor, load_hook, luhn_valid


@pytest.mark.parametrize("secret", [
    "sk-proj-AbCdEfGhIjKlMnOpQrStUv123456",
    "sk-ant-api03-AbCdEfGhIjKlMnOp_qrstuv-XYZ",
    "sk-0123456789abcdefABCDEF",
    "AKIAIOSFODNN7EXAMPLE",
    "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc",
])
def test_api_keys_and_bearer_tokens_are_masked(secret: str) -> None:
    """OpenAI, Anthropic and AWS keys and bearer tokens never survive redaction."""
    out = Redactor()(f"use {secret} please")
    assert out == f"use {API_KEY} please"


def test_email_addresses_are_masked() -> None:
    """E-mail addresses are replaced, the surrounding text is kept."""
    assert Redactor()("write to jane.doe+x@mail.example.co.uk today") == f"write to {EMAIL} today"


@pytest.mark.parametrize("card", ["4111 1111 1111 1111", "4111-1111-1111-1111", "5500005555555559", "378282246310005"])
def test_card_numbers_passing_luhn_are_masked(card: str) -> None:
    """Card numbers, grouped or not, are masked when their Luhn checksum holds."""
    assert Redactor()(f"card {card}.") == f"card {CARD}."


@pytest.mark.parametrize("number", ["4111 1111 1111 1112", "1234567890123", "2024-01-15", "order 20240115093000"])
def test_numbers_failing_luhn_are_kept(number: str) -> None:
    """Order ids, timestamps and other digit runs that fail Luhn are not mistaken for cards."""
    assert Redactor()(number) == number


def test_luhn() -> None:
    """The Luhn check accepts a valid test card and rejects a one-digit change."""
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")


def test_user_hook_runs_after_the_builtin_patterns() -> None:
    """A user callable sees already-redacted text and can mask domain secrets of its own."""
    seen: list[str] = []

    def hook(text: str) -> str:
        seen.append(text)
        return text.replace("Project Falcon", "[REDACTED_PROJECT]")

    out = Redactor(hook)("Project Falcon lead: bob@example.com")
    assert out == f"[REDACTED_PROJECT] lead: {EMAIL}"
    assert seen == [f"Project Falcon lead: {EMAIL}"]


def test_a_failing_hook_withholds_the_text() -> None:
    """If the user callable raises, the text is withheld rather than sent unredacted."""

    def broken(text: str) -> str:
        raise RuntimeError("nope")

    assert Redactor(broken)("secret stuff") == WITHHELD


def test_hook_loads_from_an_import_path() -> None:
    """Settings name a hook as 'module:function'; a malformed path is an error, not a silent no-op."""
    hook = load_hook("vital_callbacks.core.redaction:redact_builtin")
    assert hook is not None and hook("x@y.io") == EMAIL
    assert load_hook(None) is None
    with pytest.raises(ValueError):
        load_hook("vital_callbacks.core.redaction")
