"""Budgets: warn never interrupts; stop prevents the call; files are validated at start-up."""

from __future__ import annotations

import logging
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from tests.graphs import INPUT, build_graph
from vital_callbacks import InMemorySink, LLMCall, Settings, VitalCallbackHandler
from vital_callbacks.budgets import Budget, BudgetExceeded, BudgetFileError, load_budgets
from vital_callbacks.testing.fakes import ScriptedChatModel

# A self-hosted model priced at $0.01 a call: 1 output token at $10,000 per million (input is free), with
# max_tokens=1, so a stop budget's reservation (the worst case) is exactly what the call then costs.
PRICING = """
models:
  - provider: "*"
    model: cent-model
    prices:
      - input_mtok: 0
        output_mtok: 10000
"""
CENT_USAGE = {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2}


@pytest.fixture
def pricing_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "pricing"
    folder.mkdir()
    (folder / "cent.yml").write_text(PRICING)
    return folder


def cent_model() -> ScriptedChatModel:
    return ScriptedChatModel(model_name="cent-model", provider="self", usage=CENT_USAGE,  # type: ignore[arg-type]
                             max_tokens=1)


def test_stop_budget_prevents_the_call(pricing_dir: Path, memory_sink: InMemorySink) -> None:
    """Once a tenant's $0.05 is spent, the next call raises BudgetExceeded and the model is not called."""
    budget = Budget(scope="tenant", match="acme", amount_usd=Decimal("0.05"), action="stop")
    handler = VitalCallbackHandler(Settings(pricing_dir=pricing_dir), sinks=[memory_sink], budgets=[budget])
    model = cent_model()
    config = {"callbacks": [handler], "metadata": {"tenant_id": "acme"}}
    for _ in range(5):
        model.invoke("hi", config=config)  # type: ignore[arg-type]
    with pytest.raises(BudgetExceeded) as info:
        model.invoke("hi", config=config)  # type: ignore[arg-type]
    assert model.calls == 5
    message = str(info.value)
    assert "tenant 'acme'" in message and "$0.05" in message and "spent $0.050000" in message
    assert info.value.limit == Decimal("0.05") and info.value.spend == Decimal("0.05")
    # Another tenant is not affected.
    model.invoke("hi", config={"callbacks": [handler], "metadata": {"tenant_id": "globex"}})
    assert model.calls == 6
    handler.flush()
    blocked = [c for c in memory_sink.of(LLMCall) if c.error_type == "BudgetExceeded"]
    assert len(blocked) == 1 and blocked[0].tenant_id == "acme"
    assert handler.budgets is not None and handler.budgets.exceeded_total == 1
    handler.shutdown()


