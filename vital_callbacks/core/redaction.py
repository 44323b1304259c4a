"""Redaction of captured text before it leaves the process (e.g. prompts sent to Langfuse).

Captured content is opt-in (``VITAL_CAPTURE_CONTENT``), and even then it passes through here first:
built-in patterns for e-mail addresses, API keys / bearer tokens and card numbers (Luhn-checked, so
order numbers and timestamps survive), then an optional user callable for domain-specific secrets.
A redactor fails closed: if the user callable raises, the whole text is withheld, never sent raw.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable

logger = logging.getLogger("vital_callbacks")

Redact = Callable[[str], str]

EMAIL = "[REDACTED_EMAIL]"
API_KEY = "[REDACTED_API_KEY]"
CARD = "[REDACTED_CARD]"
WITHHELD = "[REDACTION_FAILED]"

# A match may only start where a run of local-part characters starts: without the lookbehind, a long
# run with no "@" would be scanned again from each of its positions (quadratic in the text's length).
_EMAIL_RE = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_KEY_RE = re.compile(
    r"\bsk-ant-[A-Za-z0-9_-]{8,}"          # Anthropic
    r"|\bsk-[A-Za-z0-9_-]{16,}"            # OpenAI (sk-..., sk-proj-...)
    r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"      # AWS access key ids
    r"|(?i:\bbearer)\s+[A-Za-z0-9._~+/-]{8,}=*"  # Authorization: Bearer <token>
)
# 13-19 digits, optionally grouped by single spaces or dashes; Luhn decides.
_CARD_RE = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum every payment card number satisfies."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"[ -]", "", match.group(0))
    return CARD if 13 <= len(digits) <= 19 and luhn_valid(digits) else match.group(0)


def redact_builtin(text: str) -> str:
    """Apply the built-in patterns only."""
    text = _KEY_RE.sub(API_KEY, text)
    if "@" in text:
        text = _EMAIL_RE.sub(EMAIL, text)
    return _CARD_RE.sub(_card, text)


class Redactor:
    """Built-in patterns, then the user's callable; call it with a string, get a safe string."""

    def __init__(self, extra: Redact | None = None, *, builtin: bool = True) -> None:
        self.extra = extra
        self.builtin = builtin
        self._failed_logged = False

    def __call__(self, text: str) -> str:
        try:
            if self.builtin:
                text = redact_builtin(text)
            if self.extra is not None:
                text = self.extra(text)
                if not isinstance(text, str):
                    raise TypeError(f"redaction callable returned {type(text).__name__}, not str")
            return text
        except Exception:
            if not self._failed_logged:
                self._failed_logged = True
                logger.exception("vital-callbacks: redaction failed; the text is withheld")
            return WITHHELD

    def optional(self, text: str | None) -> str | None:
        return None if text is None else self(text)


def load_hook(path: str | None) -> Redact | None:
    """Import a ``"package.module:function"`` redaction hook named in settings."""
    if not path:
        return None
    module_name, _, attr = path.partition(":")
    if not attr:
        raise ValueError(f"redaction hook {path!r} must look like 'package.module:function'")
    hook = getattr(importlib.import_module(module_name), attr)
    if not callable(hook):
        raise TypeError(f"redaction hook {path!r} is not callable")
    return hook  # type: ignore[no-any-return]
