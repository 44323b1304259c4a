"""The `vital-callbacks` command: demo into a store, then report from it; prices; how it fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

import vital_callbacks
from vital_callbacks.cli import main

HEAVY = ("langchain_core", "langgraph", "sqlalchemy", "pydantic", "pydantic_settings", "genai_prices")
"""What `--help` must not import: each costs a noticeable part of a second on a cold start."""

BUDGETS = "budgets:\n  - scope: tenant\n    amount_usd: 1\n"


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None,
            python_flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    # The caller's VITAL_* variables must not leak in: each test states the configuration it means.
    base = {k: v for k, v in os.environ.items() if not k.startswith("VITAL_")}
    return subprocess.run([sys.executable, *python_flags, "-m", "vital_callbacks", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300, env={**base, **(env or {})})


def one_line_error(result: subprocess.CompletedProcess[str], *fragments: str, status: int = 2) -> str:
    """The single stderr line of a failed command, after checking its exit status and fragments."""
    assert result.returncode == status, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


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


# -- the command as a user meets it ---------------------------------------------------------------


def test_version_matches_the_installed_distribution(tmp_path: Path) -> None:
    """`--version` prints the installed distribution's version and exits 0."""
    result = run_cli("--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"vital-callbacks {version('vital-callbacks')}"


def test_python_m_is_the_console_script(tmp_path: Path) -> None:
    """`python -m vital_callbacks` answers exactly as the installed `vital-callbacks` script does."""
    script = Path(sys.executable).parent / "vital-callbacks"
    if not script.exists():
        pytest.skip("the console script is not installed next to this interpreter")
    for args in (["--version"], ["prices", "--help"]):
        by_script = subprocess.run([str(script), *args], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        by_module = run_cli(*args, cwd=tmp_path)
        assert (by_module.returncode, by_module.stdout) == (by_script.returncode, by_script.stdout)


@pytest.mark.parametrize("args", [["--help"], ["report", "--help"], ["prices", "--help"], ["--version"]])
def test_help_imports_no_heavy_module(tmp_path: Path, args: list[str]) -> None:
    """`--help`, a subcommand's `--help` and `--version` import none of LangChain, LangGraph, SQLAlchemy,
    pydantic(-settings) or genai-prices."""
    result = run_cli(*args, cwd=tmp_path, python_flags=("-X", "importtime"))
    assert result.returncode == 0, result.stderr
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0]
                for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "argparse" in imported  # the -X importtime report was read
    assert sorted(imported.intersection(HEAVY)) == []


def test_cli_module_imports_only_the_standard_library(tmp_path: Path) -> None:
    """The `vital_callbacks.cli` package itself imports only the standard library, whatever the package's
    __init__ does."""
    probe = f"""
import contextlib, io, json, sys, types
before = set(sys.modules)
package = types.ModuleType("vital_callbacks")  # stands in for the package, so its __init__ never runs
package.__path__ = [{str(Path(vital_callbacks.__file__).parent)!r}]
sys.modules["vital_callbacks"] = package
import vital_callbacks.cli
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    vital_callbacks.cli.main(["--help"])
added = {{name.split(".")[0] for name in set(sys.modules) - before}} - {{"vital_callbacks"}}
print(json.dumps(sorted(added - set(sys.stdlib_module_names))))
"""
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_report_without_a_store_says_so_and_creates_none(tmp_path: Path) -> None:
    """`report` on a SQLite file that does not exist exits 2 pointing at `demo` and VITAL_DATABASE_URL, and
    leaves no empty database file behind."""
    result = run_cli("report", cwd=tmp_path)
    one_line_error(result, "no store at", str(tmp_path / "vital_callbacks.db"), "vital-callbacks demo",
                   "VITAL_DATABASE_URL")
    assert list(tmp_path.iterdir()) == []


def test_db_current_without_a_store_creates_none(tmp_path: Path) -> None:
    """`db current` on a SQLite file that does not exist reports an empty schema without creating the file."""
    result = run_cli("db", "current", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("empty")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["report", "budgets"])
def test_an_empty_store_has_no_data_yet(tmp_path: Path, command: str) -> None:
    """`report` and `budgets` on a store without tables exit 2 saying it has no data yet."""
    (tmp_path / "empty.db").touch()
    (tmp_path / "budgets.yml").write_text(BUDGETS)
    result = run_cli(command, cwd=tmp_path, env={"VITAL_DATABASE_URL": "sqlite:///empty.db",
                                                 "VITAL_BUDGETS_FILE": "budgets.yml"})
    one_line_error(result, "has no data yet", "vital-callbacks demo")


def test_prices_rejects_a_bad_date(tmp_path: Path) -> None:
    """`prices --at` that is not an ISO date exits 2 with one line naming the option and the value."""
    result = run_cli("prices", "gpt-4o", "--at", "next tuesday", cwd=tmp_path)
    one_line_error(result, "--at", "'next tuesday'", "ISO")


@pytest.mark.parametrize("option", ["--input-tokens", "--output-tokens", "--cache-read", "--cache-write",
                                    "--reasoning"])
def test_prices_rejects_negative_token_counts(tmp_path: Path, option: str) -> None:
    """A negative token count for `prices` exits 2 with one line naming the option."""
    result = run_cli("prices", "gpt-4o", option, "-5", cwd=tmp_path)
    one_line_error(result, option, "'-5'", ">= 0")


def test_budgets_file_that_does_not_exist(tmp_path: Path) -> None:
    """`budgets` with VITAL_BUDGETS_FILE pointing nowhere exits 2 naming the variable and the path."""
    result = run_cli("budgets", cwd=tmp_path, env={"VITAL_BUDGETS_FILE": "nowhere/budgets.yml"})
    one_line_error(result, "VITAL_BUDGETS_FILE=nowhere/budgets.yml", "no such file")


@pytest.mark.parametrize("command", [["report"], ["budgets"], ["db", "current"], ["db", "upgrade"]])
def test_unsupported_database_url(tmp_path: Path, command: list[str]) -> None:
    """A mysql:// store exits 2 with one line saying it is not supported, the password masked."""
    (tmp_path / "budgets.yml").write_text(BUDGETS)
    result = run_cli(*command, cwd=tmp_path, env={"VITAL_DATABASE_URL": "mysql://app:s3cret@db/llm",
                                                  "VITAL_BUDGETS_FILE": "budgets.yml"})
    line = one_line_error(result, "mysql is not supported", "sqlite:///")
    assert "s3cret" not in line


def test_demo_with_no_sinks_names_the_sinks_there_are(tmp_path: Path) -> None:
    """`demo` with VITAL_SINKS set but empty exits 2 listing the sinks that exist."""
    result = run_cli("demo", "--runs", "1", cwd=tmp_path, env={"VITAL_SINKS": ""})
    one_line_error(result, "VITAL_SINKS is empty", "sql", "prometheus", "memory")
    assert list(tmp_path.iterdir()) == []


def test_demo_sink_without_its_extra_gives_the_install_hint(tmp_path: Path) -> None:
    """`demo` with a sink whose extra is not installed exits 2 with the `pip install` line for that extra."""
    shadow = tmp_path / "shadow" / "prometheus_client"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'prometheus_client'\", name='prometheus_client')\n")
    result = run_cli("demo", "--runs", "1", cwd=tmp_path,
                     env={"VITAL_SINKS": "sql,prometheus", "PYTHONPATH": str(tmp_path / "shadow")})
    one_line_error(result, "sink 'prometheus'", "pip install 'vital-callbacks[prometheus]'")


