"""What the SQL sink and its writer process say to each other over the child's stdin and stdout.

A frame is a 4-byte big-endian length and that many bytes. The first frame to the child is its
:class:`Setup`; each later one a batch, as :func:`vital_callbacks.core.codec.encode` writes it; each
frame back is the :class:`Reply` to one batch, as JSON.
"""

from __future__ import annotations

from typing import BinaryIO

import msgspec


class Setup(msgspec.Struct, frozen=True):
    """The first frame: where to write (sent on stdin, so a password never shows in ``ps``)."""

    url: str
    auto_migrate: bool


class Reply(msgspec.Struct):
    """The answer to one batch."""

    ok: bool
    dropped: list[tuple[int, str]] = []
    problem: str | None = None
    logs: list[tuple[int, str]] = []


def read_frame(stream: BinaryIO) -> bytes | None:
    """The next frame, or ``None`` at the end of the stream."""
    header = stream.read(4)
    if len(header) < 4:
        return None
    size = int.from_bytes(header, "big")
    body = stream.read(size)
    return body if len(body) == size else None


def frame(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body
