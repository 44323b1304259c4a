"""Processing on the dispatcher thread: read -> estimate -> price -> budget -> roll-up -> redact."""

from vital_callbacks.enrich.chain import Enricher

__all__ = ["Enricher"]
