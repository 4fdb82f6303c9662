"""OR-map: a map from ``str`` keys to nested CRDT fields (Riak DT map semantics).

Key presence is an add-wins OR-set of keys; every update of a nested field re-adds its
key with a fresh dot, so an update concurrent with a remove survives it. A remove also
*resets* the nested field: it joins in the field's reset delta, which undoes exactly the
effects the remover had observed (counters raise their floor, sets and lists drop the
observed elements, registers are overwritten with ``None``). Effects concurrent with the
remove survive, so the map never resurrects what was removed.

A key may, through concurrent first uses on two replicas, hold fields of two types; both
are kept and merged, and readers see the one with the lowest type tag, on every replica.

>>> from crdtmem.crdt import Writer
>>> from crdtmem.pncounter import PNCounter
>>> m = ORMap.empty(); w = Writer.fixed("a")
>>> votes = PNCounter.empty()
>>> m.absorb(m.update_delta(w, "votes", votes.increment_delta(w, 2)))
>>> m.value()
{'votes': 2}
"""

from __future__ import annotations

from typing import Any, Self, final

from crdtmem.codec import MAX_MAP_DEPTH, as_int, as_list, as_str, brief
from crdtmem.crdt import CRDT, CrdtBase, Writer, crdt_type, register_type
from crdtmem.errors import DecodeError
from crdtmem.orset import ORSet


def visible(entries: dict[int, CRDT]) -> CRDT:
    """The field readers see when one name holds several types: the lowest tag."""
    return entries[min(entries)]


@final
@register_type
class ORMap(CrdtBase):
    """Observed-remove map of nested CRDTs with update-wins and observed-reset removal."""

    TAG = 7
    KIND = "map"
    __slots__ = ("fields", "keys")

    def __init__(self, keys: ORSet | None = None, fields: dict[str, dict[int, CRDT]] | None = None):
        self.keys = keys if keys is not None else ORSet()
        self.fields: dict[str, dict[int, CRDT]] = fields if fields is not None else {}

    @classmethod
    def empty(cls) -> Self:
        return cls()

    def value(self) -> dict[str, Any]:
        present = sorted(k for k in self.keys.elements.values() if k in self.fields)
        return {key: visible(self.fields[key]).value() for key in present}

    def __contains__(self, key: object) -> bool:
        return key in self.keys

    def field(self, key: str, tag: int) -> CRDT | None:
        """The nested state of type ``tag`` under ``key``, if any."""
        entries = self.fields.get(key)
        return None if entries is None else entries.get(tag)

    def update_delta(self, writer: Writer, key: str, nested: CRDT) -> ORMap:
        """A delta applying ``nested`` (a delta of the field under ``key``) and keeping
        the key present."""
        if type(key) is not str:
            raise TypeError(f"map keys are str, got {type(key).__name__}")
        return ORMap(self.keys.add_delta(writer, key), {key: {nested.TAG: nested}})

    def remove_delta(self, writer: Writer, key: str) -> ORMap:
        """A delta removing ``key`` and resetting what its field had observed."""
        if type(key) is not str:
            raise TypeError(f"map keys are str, got {type(key).__name__}")
        resets = {tag: state.reset_delta(writer) for tag, state in self.fields.get(key, {}).items()}
        return ORMap(self.keys.discard_delta(writer, key), {key: resets} if resets else {})

    def absorb(self, other: ORMap) -> None:
        self.keys.absorb(other.keys)
        fields = self.fields
        for key, entries in other.fields.items():
            mine = fields.get(key)
            if mine is None:
                mine = fields[key] = {}
            for tag, state in entries.items():
                current = mine.get(tag)
                if current is None:
                    mine[tag] = state.copy()
                else:
                    current.absorb(state)

    def copy(self) -> Self:
        fields = {k: {t: s.copy() for t, s in e.items()} for k, e in self.fields.items()}
        return type(self)(self.keys.copy(), fields)

    def reset_delta(self, writer: Writer) -> ORMap:
        fields = {
            key: {tag: state.reset_delta(writer) for tag, state in entries.items()}
            for key, entries in self.fields.items()
        }
        return ORMap(self.keys.reset_delta(writer), fields)

    def to_wire(self) -> list[Any]:
        # Loops, not comprehensions, and no sort of one item: a delta holds one field.
        fields = []
        for key, entries in (
            sorted(self.fields.items()) if len(self.fields) > 1 else self.fields.items()
        ):
            states = []
            for tag in sorted(entries) if len(entries) > 1 else entries:
                states.append([tag, entries[tag].to_wire()])
            fields.append([key, states])
        return [self.keys.to_wire(), fields]

    @classmethod
    def from_wire(cls, obj: object, depth: int = 0) -> Self:
        if depth >= MAX_MAP_DEPTH:
            raise DecodeError(f"maps nested deeper than {MAX_MAP_DEPTH} levels")
        keys_obj, fields_obj = as_list(obj, "map", 2)
        keys = ORSet.from_wire(keys_obj)
        if any(type(k) is not str for k in keys.elements.values()):
            raise DecodeError("map keys must be str")
        return cls(keys, decode_fields(fields_obj, "map field", depth + 1))


def decode_fields(obj: object, what: str, depth: int = 0) -> dict[str, dict[int, CRDT]]:
    """Decode ``[[name, [[tag, state], ...]], ...]``: named fields, each holding one
    state per type tag (the shape of a map's fields and of a replica's full state)."""
    fields: dict[str, dict[int, CRDT]] = {}
    for item in as_list(obj, f"{what}s"):
        name_obj, entries_obj = as_list(item, what, 2)
        name = as_str(name_obj, f"{what} name")
        # (a name may be long: error messages show it cut short)
        named = f"{what} {brief(name)}"
        if name in fields:
            raise DecodeError(f"{named} repeated")
        entries: dict[int, CRDT] = {}
        for entry in as_list(entries_obj, named):
            tag_obj, state_obj = as_list(entry, named, 2)
            kind = crdt_type(as_int(tag_obj, "type tag"))
            if kind.TAG in entries:
                raise DecodeError(f"{named}: type tag {kind.TAG} repeated")
            entries[kind.TAG] = kind.from_wire(state_obj, depth)
        if not entries:  # (a field is made by its first write: it always has a type)
            raise DecodeError(f"{named}: a field without a type")
        fields[name] = entries
    return fields
