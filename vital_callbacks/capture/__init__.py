"""The caller's thread: the callback handler (a cheap view on a runtime) and its run map."""

from vital_callbacks.capture.handler import VitalCallbackHandler, score

__all__ = ["VitalCallbackHandler", "score"]
