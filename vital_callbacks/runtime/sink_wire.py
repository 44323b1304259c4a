"""What a sink's worker and the child process running that sink say to each other (``VITAL_SINK_PROCESSES``).

Over the child's stdin and stdout, frames: a 4-byte big-endian length, then that many bytes. The first
frame to the child is its :class:`Setup` (JSON). Each later one is a request: one byte for what it asks,
then its payload; the child answers each with one :class:`Reply` (JSON).

* ``E``: export a batch. An 8-byte float, the seconds left before the shutdown deadline (negative: no
  deadline), then the batch as :func:`vital_callbacks.core.codec.encode` writes it.
* ``F``: force a flush of what the sink buffers itself. An 8-byte float, the seconds it may take.
* ``S``: shut the sink down (its last counts come back in the reply), then end. The same float.

A reply carries what the sink told its context since the previous reply, from any of its threads (an
SDK's exporter may count its losses later, on its own): nothing is told twice, nothing is left out.
"""

from __future__ import annotations

import struct
from typing import Any, BinaryIO

import msgspec

EXPORT, FLUSH, SHUTDOWN = b"E", b"F", b"S"
_SECONDS = struct.Struct(">d")


class Setup(msgspec.Struct, frozen=True):
    """Which sink to build, from which settings (sent on stdin: a password never shows in ``ps``)."""

    sink: str
    settings: dict[str, Any]


class Reply(msgspec.Struct):
    """The answer to one request: the sink's result, and everything it told its context meanwhile."""

    ok: bool = True
    dropped: list[tuple[int, str]] = []
    """``SinkContext.dropped`` calls: events lost after an export (rows the store rejected)."""
    recovered: list[tuple[int, int, str]] = []
    """``SinkContext.recovered`` calls: events read back from the sink's own disk (spill files)."""
    problem: str | None = None
    """What stops the sink now, as it last reported it."""
    logs: list[tuple[int, str]] = []
    """The sink's log records (level, text), for the parent's logging."""


def frame(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


def request(op: bytes, seconds: float | None, body: bytes = b"") -> bytes:
    return frame(op + _SECONDS.pack(-1.0 if seconds is None else seconds) + body)


def parse_request(data: bytes) -> tuple[bytes, float | None, bytes]:
    """A request's op, its seconds (``None``: no deadline) and its payload."""
    (seconds,) = _SECONDS.unpack_from(data, 1)
    return data[:1], None if seconds < 0 else seconds, data[1 + _SECONDS.size:]


def read_frame(stream: BinaryIO) -> bytes | None:
    """The next frame from a blocking stream, or ``None`` at its end."""
    header = stream.read(4)
    if len(header) < 4:
        return None
    size = int.from_bytes(header, "big")
    body = stream.read(size)
    return body if len(body) == size else None
