"""What a sink's worker and the child process running that sink say to each other (``VITAL_SINK_PROCESSES``).

One Unix socket pair between the two (a socket, so a write to a child that died fails instead of
raising SIGPIPE in the application, and the child's stdout stays free for whatever prints there).
Frames: a 4-byte big-endian length, a 1-byte type, then the payload.

To the child: ``s`` its :class:`Setup` (JSON), first; then requests, each a 4-byte sequence number, an
8-byte float (the seconds the child may take: the shutdown deadline, or a flush's timeout; negative for
none) and a payload: ``E`` export a batch (the payload as :func:`vital_callbacks.core.codec.pack`
writes it), ``F`` force a flush, ``Q`` shut the sink down and end.

From the child: ``H`` it is alive (once its sink is built, then every second while it works: a
migration may take long, a hung child is one that says nothing); ``T`` what the sink told its context
or logged (JSON :class:`Told`), sent the moment it happens, from any thread, with the request it
happened in, and, between requests, how many events the sink holds undelivered (see
:attr:`Told.in_flight`); ``R`` the :class:`Result` of one request, by its sequence number.
"""

from __future__ import annotations

import struct
from typing import Any

import msgspec

SETUP, EXPORT, FLUSH, QUIT = b"s", b"E", b"F", b"Q"
ALIVE, TOLD, RESULT = b"H", b"T", b"R"
MAX_FRAME = 256 * 1024 * 1024
"""A longer length is not a frame: the stream is damaged."""
_REQUEST = struct.Struct(">Id")


class Setup(msgspec.Struct, frozen=True):
    """Which sink to build, from which settings (sent over the socket: a password never shows in ``ps``)."""

    sink: str
    settings: dict[str, Any]
    log_level: int = 20


class Told(msgspec.Struct):
    """``SinkContext`` calls and log records of the sink in the child."""

    seq: int = 0
    """The request the child was working on (0: none, a report from one of the sink's own threads)."""
    dropped: list[tuple[int, str]] = []
    recovered: list[tuple[int, int, str]] = []
    problem: list[str | None] = []
    """The sink's ``problem`` reports, in order (``None``: solved)."""
    logs: list[tuple[int, str]] = []
    in_flight: int | None = None
    """What the sink holds undelivered, read as this report was sent, between requests only (with the
    reports of the sink's own threads, and from the heartbeat each second while it holds any, and once
    when that is back to none); ``None``: not said (a request runs, and the batch in hand is not counted)."""


class Result(msgspec.Struct, frozen=True):
    seq: int
    ok: bool
    in_flight: int = 0
    """What the sink holds undelivered after this request (``Sink.in_flight``): lost if the child dies."""


def frame_size(header: bytes) -> int | None:
    """The length a frame's 4-byte header gives; ``None`` when it is no frame's (the stream is damaged)."""
    size = int.from_bytes(header, "big")
    return size if 0 < size <= MAX_FRAME else None


def frame(kind: bytes, body: bytes = b"") -> bytes:
    return (len(body) + 1).to_bytes(4, "big") + kind + body


def request(kind: bytes, seq: int, seconds: float | None, body: bytes = b"") -> bytes:
    return frame(kind, _REQUEST.pack(seq, -1.0 if seconds is None else seconds) + body)


def parse_request(payload: bytes) -> tuple[int, float | None, bytes]:
    """A request's sequence number, its seconds (``None``: no limit) and its body."""
    seq, seconds = _REQUEST.unpack_from(payload)
    return seq, None if seconds < 0 else seconds, payload[_REQUEST.size:]
