"""The real recorded provider responses (``../shared/real-responses``, beside this checkout), replayed
through the real LangChain clients: every one must be priced exactly as the provider bills it.

The corpus is not part of the project (its files come from other projects' cassettes); where it is
not beside the checkout, this test skips and says so. ``replay.py`` computes the truth from the raw
bodies with ``genai_prices.calc_price`` only, never from our objects.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REPLAY = ROOT.parent / "shared" / "real-responses" / "replay.py"


@pytest.mark.skipif(not REPLAY.exists(), reason=f"no real-response corpus at {REPLAY} (it lives beside the checkout)")
def test_every_real_response_is_priced_as_billed(tmp_path: Path) -> None:
    """``replay.py --fees``: all PASS (sync and async, stream and not), no handler errors, nothing dropped."""
    out = tmp_path / "rows.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITAL_")}
    env["VITAL_DATABASE_URL"] = f"sqlite:///{tmp_path / 'replay.db'}"
    done = subprocess.run([sys.executable, str(REPLAY), "--fees", "--json", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    rows = json.loads(out.read_text()) if out.exists() else []
    failed = [(r["case"], r["failures"], r["crash"]) for r in rows if r["verdict"] != "PASS"]
    assert done.returncode == 0 and rows and not failed, (failed, done.stdout[-3000:], done.stderr[-2000:])
    assert len(rows) >= 43
    assert all(r["stats"]["handler_errors"] == 0 and not r["stats"]["dropped"] for r in rows)
    assert {r["case"] for r in rows if r["case"].endswith("-ASYNC")}, "the async cases ran"
