"""Every PromQL expression we ship: dashboard panels (from the generator), alert rules (from YAML) and the
README's examples."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
INTEGRATIONS = ROOT / "integrations"
PROMETHEUS_DIR = INTEGRATIONS / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$tenant": ".*"}


def dashboards_module() -> ModuleType:
    """``integrations/grafana/dashboards.py`` (not a package: loaded from its path)."""
    spec = importlib.util.spec_from_file_location("vital_dashboards", INTEGRATIONS / "grafana" / "dashboards.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def panel_queries() -> list[tuple[str, str]]:
    """(dashboard / panel title, PromQL with Grafana variables substituted) from the JSON files."""
    out: list[tuple[str, str]] = []
    for path in sorted((INTEGRATIONS / "grafana" / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                expr = target["expr"]
                for name, value in GRAFANA_VARIABLES.items():
                    expr = expr.replace(name, value)
                out.append((f"{dashboard['title']} / {panel['title']} / {target['refId']}", expr))
    return out


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def readme_queries() -> list[str]:
    """The expressions of the README's ``promql`` blocks: one per line, an indented line continues the
    one before, ``#`` starts a comment."""
    blocks = re.findall(r"```promql\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    out: list[str] = []
    for line in (line for block in blocks for line in block.splitlines()):
        expr = line.split("#", 1)[0].rstrip()
        if not expr.strip():
            continue
        if line[:1].isspace() and out:
            out[-1] += " " + expr.strip()
        else:
            out.append(expr)
    return out


def metric_names(expr: str) -> set[str]:
    """The ``vital_*`` series names an expression reads (histogram suffixes stripped)."""
    names = set(re.findall(r"\bvital_[a-z0-9_]+", expr))
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def binary(name: str) -> str | None:
    return shutil.which(name)


def run(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


class PrometheusServer:
    """A real Prometheus on a free loopback port, scraping one target every 250 ms."""

    def __init__(self, workdir: Path, target: str) -> None:
        config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
        config["global"] = {"scrape_interval": "250ms", "evaluation_interval": "1s"}
        config["rule_files"] = [str(ALERTS)]
        config.pop("alerting", None)
        config["scrape_configs"][0]["static_configs"] = [{"targets": [target]}]
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (workdir / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"], stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.url + "/-/ready", timeout=1)
                return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError("prometheus did not become ready")

    def api(self, path: str, **params: str) -> dict[str, Any]:
        """GET an API path; errors (e.g. a parse error, HTTP 400) come back as their JSON body."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                body = response.read()
        except urllib.error.HTTPError as err:
            body = err.read()
        return json.loads(body)  # type: ignore[no-any-return]

    def query(self, expr: str) -> dict[str, Any]:
        return self.api("query", query=expr)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()
