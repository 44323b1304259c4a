"""A faster ``__init__`` for the frozen, slotted dataclasses built once or more per LLM call.

``dataclasses`` gives a frozen class an ``__init__`` that sets every field with
``object.__setattr__(self, name, value)`` (a global lookup, an attribute lookup and a call per field),
because the class's own ``__setattr__`` refuses. An event is built for every call the pipeline sees,
so that was ~3 µs of the dispatcher's ~10 µs per LLM call. The replacement keeps the exact signature
(positional and keyword-only parameters, defaults, default factories, the same ``TypeError`` for a
missing or unknown argument) and sets each slot through its own descriptor, as
``object.__setattr__`` ends up doing; ``tests/test_slots.py`` checks it against the generated one.
Classes it cannot copy exactly (``__post_init__``, ``init=False`` fields, ``InitVar``) are refused.
"""

from __future__ import annotations

from dataclasses import MISSING, InitVar, fields
from typing import Any, TypeVar

_C = TypeVar("_C", bound=type)


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<factory>"  # as dataclasses shows it


_FACTORY = _Missing()


def init_source(cls: type) -> tuple[str, dict[str, Any]]:
    """The Python source of the faster ``__init__`` of ``cls``, and the names it uses."""
    unsupported = [f.name for f in fields(cls) if not f.init] + [
        name for name, f in cls.__dataclass_fields__.items()  # type: ignore[attr-defined]
        if isinstance(f.type, InitVar) or str(f.type).startswith(("InitVar", "dataclasses.InitVar"))]
    if hasattr(cls, "__post_init__") or unsupported:
        raise TypeError(f"fast_init cannot copy the __init__ of {cls.__qualname__}: it has __post_init__, "
                        f"init=False fields or InitVars ({unsupported or '__post_init__'})")
    namespace: dict[str, Any] = {"_FACTORY": _FACTORY}
    positional: list[str] = []
    keyword: list[str] = []
    body: list[str] = []
    for index, field in enumerate(fields(cls)):
        owner = next(k for k in cls.__mro__ if field.name in vars(k))
        namespace[f"_set{index}"] = vars(owner)[field.name].__set__  # the slot's member descriptor
        if field.default is not MISSING:
            namespace[f"_default{index}"] = field.default
            parameter = f"{field.name}=_default{index}"
        elif field.default_factory is not MISSING:
            namespace[f"_factory{index}"] = field.default_factory
            parameter = f"{field.name}=_FACTORY"
            body.append(f"    if {field.name} is _FACTORY:\n        {field.name} = _factory{index}()")
        else:
            parameter = field.name
        (keyword if field.kw_only else positional).append(parameter)
        body.append(f"    _set{index}(self, {field.name})")
    signature = ", ".join(["self", *positional, *(["*", *keyword] if keyword else [])])
    return f"def __init__({signature}):\n" + "\n".join(body or ["    pass"]) + "\n", namespace


def fast_init(cls: _C) -> _C:
    """Class decorator (under ``@dataclass(frozen=True, slots=True)``): swap in the faster ``__init__``."""
    source, namespace = init_source(cls)
    exec(compile(source, f"<vital_callbacks {cls.__qualname__}.__init__>", "exec"), namespace)
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    generated = vars(cls)["__init__"]
    init.__doc__ = generated.__doc__
    init.__annotations__ = dict(generated.__annotations__)
    type.__setattr__(cls, "__init__", init)
    return cls
