"""The replica message codec: ``UPDATES`` and ``STATE`` messages to and from bytes.

``[UPDATES, [[origin, first_seq, [[deps | nil, name, tag, payload], ...]], ...]]`` carries
runs of consecutive updates of each origin; ``[STATE, sender, vector, fields]`` carries a
whole replica state. Decoding returns whole, checked objects or raises ``DecodeError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, final

from crdtmem import codec
from crdtmem.causality import check_vector
from crdtmem.codec import MAX_SEQ, as_actor, as_int, as_list, as_str
from crdtmem.crdt import CRDT, crdt_type
from crdtmem.errors import DecodeError
from crdtmem.ormap import decode_fields

UPDATES: Final = 1
STATE: Final = 2
MAX_FIELD_NAME: Final = 256

# One update in a per-origin log: (dependencies, field name, type tag, packed delta).
LogEntry = tuple[dict[str, int], str, int, bytes]
# Consecutive updates of one origin: (origin, seq of the first, entries).
Run = tuple[str, int, list[LogEntry]]
Fields = dict[str, dict[int, CRDT]]


@final
@dataclass(frozen=True, slots=True)
class Update:
    """One decoded update: ``delta`` for field ``name`` (type ``tag``), the ``seq``-th
    update of ``origin``, made once ``deps`` were applied there; ``wire`` is the delta
    as it came, to be re-packed for the log."""

    origin: str
    seq: int
    deps: dict[str, int]
    name: str
    tag: int
    delta: CRDT
    wire: Any


@final
@dataclass(frozen=True, slots=True)
class StateMessage:
    """A decoded full state: ``sender``'s ``fields`` and the version ``vector`` they hold."""

    sender: str
    vector: dict[str, int]
    fields: Fields


def array_header(length: int) -> bytes:
    """The msgpack header of an array of ``length`` items."""
    if length < 16:
        return bytes([0x90 | length])
    if length < 1 << 16:
        return b"\xdc" + length.to_bytes(2, "big")
    return b"\xdd" + length.to_bytes(4, "big")


_ENTRY_HEADER: Final = array_header(4)
# Bytes an entry costs besides its payload and name: headers, tag, a dependency vector.
ENTRY_OVERHEAD: Final = 48


def updates_message(runs: list[Run]) -> bytes:
    """``[UPDATES, [[origin, first_seq, [[deps | nil, name, tag, payload], ...]], ...]]``.

    Spliced together from the log's pre-packed payloads rather than re-packed: msgpack
    concatenates, so an array header followed by its packed items is the packed array.
    Dependencies are sent once per run while they stay the same (nil after the first).
    """
    pack = codec.pack_body
    parts = [codec.HEADER, array_header(2), pack(UPDATES), array_header(len(runs))]
    for origin, first, entries in runs:
        parts += [array_header(3), pack(origin), pack(first), array_header(len(entries))]
        previous: dict[str, int] | None = None
        for deps, name, tag, payload in entries:
            same = previous is not None and (deps is previous or deps == previous)
            parts += [
                _ENTRY_HEADER,
                pack(None if same else dict(sorted(deps.items()))),
                pack(name),
                pack(tag),
                payload,
            ]
            previous = deps
    return b"".join(parts)


def state_message(sender: str, vector: dict[str, int], fields: Fields) -> bytes:
    """``[STATE, sender, vector, [[name, [[tag, state], ...]], ...]]``, sorted."""
    wire = [
        [name, [[tag, entries[tag].to_wire()] for tag in sorted(entries)]]
        for name, entries in sorted(fields.items())
    ]
    return codec.pack([STATE, sender, dict(sorted(vector.items())), wire])


def decode_message(message: bytes) -> list[Update] | StateMessage:
    """The updates or the state ``message`` holds; ``DecodeError`` if it is malformed."""
    body = as_list(codec.unpack(message), "message")
    kind = body[0] if body else None
    if kind == UPDATES and len(body) == 2:
        return decode_updates(body[1])
    if kind == STATE and len(body) == 4:
        _, sender_obj, vector_obj, fields_obj = body
        return StateMessage(
            as_actor(sender_obj, "state sender"),
            check_vector(vector_obj, "state version"),
            decode_fields(fields_obj, "state field"),
        )
    raise DecodeError(f"unknown message kind {codec.brief(kind)} or wrong length")


def decode_updates(obj: object) -> list[Update]:
    """The updates of an ``UPDATES`` message body: a list of runs."""
    updates: list[Update] = []
    for run in as_list(obj, "updates"):
        origin_obj, first_obj, entries_obj = as_list(run, "update run", 3)
        origin = as_actor(origin_obj, "update origin")
        seq = as_int(first_obj, "first sequence number", 1, MAX_SEQ)
        deps: dict[str, int] | None = None
        for entry in as_list(entries_obj, "update entries"):
            deps_obj, name_obj, tag_obj, payload = as_list(entry, "update", 4)
            if deps_obj is not None:
                deps = check_vector(deps_obj, "update dependencies")
                if origin in deps:
                    raise DecodeError("update dependencies name the update's own origin")
            elif deps is None:
                raise DecodeError("the first update of a run must carry its dependencies")
            name = as_str(name_obj, "field name")
            if not 0 < len(name) <= MAX_FIELD_NAME:
                raise DecodeError(f"field name must have 1 to {MAX_FIELD_NAME} characters")
            kind = crdt_type(as_int(tag_obj, "type tag"))
            delta = kind.from_wire(payload)
            if seq > MAX_SEQ:  # (a run that starts in range may still end past it)
                raise DecodeError(f"sequence number {seq} of {origin!r} exceeds {MAX_SEQ}")
            updates.append(Update(origin, seq, deps, name, kind.TAG, delta, payload))
            seq += 1
    return updates


def decode_stored_update(origin: object, seq: object, entry: object) -> Update:
    """An update as storage keeps it: ``entry`` is ``[deps, name, tag, packed delta]``."""
    deps, name, tag, payload = as_list(entry, "stored update", 4)
    wire = codec.unpack_body(codec.as_bytes(payload, "stored update"))
    (update,) = decode_updates([[origin, seq, [[deps, name, tag, wire]]]])
    return update
