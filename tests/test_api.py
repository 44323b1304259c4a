"""The metrics HTTP API over the fixed data set of tests/test_analytics.py, with the clock pinned at NOW.

Tokens: ``acme`` and ``globex`` tenant tokens and one admin token. Expected numbers are worked out by
hand from the data set's table (see test_analytics.py).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.test_analytics import NOW, sqlite_store
from vital_callbacks.server import TokenTable, create_app, metrics_router

TOKENS = "acme:tok-acme,globex:tok-globex,*:tok-admin"
ACME = {"Authorization": "Bearer tok-acme"}
ADMIN = {"Authorization": "Bearer tok-admin"}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    engine = sqlite_store(str(tmp_path_factory.mktemp("api") / "store.db"))
    return create_app(engine, tokens=TOKENS, clock=lambda: NOW)


@pytest.fixture(scope="module")
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def get(client: TestClient, path: str, headers: dict[str, str] | None = None, **params: Any) -> Any:
    response = client.get(path, headers=headers if headers is not None else ADMIN, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_healthz_needs_no_token(client: TestClient) -> None:
    """/healthz answers without a token and reports the store reachable."""
    assert client.get("/healthz").json() == {"status": "ok", "database": "ok"}


def test_no_or_wrong_token_is_401(client: TestClient) -> None:
    """Every metrics endpoint refuses a missing or unknown token with 401 and a Bearer challenge."""
    for path in ("/metrics/realtime", "/metrics/tenant/acme", "/analytics/costs"):
        missing = client.get(path)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert client.get(path, headers={"Authorization": "Bearer tok-acme-not"}).status_code == 401
        assert client.get(path, headers={"Authorization": "Basic dG9rLWFkbWlu"}).status_code == 401


def test_tenant_metrics(client: TestClient) -> None:
    """A tenant's last 24 h: four calls, $0.035, cost per model, and half its graph runs failed."""
    body = get(client, "/metrics/tenant/acme", ACME)
    assert body["tenant_id"] == "acme" and body["window"]["until"].startswith("2025-03-10T12:00:00")
    assert (body["totals"]["calls"], body["totals"]["cost_usd"], body["totals"]["cache_hits"]) == (4, 0.035, 1)
    assert [(g["key"], g["cost_usd"]) for g in body["by_model"]] == [("gpt-4o-mini", 0.03),
                                                                     ("claude-haiku-4-5", 0.005)]
    assert (body["graph_runs"]["runs"], body["graph_runs"]["success_rate"]) == (2, 0.5)


def test_tenant_token_cannot_read_another_tenant(client: TestClient) -> None:
    """A tenant token asking for another tenant, by path or by parameter, gets 403; admin may."""
    assert client.get("/metrics/tenant/globex", headers=ACME).status_code == 403
    for path in ("/metrics/cost/daily", "/analytics/costs", "/metrics/realtime", "/metrics/quality/summary"):
        refused = client.get(path, headers=ACME, params={"tenant_id": "globex"})
        assert refused.status_code == 403 and refused.json() == {"detail": "this token may only read its own tenant"}
    globex = get(client, "/metrics/tenant/globex")["totals"]  # c6 (unpriced) and c9 (failed, no usage)
    assert (globex["calls"], globex["cost_usd"], globex["unpriced_calls"], globex["errors"]) == (2, None, 1, 1)
    assert globex["cost_is_lower_bound"] is True


def test_tenant_token_is_narrowed_to_its_tenant(client: TestClient) -> None:
    """Without a tenant parameter a tenant token still only sees its own tenant's rows."""
    body = get(client, "/analytics/costs", ACME, hours=72, by="tenant")
    assert body["tenant_id"] == "acme" and [g["key"] for g in body["groups"]] == ["acme"]
    assert get(client, "/metrics/realtime", ACME, minutes=60)["llm_calls"] == 2
    assert get(client, "/metrics/agent/helper", ACME, hours=72)["totals"]["calls"] == 0


def test_agent_metrics(client: TestClient) -> None:
    """An agent's spend, graph-run outcomes and per-node latency over the last three days."""
    body = get(client, "/metrics/agent/helper", hours=72)
    assert (body["totals"]["calls"], body["totals"]["cost_usd"], body["graph_runs"]["runs"]) == (3, 0.04, 1)
    assert [(n["key"], n["p50_s"]) for n in body["nodes"]] == [("answer", 5.5)]


