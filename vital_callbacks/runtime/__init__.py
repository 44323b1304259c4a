"""The runtime: the one owner of the pipeline, sinks, price book, budgets and their lifecycle.

The names below are imported on first use (PEP 562), so a module of this package that needs none of
them (a sink's child process, :mod:`vital_callbacks.runtime.sink_child`) does not import LangChain and
the price catalog with them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vital_callbacks.core.lazy import lazy_names

if TYPE_CHECKING:
    from vital_callbacks.runtime.pipeline import Pipeline, PipelineStats
    from vital_callbacks.runtime.runtime import (
        Runtime,
        default_runtime,
        environment_settings,
        runtime_for,
        shutdown_default,
    )

_HOMES = {
    "Pipeline": "vital_callbacks.runtime.pipeline",
    "PipelineStats": "vital_callbacks.runtime.pipeline",
    "Runtime": "vital_callbacks.runtime.runtime",
    "default_runtime": "vital_callbacks.runtime.runtime",
    "environment_settings": "vital_callbacks.runtime.runtime",
    "runtime_for": "vital_callbacks.runtime.runtime",
    "shutdown_default": "vital_callbacks.runtime.runtime",
}

__all__ = ["Pipeline", "PipelineStats", "Runtime", "default_runtime", "environment_settings", "runtime_for",
           "shutdown_default"]


if not TYPE_CHECKING:  # type checkers see the imports above; an unknown name stays an error there
    __getattr__, __dir__ = lazy_names(__name__, _HOMES, globals())
