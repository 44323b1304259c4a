"""The sinks' registry: their entry points, found by name, and what to say when one cannot be loaded.

Apart from :mod:`vital_callbacks.runtime.factory`, which builds a whole runtime (price book, budgets,
processors), so that a sink's child process and the CLI's checks load a sink without importing
LangChain and the price catalog, which they never use.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from vital_callbacks.sinks.base import Sink

GROUP = "vital_callbacks.sinks"
"""The one registry of sinks, ours included (declared in pyproject.toml)."""

EXTRAS = {"prometheus": "prometheus", "langfuse": "langfuse", "otel": "otel", "sql": "postgres"}
"""The extra that installs what a built-in sink needs."""


class UnknownSinkError(ValueError):
    pass


def sink_class(name: str) -> type[Sink]:
    """The sink class registered under ``name`` in the ``vital_callbacks.sinks`` group."""
    points = entry_points(group=GROUP)
    for ep in points:
        if ep.name == name:
            return ep.load()  # type: ignore[no-any-return]
    known = ", ".join(sorted(ep.name for ep in points)) or "none (is vital-callbacks installed?)"
    raise UnknownSinkError(f"unknown sink {name!r} in VITAL_SINKS; known: {known}")


def describe_build_error(name: str, exc: BaseException) -> str:
    """One line saying why sink ``name`` could not be built, with the install hint for a missing extra."""
    if isinstance(exc, ModuleNotFoundError) and name in EXTRAS:
        return (f"sink {name!r} needs a package that is not installed ({exc.name}): "
                f"pip install 'vital-callbacks[{EXTRAS[name]}]'")
    return f"sink {name!r} could not be built: {type(exc).__name__}: {exc}"
