"""The faster ``__init__`` of the frozen event classes behaves exactly like the one ``dataclasses`` writes."""

from __future__ import annotations

import dataclasses
import inspect
import pickle
from decimal import Decimal
from typing import Any

import pytest

from vital_callbacks.attribution import Attribution
from vital_callbacks.events import (
    Cost,
    Event,
    GraphRun,
    LLMCall,
    NodeRun,
    RetrieverCall,
    Score,
    TokenUsage,
    ToolCall,
)

CLASSES = [TokenUsage, Cost, Event, GraphRun, NodeRun, LLMCall, ToolCall, RetrieverCall, Score, Attribution]


def reference(cls: type) -> type:
    """The same class as ``dataclasses`` alone would make it (its own generated ``__init__``)."""
    specs = []
    for f in dataclasses.fields(cls):
        kwargs: dict[str, Any] = {"kw_only": f.kw_only}
        if f.default is not dataclasses.MISSING:
            kwargs["default"] = f.default
        if f.default_factory is not dataclasses.MISSING:
            kwargs["default_factory"] = f.default_factory
        specs.append((f.name, f.type, dataclasses.field(**kwargs)))
    return dataclasses.make_dataclass(cls.__name__, specs, frozen=True, slots=True)


def values(obj: object) -> tuple[Any, ...]:
    return tuple(getattr(obj, f.name) for f in dataclasses.fields(obj))  # type: ignore[arg-type]


def sample(cls: type, *, required_only: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, f in enumerate(dataclasses.fields(cls)):
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        if required_only and has_default:
            continue
        out[f.name] = f"value-{i}" if "str" in str(f.type) else i
    return out


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_same_signature_as_the_generated_init(cls: type) -> None:
    ours = inspect.signature(cls.__init__).parameters
    theirs = inspect.signature(reference(cls).__init__).parameters
    assert list(ours) == list(theirs)
    for name in ours:
        assert ours[name].kind == theirs[name].kind, name
        mine, generated = ours[name].default, theirs[name].default
        if generated is inspect.Parameter.empty or repr(generated) != "<factory>":
            assert mine == generated, name
        else:
            assert mine is not inspect.Parameter.empty, name


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("required_only", [True, False], ids=["defaults", "every-field"])
def test_same_values_as_the_generated_init(cls: type, required_only: bool) -> None:
    kwargs = sample(cls, required_only=required_only)
    assert values(cls(**kwargs)) == values(reference(cls)(**kwargs))


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_same_errors_as_the_generated_init(cls: type) -> None:
    kwargs = sample(cls, required_only=True)
    ref = reference(cls)
    for broken in ({**kwargs, "no_such_field": 1}, {k: v for k, v in list(kwargs.items())[1:]}):
        if broken == kwargs:
            continue  # a class with no required field has nothing to leave out
        with pytest.raises(TypeError):
            ref(**broken)
        with pytest.raises(TypeError):
            cls(**broken)


def test_still_frozen_comparable_hashable_picklable_and_replaceable() -> None:
    call = LLMCall(run_id="r", parent_run_id=None, trace_id="r", usage=TokenUsage(1, 2, 3),
                   cost=Cost(Decimal("0.1"), Decimal("0.2"), Decimal("0.3")))
    with pytest.raises(dataclasses.FrozenInstanceError):
        call.model = "x"  # type: ignore[misc]
    assert call == pickle.loads(pickle.dumps(call))
    assert hash(TokenUsage(1, 2, 3)) == hash(TokenUsage(1, 2, 3))
    assert dataclasses.replace(call, model="m").model == "m"
    assert TokenUsage(1, 2, 3) == TokenUsage(input=1, output=2, total=3)
    # A default factory gives each instance its own value, as before.
    first, second = (GraphRun(run_id=i, parent_run_id=None, trace_id=i) for i in "ab")
    assert first.usage == second.usage == TokenUsage() and first.usage is not second.usage
    assert repr(TokenUsage(1)) == "TokenUsage(input=1, output=0, total=0, cache_read=0, cache_write=0, reasoning=0, " \
                                  "cache_write_1h=0)"


def test_classes_whose_init_it_cannot_copy_are_refused() -> None:
    """``__post_init__``, ``init=False`` and ``InitVar`` would be silently wrong: refused instead."""
    from dataclasses import InitVar, dataclass, field

    from vital_callbacks._slots import fast_init

    @dataclass(frozen=True, slots=True)
    class PostInit:
        x: int = 0

        def __post_init__(self) -> None:
            pass

    @dataclass(frozen=True, slots=True)
    class NotInInit:
        x: int = 0
        y: int = field(default=5, init=False)

    @dataclass(frozen=True)
    class WithInitVar:
        x: int = 0
        scale: InitVar[int] = 1

    for cls in (PostInit, NotInInit, WithInitVar):
        with pytest.raises(TypeError, match="cannot copy"):
            fast_init(cls)
