"""Step 2: a tiktoken estimate where the provider reported no usage, flagged ``token_source="estimate"``.

A failed call with no reported usage stays unpriced rather than estimated: whether the provider
billed anything for it is unknowable here, and a guess would be a made-up cost.
"""

from __future__ import annotations

import logging
from typing import Any

from vital_callbacks.core.events import Event, LLMCall, TokenUsage
from vital_callbacks.providers.tokens import EncodingUnavailable, count_tokens

logger = logging.getLogger("vital_callbacks")


class Estimate:
    kinds = (LLMCall,)

    def __init__(self) -> None:
        self.estimated_calls = 0
        self.failed_estimates = 0

    def __call__(self, cls: type[Event], f: dict[str, Any]) -> None:
        prompt, completion = f.get("prompt"), f.get("completion")
        if f.get("token_source") != "none" or f.get("status", "success") != "success" or not (prompt or completion):
            return
        model = f.get("model")
        try:
            inp = count_tokens(prompt or "", model)
            out = count_tokens(completion or "", model)
        except EncodingUnavailable as exc:
            self.failed_estimates += 1
            if self.failed_estimates == 1:  # one line, no traceback: it will fail the same way every time
                logger.warning("vital-callbacks: calls without reported usage are not estimated (%s); install "
                               "the [offline] extra or set VITAL_TIKTOKEN_ENCODINGS_DIR", exc)
            return
        except Exception:
            self.failed_estimates += 1
            logger.exception("vital-callbacks: tiktoken estimate failed for model %r", model)
            return
        f["usage"], f["token_source"] = TokenUsage(input=inp, output=out, total=inp + out), "estimate"
        self.estimated_calls += 1
