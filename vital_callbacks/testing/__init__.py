"""Helpers for testing your own instrumentation: deterministic chat models and the demo agent."""
