"""What a budget is: a spend limit per tenant, user, graph or globally, per day, month or window,
and the YAML file that declares them (validated strictly; errors name the file and line)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Scope = Literal["tenant", "user", "graph", "global"]
Period = Literal["day", "month", "rolling"]
ANY = "*"
NEAR_LIMIT_REFRESH_S = 0.05
MAX_HOURS = 24 * 366
"""A rolling window of at most a year (longer: use period: month)."""
MAX_AMOUNT_USD = Decimal(10) ** 9


class Budget(BaseModel):
    """One limit. ``match`` picks which tenant/user/graph it applies to; ``*`` means each one separately."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None
    scope: Scope
    match: str = ANY
    period: Period = "day"
    hours: int | None = Field(default=None, gt=0, le=MAX_HOURS, description="Window length for period: rolling.")
    amount_usd: Decimal = Field(gt=0, le=MAX_AMOUNT_USD)
    action: Literal["warn", "stop"] = "warn"
    soft_threshold: float = Field(default=0.8, gt=0, le=1)
    on_store_error: Literal["open", "closed"] = "open"
    """A stop budget whose shared counter cannot be reached (the store or Redis down): ``open`` goes on
    against this process's own counter (each replica then holds the limit on its own: availability of
    the application over exactness, one log line per outage); ``closed`` refuses the call."""

    @model_validator(mode="after")
    def _rolling_needs_hours(self) -> Budget:
        if self.period == "rolling" and self.hours is None:
            raise ValueError("period: rolling needs hours")
        if self.period != "rolling" and self.hours is not None:
            raise ValueError("hours only applies to period: rolling")
        return self

    @property
    def label(self) -> str:
        return self.name or f"{self.scope}:{self.match}/{self.period}"

    def key_for(self, tenant: str | None, user: str | None, graph: str | None) -> str | None:
        """The spend bucket a call falls in, or ``None`` when this budget does not cover it."""
        if self.scope == "global":
            return ANY
        value = {"tenant": tenant, "user": user, "graph": graph}[self.scope]
        if value is None:
            return None
        if self.match == ANY or self.match == value:
            return value
        return None

    def period_start(self, now: datetime) -> datetime:
        if self.period == "day":
            return now.replace(hour=0, minute=0, second=0, microsecond=0)
        if self.period == "month":
            return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        return now - timedelta(hours=self.hours or 0)

    def period_end(self, now: datetime) -> datetime:
        if self.period == "day":
            return self.period_start(now) + timedelta(days=1)
        if self.period == "month":
            start = self.period_start(now)
            return (start + timedelta(days=32)).replace(day=1)
        return now


class BudgetsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    budgets: list[Budget]


class BudgetFileError(ValueError):
    """A budgets file that does not parse or validate; the message names file and line."""


class BudgetExceeded(RuntimeError):
    """Raised from ``on_chat_model_start`` / ``on_llm_start`` by a ``stop`` budget: the call is not made."""

    def __init__(self, budget: Budget, key: str, spend: Decimal, *, reason: str | None = None) -> None:
        self.budget = budget
        self.key = key
        self.spend = spend
        self.limit = budget.amount_usd
        self.reason = reason
        scope = budget.scope if budget.scope == "global" else f"{budget.scope} {key!r}"
        if reason is not None:
            super().__init__(f"budget {budget.label!r} refuses the call for {scope}: {reason}")
            return
        super().__init__(f"budget {budget.label!r} exceeded for {scope}: spent ${spend:.6f} of ${self.limit} "
                         f"this {budget.period if budget.period != 'rolling' else f'{budget.hours}h window'}")


def retry_unless_budget(exc: BaseException) -> bool:
    """For ``Runnable.with_retry(retry_if_exception_type=retry_unless_budget)``: retry what LangChain's
    default retries (any ``Exception``), except a stop budget's refusal, which no retry can change.

    ``BudgetExceeded`` stays an ``Exception`` (so ``except Exception``, FastAPI's exception handlers and
    ``with_fallbacks`` see it); LangGraph's default ``RetryPolicy`` does not retry it (a ``RuntimeError``).
    """
    return isinstance(exc, Exception) and not isinstance(exc, BudgetExceeded)


def _line_of(text: str, index: int) -> int | None:
    """1-based line of the ``index``-th item of the top-level ``budgets`` list."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    if not isinstance(node, yaml.MappingNode):
        return None
    for key, value in node.value:
        is_budgets = getattr(key, "value", None) == "budgets" and isinstance(value, yaml.SequenceNode)
        if is_budgets and 0 <= index < len(value.value):
            return int(value.value[index].start_mark.line) + 1
    return None


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice in one mapping (the last would silently win: a limit
    written twice is a limit someone did not mean)."""


def _no_duplicate_keys(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(None, None, "a key that is a list or a mapping",
                                                    key_node.start_mark) from None
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicate_keys)


def load_budgets(path: Path) -> list[Budget]:
    """Parse and validate a budgets file, failing with the file and line of the first problem. An empty
    file is an error (a file that lost its content must not lift every limit): write ``budgets: []``."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BudgetFileError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from exc
    except OSError as exc:
        raise BudgetFileError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    try:
        raw = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader that refuses duplicate keys
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or exc
        raise BudgetFileError(f"{path}{line}: not valid YAML: {problem}") from exc
    if raw is None:
        raise BudgetFileError(f"{path}: empty; write `budgets: []` for no budgets")
    try:
        return BudgetsFile.model_validate(raw).budgets
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = first["loc"]
        item = loc[1] if len(loc) > 1 and loc[0] == "budgets" else None
        line_no = _line_of(text, item) if isinstance(item, int) else None
        where = f"{path}:{line_no}" if line_no else str(path)
        field = ".".join(str(p) for p in loc)
        raise BudgetFileError(f"{where}: {field}: {first['msg']}") from exc


@dataclass(frozen=True)
class BudgetStatus:
    budget: Budget
    key: str
    spend: Decimal
    limit: Decimal
    projected: Decimal
    period_start: datetime
    reserved: Decimal | None = None
    """For a stop budget: what calls in flight hold against its counter now (``None``: unknown)."""



__all__ = ["ANY", "Budget", "BudgetExceeded", "BudgetFileError", "BudgetStatus", "BudgetsFile", "load_budgets",
           "retry_unless_budget"]