def test_under_a_stop_budget_a_call_is_read_and_priced_once(pricing_dir: Path, memory_sink: InMemorySink,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller's thread reads and prices the call (the budget needs its spend at once); the worker uses
    that, so the response is read once and an unpriced model is counted once, not twice."""
    import vital_callbacks.capture.llm as handler_module  # the handler's LLM hooks
    import vital_callbacks.enrich.reading as reading_module

    reads: list[str] = []

    def counted(module: Any) -> Any:
        original = module.read

        def read(result: Any, provider: str | None = None) -> Any:
            reads.append(module.__name__)
            return original(result, provider)

        return read

    for module in (handler_module, reading_module):
        monkeypatch.setattr(module, "read", counted(module))
    budget = Budget(scope="tenant", match="acme", amount_usd=Decimal("1.00"), action="stop")
    handler = VitalCallbackHandler(Settings(pricing_dir=pricing_dir), sinks=[memory_sink], budgets=[budget])
    config = {"callbacks": [handler], "metadata": {"tenant_id": "acme"}}
    cent_model().invoke("hi", config=config)  # type: ignore[arg-type]
    ScriptedChatModel(model_name="no-such-model", provider="self",
                      usage=CENT_USAGE).invoke("hi", config=config)  # type: ignore[arg-type]
    assert handler.flush()
    calls = {c.model: c for c in memory_sink.of(LLMCall)}
    assert calls["cent-model"].cost is not None and calls["cent-model"].cost.total == Decimal("0.01")
    assert calls["no-such-model"].cost is None and calls["no-such-model"].token_source == "provider"
    assert handler.stats()["unpriced_calls"] == {"no-such-model": 1}
    assert reads == ["vital_callbacks.capture.llm"] * 2  # never again on the worker
    handler.shutdown()


class GatewayModel(BaseChatModel):
    """A chat model behind a gateway that reports usage in the OpenAI wire format, counts as it likes."""

    prompt_tokens: Any = 1

    @property
    def _llm_type(self) -> str:
        return "gateway"

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        usage = {"prompt_tokens": self.prompt_tokens, "completion_tokens": 3, "total_tokens": 4}
        message = AIMessage("a fine answer", response_metadata={"token_usage": usage, "model_name": "cent-model"})
        return ChatResult(generations=[ChatGeneration(message=message)], llm_output={"token_usage": usage})


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), -5, 2**64, "n/a", "1e999"])
def test_a_bad_usage_value_never_loses_the_call(pricing_dir: Path, memory_sink: InMemorySink, bad: object) -> None:
    """Under a stop budget the call is read on the caller's thread; a count that is not a real number
    is flagged (estimated tokens, counted as unreadable), and the call is recorded all the same."""
    budget = Budget(scope="tenant", match="acme", amount_usd=Decimal("1.00"), action="stop")
    handler = VitalCallbackHandler(Settings(pricing_dir=pricing_dir), sinks=[memory_sink], budgets=[budget])
    GatewayModel(prompt_tokens=bad).invoke("hi", config={"callbacks": [handler], "metadata": {"tenant_id": "acme"}})
    assert handler.flush()
    (call,) = memory_sink.of(LLMCall)
    assert call.status == "success" and call.token_source == "estimate" and call.usage.input > 0
    assert call.raw_usage is not None  # what the gateway sent, kept for the audit
    stats = handler.stats()
    assert stats["unreadable_usage"] == 1 and stats["handler_errors"] == 0
    handler.shutdown()


def test_stop_budget_inside_a_graph(pricing_dir: Path, memory_sink: InMemorySink) -> None:
    """In a LangGraph run the BudgetExceeded reaches the caller of invoke, before the LLM is called."""
    budget = Budget(scope="global", amount_usd=Decimal("0.01"), action="stop")
    handler = VitalCallbackHandler(Settings(pricing_dir=pricing_dir), sinks=[memory_sink], budgets=[budget])
    plan = cent_model()
    graph = build_graph(plan_model=plan, draft_model=cent_model())
    with pytest.raises(BudgetExceeded):
        graph.invoke(INPUT, config={"callbacks": [handler]})  # plan spends $0.01, draft is stopped
    assert plan.calls == 1
    handler.shutdown()


def test_warn_budget_never_interrupts(pricing_dir: Path, memory_sink: InMemorySink,
                                      caplog: pytest.LogCaptureFixture) -> None:
    """A warn budget logs at the soft threshold and at 100% but every call goes ahead."""
    budget = Budget(scope="user", amount_usd=Decimal("0.03"), action="warn", soft_threshold=0.6)
    handler = VitalCallbackHandler(Settings(pricing_dir=pricing_dir), sinks=[memory_sink], budgets=[budget])
    model = cent_model()
    with caplog.at_level(logging.WARNING, logger="vital_callbacks"):
        for _ in range(6):
            model.invoke("hi", config={"callbacks": [handler], "metadata": {"user_id": "u1"}})
        handler.flush()
    assert model.calls == 6 and not handler.raise_error
    messages = [r.getMessage() for r in caplog.records if "budget" in r.getMessage()]
    assert len(messages) == 2 and "passed 60%" in messages[0] and "exceeded" in messages[1]
    handler.shutdown()


def test_a_malformed_budgets_file_fails_at_start_up_naming_the_line(tmp_path: Path) -> None:
    """The error names the file and the line of the bad entry, when the handler is built."""
    path = tmp_path / "budgets.yml"
    path.write_text("budgets:\n  - scope: tenant\n    amount_usd: 10\n  - scope: team\n    amount_usd: 5\n")
    with pytest.raises(BudgetFileError, match=r"budgets\.yml:4: budgets\.1\.scope"):
        VitalCallbackHandler(Settings(budgets_file=path), sinks=[])
    path.write_text("budgets:\n  - scope: tenant\n    amount_usd: [\n")
    with pytest.raises(BudgetFileError, match=r"budgets\.yml:\d+: not valid YAML"):
        load_budgets(path)


@pytest.mark.parametrize(("content", "expected"), [
    (b"budgets:\n  - scope: tenant\n    period: rolling\n    hours: 100000000\n    amount_usd: 1\n",
     r"budgets\.yml:2: budgets\.0\.hours: Input should be less than or equal to 8784"),
    (b"budgets:\n  - scope: tenant\n    amount_usd: 10000000000\n", r"budgets\.yml:2: budgets\.0\.amount_usd"),
    (b"budgets:\n  - scope: tenant\n    amount_usd: 1\n    amount_usd: 100\n",
     r"budgets\.yml:4: not valid YAML: duplicate key 'amount_usd'"),
    (b"", r"budgets\.yml: empty; write `budgets: \[\]`"),
    (b"# nothing yet\n", r"budgets\.yml: empty"),
    (b"budgets:\n  - scope: tenant\n    match: caf\xe9\n    amount_usd: 1\n", r"budgets\.yml: not UTF-8 text"),
], ids=["hours-bound", "amount-bound", "duplicate-key", "empty", "only-a-comment", "not-utf8"])
def test_a_budgets_file_is_validated_at_load(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "budgets.yml"
    path.write_bytes(content)
    with pytest.raises(BudgetFileError, match=expected):
        load_budgets(path)


def test_an_explicitly_empty_budgets_file_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "budgets.yml"
    path.write_text("budgets: []\n")
    assert load_budgets(path) == []


CHILD = """
import sys, threading
from decimal import Decimal
from vital_callbacks import Settings, VitalCallbackHandler
from vital_callbacks.budgets import BudgetExceeded
from vital_callbacks.testing.fakes import ScriptedChatModel
# A reservation waits for the counter up to budget_timeout_s, then the budget fails open (its default
# on_store_error): on a loaded machine SQLite's lock can take longer than the default 2 s, and what is
# tested here is that reservations are atomic across replicas, not that timeout.
handler = VitalCallbackHandler(Settings(database_url=sys.argv[1], pricing_dir=sys.argv[2], budgets_file=sys.argv[3],
                                        sinks=["sql"], flush_interval_s=0.05, budget_timeout_s=60))
made = []

def calls(latency):
    model = ScriptedChatModel(model_name="cent-model", provider="self", latency_s=latency, max_tokens=1,
                              usage={"input_tokens": 1, "output_tokens": 1, "total_tokens": 2})
    n = 0
    for _ in range(200):
        try:
            model.invoke("hi", config={"callbacks": [handler], "metadata": {"tenant_id": "acme"}})
            n += 1
        except BudgetExceeded:
            break
    made.append(n)

threads = [threading.Thread(target=calls, args=(float(sys.argv[4]) * (i % 3),)) for i in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
handler.shutdown()
print(sum(made))
"""


def _two_replicas(url: str, tmp_path: Path, pricing_dir: Path, latency_s: float) -> int:
    budgets = tmp_path / "budgets.yml"
    budgets.write_text("budgets:\n  - scope: tenant\n    match: acme\n    amount_usd: 1.00\n    action: stop\n")
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, url, str(pricing_dir), str(budgets), str(latency_s)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=180) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outputs]
    assert not any("on_store_error" in err for _, err in outputs), [err[-2000:] for _, err in outputs]
    return sum(int(out.strip()) for out, _ in outputs)


@pytest.mark.parametrize("latency_s", [0.0, 0.05], ids=["instant", "slow-calls"])
def test_two_processes_of_8_threads_never_pass_the_limit_on_sqlite(tmp_path: Path, pricing_dir: Path,
                                                                    latency_s: float) -> None:
    """2 replicas x 8 threads, a $1 daily stop budget, $0.01 calls whose worst case is known (max_tokens):
    exactly 100 calls are made, never one more (each reserved before it was made)."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    VitalCallbackHandler(Settings(database_url=url)).shutdown()  # create the schema first
    made = _two_replicas(url, tmp_path, pricing_dir, latency_s)
    assert made == 100
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.connect() as conn:
        spent = conn.execute(text("SELECT SUM(total_cost) FROM llm_calls WHERE tenant_id = 'acme'")).scalar_one()
    engine.dispose()
    assert abs(float(spent) - 1.00) < 1e-9  # SQLite sums NUMERIC as a float


def test_two_processes_of_8_threads_never_pass_the_limit_with_redis(tmp_path: Path, pricing_dir: Path) -> None:
    import uuid

    from tests.conftest import require_service

    require_service(_redis_reachable(), f"no Redis at {REDIS_URL}")
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    VitalCallbackHandler(Settings(database_url=url)).shutdown()
    budgets = tmp_path / "budgets.yml"
    name = f"redis-{uuid.uuid4().hex[:8]}"  # a fresh budget id: counters of earlier runs do not count
    budgets.write_text(f"budgets:\n  - name: {name}\n    scope: tenant\n    match: acme\n    amount_usd: 1.00\n"
                       "    action: stop\n")
    import os

    env = {**os.environ, "VITAL_BUDGET_REDIS_URL": REDIS_URL}
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, url, str(pricing_dir), str(budgets), "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outputs = [p.communicate(timeout=180) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outputs]
    assert not any("on_store_error" in err for _, err in outputs), [err[-2000:] for _, err in outputs]
    assert sum(int(out.strip()) for out, _ in outputs) == 100


def test_two_processes_of_8_threads_never_pass_the_limit_on_postgresql(tmp_path: Path, pricing_dir: Path) -> None:
    from tests import pg_cluster
    from tests.conftest import require_service
    from vital_callbacks.store import migrate

    require_service(pg_cluster.reachable(), "no PostgreSQL")
    with pg_cluster.fresh_database() as url:
        migrate.upgrade(url)
        made = _two_replicas(url, tmp_path, pricing_dir, 0.0)
        rows = pg_cluster.query(url, "SELECT SUM(total_cost) AS s FROM llm_calls WHERE tenant_id = 'acme'")
    assert made == 100
    assert rows[0]["s"] == Decimal("1.00")


def test_cli_shows_spend_limit_and_projection(tmp_path: Path, pricing_dir: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """`vital-callbacks budgets` reads spend from the store and prints limit and projection per budget."""
    from vital_callbacks.cli import main

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    budgets = tmp_path / "budgets.yml"
    budgets.write_text("budgets:\n  - scope: tenant\n    amount_usd: 1\n")
    handler = VitalCallbackHandler(Settings(database_url=url, pricing_dir=pricing_dir))
    for _ in range(3):
        cent_model().invoke("hi", config={"callbacks": [handler], "metadata": {"tenant_id": "acme"}})
    handler.shutdown()
    monkeypatch.setenv("VITAL_DATABASE_URL", url)
    monkeypatch.setenv("VITAL_BUDGETS_FILE", str(budgets))
    assert main(["budgets"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "acme" in line).split()
    assert row[0] == "tenant:*/day" and "$0.0300" in row and "$1.00" in row and "3%" in row


# -- reservations: exact keys, periods, an unreachable counter -------------------------------------------
def _sql_handler(tmp_path: Path, pricing_dir: Path, budget: Budget) -> VitalCallbackHandler:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    return VitalCallbackHandler(Settings(database_url=url, pricing_dir=pricing_dir, sinks=["sql"]), budgets=[budget])


def test_long_tenant_ids_are_budgeted_exactly(tmp_path: Path, pricing_dir: Path) -> None:
    """Two 301-character tenant ids sharing a 300-character prefix (stored columns cut at 256) each get
    their own $0.05: neither bypasses the limit, neither is merged with the other."""
    budget = Budget(scope="tenant", amount_usd=Decimal("0.05"), action="stop")
    handler = _sql_handler(tmp_path, pricing_dir, budget)
    model = cent_model()
    made = {}
    for tenant in ("x" * 300 + "a", "x" * 300 + "b"):
        made[tenant[-1]] = 0
        for _ in range(8):
            try:
                model.invoke("hi", config={"callbacks": [handler], "metadata": {"tenant_id": tenant}})
                made[tenant[-1]] += 1
            except BudgetExceeded:
                break
    handler.shutdown()
    assert made == {"a": 5, "b": 5}


REDIS_URL = "redis://127.0.0.1:6379/0"


def _redis_reachable() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except Exception:
        return False


def _counters(tmp_path: Path, which: int) -> Any:
    import uuid

    from vital_callbacks.budgets.counter import LocalCounter, SQLCounter
    from vital_callbacks.budgets.redis_counter import RedisCounter
    from vital_callbacks.store import migrate

    if which == 0:
        return LocalCounter()
    if which == 1:
        url = f"sqlite:///{tmp_path / 'counters.db'}"
        migrate.upgrade(url)
        return SQLCounter(url)
    from tests.conftest import require_service

    require_service(_redis_reachable(), f"no Redis at {REDIS_URL}")
    return RedisCounter(REDIS_URL, prefix=f"vital-test:{uuid.uuid4().hex}:")


COUNTERS = pytest.mark.parametrize("which", [0, 1, 2], ids=["in-process", "sql-store", "redis"])


@COUNTERS
def test_periods_roll_over_as_the_clock_moves(tmp_path: Path, which: int) -> None:
    from datetime import datetime, timezone

    from vital_callbacks.budgets.counter import Claim, Held, Refusal

    counter = _counters(tmp_path, which)
    day = Budget(scope="tenant", amount_usd=Decimal("0.02"), action="stop")
    window = Budget(scope="tenant", period="rolling", hours=2, amount_usd=Decimal("0.02"), action="stop")
    for budget, spent_at, still, rolled in (
            (day, datetime(2026, 3, 1, 23, 0, tzinfo=timezone.utc), datetime(2026, 3, 1, 23, 59, tzinfo=timezone.utc),
             datetime(2026, 3, 2, 0, 1, tzinfo=timezone.utc)),
            (window, datetime(2026, 3, 1, 10, 15, tzinfo=timezone.utc),
             datetime(2026, 3, 1, 12, 5, tzinfo=timezone.utc), datetime(2026, 3, 1, 13, 5, tzinfo=timezone.utc))):
        claim = [Claim(budget, "acme", Decimal("0.02"))]
        held = counter.reserve(claim, spent_at)
        assert isinstance(held, Held)
        counter.settle(held, Decimal("0.02"))
        assert isinstance(counter.reserve(claim, still), Refusal)  # the same period: used up
        again = counter.reserve(claim, rolled)
        assert isinstance(again, Held), budget.period  # the next period: a fresh limit
        counter.release(again)


@COUNTERS
def test_a_reservation_holds_until_settled_released_or_expired(tmp_path: Path, which: int) -> None:
    from datetime import datetime, timedelta, timezone

    from vital_callbacks.budgets.counter import RESERVATION_TTL_S, Claim, Held, Refusal

    counter = _counters(tmp_path, which)
    budget = Budget(scope="tenant", amount_usd=Decimal("1"), action="stop")
    now = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
    big = [Claim(budget, "acme", Decimal("0.8"))]
    first = counter.reserve(big, now)
    assert isinstance(first, Held)
    assert isinstance(counter.reserve(big, now), Refusal)  # 0.8 held + 0.8 > 1
    counter.release(first)
    second = counter.reserve(big, now)
    assert isinstance(second, Held)  # released: free again
    # A process that died holding it: the reservation stops counting once it expires.
    later = now + timedelta(seconds=RESERVATION_TTL_S + 1)
    assert isinstance(counter.reserve(big, later), Held)
    assert counter.spent(budget, "acme", now) == (Decimal(0), Decimal("0.8"))


@pytest.mark.parametrize("policy", ["open", "closed"])
def test_an_unreachable_counter_follows_the_budget_policy(policy: str, caplog: pytest.LogCaptureFixture,
                                                          pricing_dir: Path) -> None:
    """The store refusing connections: ``open`` goes on against this process's own counter (still
    stopping at the limit), ``closed`` refuses; one log line for the outage, never one per call."""
    from vital_callbacks.budgets import BudgetGuard

    budget = Budget(scope="tenant", amount_usd=Decimal("0.03"), action="stop", on_store_error=policy)  # type: ignore[arg-type]
    guard = BudgetGuard([budget], database_url="postgresql://nobody@127.0.0.1:9/none", refresh_s=0, timeout_s=0.5)
    granted = 0
    with caplog.at_level(logging.INFO, logger="vital_callbacks"):
        for _ in range(5):
            try:
                held = guard.reserve("acme", None, None, Decimal("0.01"))
                guard.settle(held, Decimal("0.01"))
                assert guard.drain(5)
                granted += 1
            except BudgetExceeded:
                pass
    guard.close()
    assert granted == (3 if policy == "open" else 0)
    assert guard.counter_errors == 5
    outage_lines = [r for r in caplog.records if "cannot reach the shared counter" in r.getMessage()]
    assert len(outage_lines) == 1 and outage_lines[0].exc_info is None


def _refusing_handler(pricing_dir: Path) -> VitalCallbackHandler:
    budget = Budget(scope="tenant", amount_usd=Decimal("0.005"), action="stop")  # below one call's worst case
    return VitalCallbackHandler(Settings(pricing_dir=pricing_dir), sinks=[InMemorySink()], budgets=[budget])


def test_a_refusal_is_not_retried_and_not_logged_as_a_callback_error(pricing_dir: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """``with_retry(retry_if_exception_type=retry_unless_budget)`` gives up at once (the model is not
    called; one error row, not one per attempt), and LangChain logs no "Error in ... callback" line."""
    from vital_callbacks import retry_unless_budget

    handler = _refusing_handler(pricing_dir)
    model = cent_model()
    retrying = model.with_retry(retry_if_exception_type=retry_unless_budget, stop_after_attempt=4)
    config = {"callbacks": [handler], "metadata": {"tenant_id": "acme"}}
    with caplog.at_level(logging.WARNING), pytest.raises(BudgetExceeded):
        retrying.invoke("hi", config=config)  # type: ignore[arg-type]
    assert model.calls == 0
    handler.flush()
    memory = handler.runtime.sinks[0]
    assert isinstance(memory, InMemorySink)
    assert len([c for c in memory.of(LLMCall) if c.error_type == "BudgetExceeded"]) == 1
    assert not [r for r in caplog.records if "callback" in r.getMessage() and "Error in" in r.getMessage()]
    # What it still retries: any other failure.
    assert retry_unless_budget(ConnectionError("reset")) and not retry_unless_budget(KeyboardInterrupt())
    handler.shutdown()


def test_fallbacks_and_langgraph_retry_policies_see_a_refusal_at_once(pricing_dir: Path) -> None:
    """A fallback model answers at once; LangGraph's default RetryPolicy does not retry a refusal."""
    from langchain_core.runnables import RunnableConfig
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import RetryPolicy
    from typing_extensions import TypedDict

    handler = _refusing_handler(pricing_dir)
    expensive = cent_model()
    cheap = ScriptedChatModel(model_name="free-model", provider="self", responses=["fallback"])
    config: RunnableConfig = {"callbacks": [handler], "metadata": {"tenant_id": "acme"}}
    answer = expensive.with_fallbacks([cheap]).invoke("hi", config=config)
    assert answer.content == "fallback" and expensive.calls == 0

    class State(TypedDict):
        text: str

    attempts = []

    def node(state: State) -> State:
        attempts.append(1)
        return {"text": str(expensive.invoke(state["text"]).content)}

    graph = StateGraph(State)
    graph.add_node("call", node, retry_policy=RetryPolicy(max_attempts=4, initial_interval=0.01))
    graph.add_edge(START, "call")
    graph.add_edge("call", END)
    with pytest.raises(BudgetExceeded):
        graph.compile().invoke({"text": "hi"}, config=config)
    assert len(attempts) == 1
    handler.shutdown()


def test_cli_shows_a_stop_budget_spend_and_what_is_reserved(tmp_path: Path, pricing_dir: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """`vital-callbacks budgets` shows a stop budget's spend from its counter and the reservations held."""
    from vital_callbacks.budgets import BudgetGuard
    from vital_callbacks.cli import main

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    budgets = tmp_path / "budgets.yml"
    budgets.write_text("budgets:\n  - scope: tenant\n    match: acme\n    amount_usd: 1\n    action: stop\n")
    handler = VitalCallbackHandler(Settings(database_url=url, pricing_dir=pricing_dir, budgets_file=budgets,
                                            sinks=["sql"]))
    for _ in range(3):
        cent_model().invoke("hi", config={"callbacks": [handler], "metadata": {"tenant_id": "acme"}})
    handler.shutdown()
    in_flight = BudgetGuard(load_budgets(budgets), database_url=url, refresh_s=0)
    held = in_flight.reserve("acme", None, None, Decimal("0.25"))  # a call of another replica, in flight
    monkeypatch.setenv("VITAL_DATABASE_URL", url)
    monkeypatch.setenv("VITAL_BUDGETS_FILE", str(budgets))
    assert main(["budgets"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "acme" in line).split()
    assert "stop" in row and "$0.0300" in row and "$0.25" in row and "$1.00" in row
    in_flight.settle(held, None)
    in_flight.close()


def test_budget_metrics_keep_to_the_cardinality_guard() -> None:
    """A ``match: "*"`` budget over 300 users makes at most ``max_keys`` series plus ``user:other`` (the rest's
    sum), read from the guard at scrape time; refusals are bounded the same way."""
    from prometheus_client import CollectorRegistry

    from vital_callbacks.budgets import BudgetGuard
    from vital_callbacks.budgets import metrics as budget_metrics

    registry = CollectorRegistry()
    budget = Budget(scope="user", amount_usd=Decimal("1"), action="warn")
    guard = BudgetGuard([budget], refresh_s=0, max_metric_keys=10)
    guard._metrics = budget_metrics.BudgetMetrics.create(guard._spend_view, registry=registry, max_keys=10)
    for n in range(300):
        guard.record(None, f"user-{n:03d}", None, Decimal("0.01") * (n + 1))
    samples = [s for family in registry.collect() if family.name == "vital_budget_spend_usd" for s in family.samples]
    scopes = {s.labels["scope"]: s.value for s in samples}
    assert len(scopes) == 11 and "user:other" in scopes
    assert "user:user-299" in scopes  # the biggest spenders keep their series
    assert sum(scopes.values()) == pytest.approx(float(sum(Decimal("0.01") * (n + 1) for n in range(300))))
    for n in range(30):
        guard._metrics.exceeded(budget, f"user-{n:03d}")
    exceeded = {s.labels["scope"] for family in registry.collect() if family.name == "vital_budget_exceeded"
                for s in family.samples if s.name.endswith("_total")}
    assert len(exceeded) == 11 and "user:other" in exceeded
    guard.close()


def test_a_call_without_reported_usage_counts_at_its_reservation(pricing_dir: Path) -> None:
    """A provider that reports no usage (a stream without it) is never free under a stop budget: each call
    counts at its worst case, so a $0.05 budget of $0.01 calls stops after 5."""
    budget = Budget(scope="tenant", amount_usd=Decimal("0.05"), action="stop")
    handler = VitalCallbackHandler(Settings(pricing_dir=pricing_dir), sinks=[InMemorySink()], budgets=[budget])
    model = ScriptedChatModel(model_name="cent-model", provider="self", report_usage=False, max_tokens=1)
    made = 0
    for _ in range(8):
        try:
            model.invoke("hi", config={"callbacks": [handler], "metadata": {"tenant_id": "acme"}})
            made += 1
        except BudgetExceeded:
            break
        assert handler.budgets.drain(5)
    handler.shutdown()
    assert made == 5
