"""Revisions, oldest first: r0001 (the five event tables), r0002 (``scores``)."""