def test_a_bad_setting_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    """A VITAL_* value that does not validate exits 2 with one line naming the variable and its value."""
    result = run_cli("report", cwd=tmp_path, env={"VITAL_QUEUE_SIZE": "abc"})
    one_line_error(result, "VITAL_QUEUE_SIZE='abc'", "integer")


def test_unexpected_error_is_one_line_with_exit_1(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """An unexpected exception in a command prints `error: <Type>: <message>` (first line) and exits 1."""
    def broken() -> dict[str, Any]:
        raise RuntimeError("schema exploded\nsecond line of detail")

    monkeypatch.delenv("VITAL_DEBUG", raising=False)
    monkeypatch.setattr("vital_callbacks.pricing.overrides.json_schema", broken)
    assert main(["prices", "--schema"]) == 1
    assert capsys.readouterr().err == "error: RuntimeError: schema exploded\n"


@pytest.mark.parametrize(("argv", "debug_env"), [(["--debug", "prices", "--schema"], None),
                                                 (["prices", "--schema"], "1")])
def test_debug_lets_the_traceback_through(monkeypatch: pytest.MonkeyPatch, argv: list[str],
                                          debug_env: str | None) -> None:
    """`--debug` or VITAL_DEBUG=1 re-raises an unexpected exception instead of printing one line."""
    def broken() -> dict[str, Any]:
        raise RuntimeError("schema exploded")

    if debug_env is None:
        monkeypatch.delenv("VITAL_DEBUG", raising=False)
    else:
        monkeypatch.setenv("VITAL_DEBUG", debug_env)
    monkeypatch.setattr("vital_callbacks.pricing.overrides.json_schema", broken)
    with pytest.raises(RuntimeError, match="schema exploded"):
        main(argv)