def test_daily_cost(client: TestClient) -> None:
    """Cost per UTC day over the last three calendar days, totalled; a tenant token sees its own days."""
    body = get(client, "/metrics/cost/daily", days=3)
    assert [(d["day"], d["cost_usd"]) for d in body["days"]] == [("2025-03-08", 0.04), ("2025-03-09", 0.03),
                                                                 ("2025-03-10", 0.035)]
    assert body["total_usd"] == 0.105 and body["window"]["since"].startswith("2025-03-08T00:00:00")
    assert (body["unpriced_calls"], body["cost_is_lower_bound"]) == (1, True)  # c6, on March 10
    assert [(d["unpriced_calls"], d["cost_is_lower_bound"]) for d in body["days"]] == [(0, False), (0, False),
                                                                                     (1, True)]
    acme = get(client, "/metrics/cost/daily", ACME, days=3)
    assert [(d["day"], d["calls"]) for d in acme["days"]] == [("2025-03-10", 4)]


def test_realtime(client: TestClient) -> None:
    """The last hour's traffic across tenants: four calls, one error, p95 5.25 s."""
    body = get(client, "/metrics/realtime", minutes=60)
    assert (body["llm_calls"], body["errors"], body["active_tenants"]) == (4, 1, 2)
    assert (body["cost_usd"], body["unpriced_calls"], body["cost_is_lower_bound"]) == (0.01, 1, True)  # c1, c6
    assert body["p95_latency_s"] == pytest.approx(5.25)


def test_quality_summary(client: TestClient) -> None:
    """Scores of the last week per name, from the scores table."""
    scores = {s["name"]: s for s in get(client, "/metrics/quality/summary")["scores"]}
    assert (scores["helpfulness"]["count"], scores["helpfulness"]["mean"]) == (3, pytest.approx(0.8))
    assert scores["correctness"]["mean"] is None


def test_token_usage_per_hour(client: TestClient) -> None:
    """Token usage defaults to hourly buckets."""
    body = get(client, "/analytics/token-usage", hours=3)
    assert [(g["key"], g["total_tokens"]) for g in body["groups"]] == [
        ("2025-03-10T09:00", 500), ("2025-03-10T10:00", 2200), ("2025-03-10T11:00", 2310)]


def test_costs_by_model(client: TestClient) -> None:
    """Costs by model over a day, most expensive first, the unpriced model last with its count."""
    groups = get(client, "/analytics/costs", hours=24, by="model")["groups"]
    assert [(g["key"], g["cost_usd"], g["unpriced_calls"], g["cost_is_lower_bound"]) for g in groups] == [
        ("gpt-4o-mini", 0.03, 0, False), ("claude-haiku-4-5", 0.005, 0, False), ("local-llama", None, 1, True)]


def test_agent_success_rate(client: TestClient) -> None:
    """Success rate of one agent's graph runs over two days."""
    agents = get(client, "/analytics/agent-success-rate", hours=48, agent_id="agent")["agents"]
    assert [(a["key"], a["runs"], a["success_rate"]) for a in agents] == [("agent", 3, pytest.approx(2 / 3))]


@pytest.mark.parametrize(("path", "params", "field"), [
    ("/analytics/costs", {"hours": "0"}, "hours"),
    ("/analytics/costs", {"hours": "a day"}, "hours"),
    ("/analytics/costs", {"by": "color"}, "by"),
    ("/metrics/cost/daily", {"days": "1000"}, "days"),
    ("/metrics/realtime", {"minutes": "-5"}, "minutes"),
    ("/metrics/tenant/acme", {"hours": "1e309"}, "hours"),
])
def test_bad_parameters_are_422_naming_the_parameter(client: TestClient, path: str, params: dict[str, str],
                                                     field: str) -> None:
    """A malformed parameter gets 422 whose detail names it and says what is allowed, no traceback."""
    response = client.get(path, headers=ADMIN, params=params)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail[0]["loc"] == ["query", field] and detail[0]["msg"]
    assert "Traceback" not in response.text


def test_router_mounts_under_a_prefix(app: FastAPI, tmp_path: Path) -> None:
    """Users mount the router in their own app under any prefix; it reads the store it was given."""
    engine = sqlite_store(str(tmp_path / "mounted.db"))
    host = FastAPI()
    host.include_router(metrics_router(engine, tokens=TokenTable.parse(TOKENS), clock=lambda: NOW), prefix="/vital")
    with TestClient(host) as c:
        assert c.get("/vital/metrics/tenant/acme", headers=ACME).json()["totals"]["calls"] == 4


