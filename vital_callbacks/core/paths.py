"""Where the library keeps local files (spill files, the journal): the per-user cache folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def cache_root() -> Path:
    """The per-user cache folder (XDG on Linux, ``~/Library/Caches`` on macOS, LOCALAPPDATA on Windows)."""
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def default_journal_root() -> Path:
    """``<cache>/vital-callbacks/journal``: one sub-folder per destination below it."""
    return cache_root() / "vital-callbacks" / "journal"
