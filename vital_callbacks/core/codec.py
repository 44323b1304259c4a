"""Events as bytes: one batch as one line of JSON, for the journal and for a sink in a process of its own.

msgspec encodes and decodes the frozen event structs in C (a few µs per event), with no conversion
to dictionaries first. A line is the event count, a space, then ``[[kind, event], ...]`` and a
newline: the count stays readable in a line cut short by a ``kill``.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from vital_callbacks.core.events import EVENT_CLASSES, Event


def _unencodable(value: object) -> None:
    """Worker-only leftovers (the raw LangChain objects of an event passed on as captured) are not
    part of what a sink stores: written as null."""
    return None


_encoder = msgspec.json.Encoder(enc_hook=_unencodable)
_line_decoder = msgspec.json.Decoder(list[tuple[str, msgspec.Raw]])
_decoders = {kind: msgspec.json.Decoder(cls) for kind, cls in EVENT_CLASSES.items()}


def encode(events: Sequence[Event]) -> bytes:
    """One line: the event count, then the events with their kinds."""
    return b"%d " % len(events) + _encoder.encode([(event.kind, event) for event in events]) + b"\n"


def decode(body: bytes) -> list[Event]:
    """The events of a line's body (what follows the count); raises ``msgspec.DecodeError`` (a
    ``ValueError``) when damaged."""
    return [_decoders[kind].decode(raw) for kind, raw in _line_decoder.decode(body)]


def decode_each(body: bytes) -> tuple[list[Event], int]:
    """The events of a line's body one at a time: those that decode, and how many do not (a value JSON
    cannot carry, such as an infinite float, written as null where a number must be). Raises
    ``msgspec.DecodeError`` when the line itself is damaged."""
    events: list[Event] = []
    bad = 0
    for kind, raw in _line_decoder.decode(body):
        try:
            events.append(_decoders[kind].decode(raw))
        except (msgspec.DecodeError, KeyError):
            bad += 1
    return events, bad