def test_unreadable_store_is_503_without_details(tmp_path: Path) -> None:
    """A store without its tables answers 503 with a one-line reason (run the migrations); /healthz
    still says the file opens. A store that fails otherwise says only that it is unavailable."""
    from vital_callbacks.analytics import reader_engine

    broken = create_app(reader_engine(f"sqlite:///{tmp_path / 'empty.db'}"), tokens=TOKENS, clock=lambda: NOW)
    with TestClient(broken, raise_server_exceptions=False) as c:
        response = c.get("/metrics/tenant/acme", headers=ACME)
        assert response.status_code == 503
        assert response.json() == {"detail": "the store's schema is at revision none, older than this version's "
                                             "(0010); run `vital-callbacks db upgrade`"}
        assert c.get("/healthz").json()["status"] == "ok"  # the file opens; only the tables are missing
    (tmp_path / "not-a-db").write_bytes(b"\x00garbage" * 100)
    garbage = create_app(reader_engine(f"sqlite:///{tmp_path / 'not-a-db'}"), tokens=TOKENS, clock=lambda: NOW)
    with TestClient(garbage, raise_server_exceptions=False) as c:
        response = c.get("/metrics/tenant/acme", headers=ACME)
        assert response.status_code == 503 and response.json() == {"detail": "the metrics store is unavailable"}


def test_healthz_answers_while_the_store_hangs() -> None:
    """A PostgreSQL that accepts connections and never answers: /healthz still answers (at its 1 s
    budget), "unavailable", and names why."""
    import threading

    from vital_callbacks.testing.servers import HungServer

    with HungServer() as hung:
        app = create_app(database_url=f"postgresql://app@127.0.0.1:{hung.port}/db", tokens=TOKENS)
        answers: list[dict[str, Any]] = []
        with TestClient(app, raise_server_exceptions=False) as c:
            probe = threading.Thread(target=lambda: answers.append(c.get("/healthz").json()))
            probe.start()
            probe.join(30)  # a hang detector: without the budget the probe waits for the connect timeout
            assert not probe.is_alive()
    assert answers == [{"status": "unavailable", "database": "no answer within 1 s"}]


def test_token_table_parsing() -> None:
    """Entries are tenant:token (tokens may hold colons); a malformed entry names its position only."""
    table = TokenTable.parse(" acme:a:b , *:adm ")
    assert table.lookup("a:b").tenant_id == "acme"  # type: ignore[union-attr]
    assert table.lookup("adm").is_admin  # type: ignore[union-attr]
    assert table.lookup("a") is None
    with pytest.raises(ValueError, match="entry 2 is not") as err:
        TokenTable.parse("acme:x,secret-without-tenant")
    assert "secret" not in str(err.value)


@pytest.mark.parametrize("tokens", ["acme:shared,globex:shared", "acme:shared,*:shared", "*:shared , acme:shared"])
def test_one_token_for_two_scopes_is_a_configuration_error(tokens: str) -> None:
    """Otherwise whichever entry matched last would decide, and a tenant's token could read every tenant.
    The error names the entries and the scopes, never the token."""
    with pytest.raises(ValueError, match="give one token to two scopes") as err:
        TokenTable.parse(tokens)
    assert "shared" not in str(err.value)
    assert len(TokenTable.parse("acme:same,acme:same")) == 2  # the same grant twice is harmless


def test_fuzzing_from_the_openapi_schema_finds_no_server_error(app: FastAPI) -> None:
    """Valid and invalid requests generated from the OpenAPI schema, with admin and tenant tokens, never
    get a 5xx, and every documented answer matches its response model."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result.err()  # every operation of the schema loads
        operations.append(result.ok())
    assert len(operations) == 10

    for operation, mode in itertools.product(operations, (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)):
        if mode is GenerationMode.NEGATIVE and not operation.query:
            continue  # nothing to get wrong in /healthz

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=20, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def fuzz(case: Any) -> None:
            for headers in (ADMIN, ACME):
                response = case.call(headers=headers)
                case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])

        fuzz()


def test_recent_logs_newest_first_and_scoped(client: TestClient) -> None:
    """``/analytics/recent-logs``: the latest calls, newest first; ``level=error`` only the failed ones; a
    tenant's token sees its own calls only and is refused another tenant's."""
    calls = get(client, "/analytics/recent-logs", limit=500)["calls"]
    assert calls and [c["started_at"] for c in calls] == sorted((c["started_at"] for c in calls), reverse=True)
    assert len({c["tenant_id"] for c in calls}) > 1
    errors = get(client, "/analytics/recent-logs", level="error")["calls"]
    assert errors and {c["status"] for c in errors} == {"error"}
    mine = get(client, "/analytics/recent-logs", ACME, limit=500)["calls"]
    assert mine and {c["tenant_id"] for c in mine} == {"acme"}
    assert client.get("/analytics/recent-logs", headers=ACME, params={"tenant_id": "globex"}).status_code == 403
    assert get(client, "/analytics/recent-logs", limit=2)["calls"] == calls[:2]
