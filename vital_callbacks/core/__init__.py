"""The data core: events, settings, attribution, scores, redaction. Imports nothing else of the package."""
