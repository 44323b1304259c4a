"""The runtime: the one owner of the pipeline, sinks, price book, budgets and their lifecycle."""

from vital_callbacks.runtime.pipeline import Pipeline, PipelineStats
from vital_callbacks.runtime.runtime import (
    Runtime,
    default_runtime,
    environment_settings,
    runtime_for,
    shutdown_default,
)

__all__ = ["Pipeline", "PipelineStats", "Runtime", "default_runtime", "environment_settings", "runtime_for",
           "shutdown_default"]
