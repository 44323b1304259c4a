"""The `vital-callbacks` command: demo into a store, then report from it; prices."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vital_callbacks.cli import main


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vital_callbacks.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})


def test_demo_then_report_by_tenant(tmp_path: Path) -> None:
    """`demo` fills the default store offline with three tenants and two priced models; `report` shows them."""
    demo = run_cli("demo", "--runs", "9", cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr
    assert (tmp_path / "vital_callbacks.db").exists()
    report = run_cli("report", "--by", "tenant", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    lines = report.stdout.splitlines()
    assert lines[0].split()[:2] == ["tenant", "calls"]
    tenants = {line.split()[0]: line.split() for line in lines[2:5]}
    assert set(tenants) == {"acme", "globex", "initech"}
    assert all(row[1] == "15" for row in tenants.values())  # 3 runs x 5 LLM calls each
    assert all(row[5].startswith("$") for row in tenants.values())  # priced, not null
    by_model = run_cli("report", "--by", "model", "--since", "1d", cwd=tmp_path).stdout
    assert "gpt-4o-mini" in by_model and "claude-haiku-4-5" in by_model and "null" not in by_model


def test_report_rejects_a_bad_window(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A --since that is not a duration exits 2 with a clear message."""
    monkeypatch.setenv("VITAL_DATABASE_URL", f"sqlite:///{tmp_path / 'r.db'}")
    assert main(["report", "--since", "yesterday"]) == 2
    assert "cannot read 'yesterday'" in capsys.readouterr().err


def test_prices_shows_the_charge(capsys: pytest.CaptureFixture[str]) -> None:
    """`prices MODEL` prints the catalog price and the cost of the given usage."""
    assert main(["prices", "gpt-4o", "--input-tokens", "1000", "--output-tokens", "500", "--cache-read", "200"]) == 0
    out = capsys.readouterr().out
    assert "openai/gpt-4o" in out and "total $0.007250" in out


def test_prices_unknown_model(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown model says so and exits non-zero instead of printing a number."""
    assert main(["prices", "no-such-model-xyz"]) == 1
    assert "no price known" in capsys.readouterr().out
