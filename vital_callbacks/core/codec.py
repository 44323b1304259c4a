"""Events as bytes: a batch as one line of JSON for the journal, as MessagePack for a sink in a process of its own.

msgspec encodes and decodes the frozen event structs in C (a few µs per event), with no conversion
to dictionaries first. A journal line is the event count, a space, then ``[[kind, event], ...]`` and
a newline: the count stays readable in a line cut short by a ``kill``, and the file by a person.
What travels to a sink's process is the same list in MessagePack (:func:`pack`): faster both ways
(see ``benchmarks/RESULTS.md``), and it carries every float as it is (JSON has no infinity or NaN), so
the child stores what the sink would have stored here.
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
_packer = msgspec.msgpack.Encoder(enc_hook=_unencodable)
_pack_decoder = msgspec.msgpack.Decoder(list[tuple[str, msgspec.Raw]])
_unpackers = {kind: msgspec.msgpack.Decoder(cls) for kind, cls in EVENT_CLASSES.items()}


def encode(events: Sequence[Event]) -> bytes:
    """One line: the event count, then the events with their kinds."""
    return b"%d " % len(events) + _encoder.encode([(event.kind, event) for event in events]) + b"\n"


def decode(body: bytes) -> list[Event]:
    """The events of a line's body (what follows the count); raises ``msgspec.DecodeError`` (a
    ``ValueError``) when damaged."""
    return [_decoders[kind].decode(raw) for kind, raw in _line_decoder.decode(body)]


def pack(events: Sequence[Event]) -> bytes:
    """The events with their kinds, in MessagePack (no count, no line: for a frame that has a length).
    An event MessagePack cannot hold (an integer past 64 bits) goes as one of no kind, which
    :func:`unpack_each` counts as not decoded: the rest of the batch travels."""
    try:
        return _packer.encode([(event.kind, event) for event in events])
    except (OverflowError, TypeError, ValueError):
        return _packer.encode([_packable(event) for event in events])


def _packable(event: Event) -> tuple[str, object]:
    try:
        _packer.encode(event)
    except (OverflowError, TypeError, ValueError):
        return ("", None)
    return (event.kind, event)


def unpack_each(data: bytes) -> tuple[list[Event], int]:
    """The events :func:`pack` wrote, one at a time: those that decode, and how many do not (a value
    the encoder does not know, written as nil where the event needs one). Raises
    ``msgspec.DecodeError`` when the data itself is damaged."""
    events: list[Event] = []
    bad = 0
    for kind, raw in _pack_decoder.decode(data):
        try:
            events.append(_unpackers[kind].decode(raw))
        except (msgspec.DecodeError, KeyError):
            bad += 1
    return events, bad
