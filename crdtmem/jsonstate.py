"""JSON export and import of a replica's state (``Replica.to_json``, ``Replica.from_json``).

The export is a plain structure that ``json.dumps`` accepts as it is, and the same
state always gives the same structure (``json.dumps(..., sort_keys=True)`` then gives
the same bytes on every replica)::

    {"format": "crdtmem-json/1",
     "fields": {"findings": {"type": "list", "value": ["GDP growth at 7.2%"]},
                "votes": {"type": "counter", "value": 3},
                "notes": {"type": "map", "value": {"alice": {"type": "text", "value": "hi"}}}}}

Every field (and every key of a map) records its CRDT type by the name of the accessor
that makes it (``gcounter``, ``counter``, ``register``, ``mvregister``, ``set``,
``list``, ``map``, ``text``), so an import recreates each field with its type. Values:

- counters: ``int``; text: ``str``; a list: its items in order; a map: an object of
  its keys, each ``{"type", "value"}`` again.
- a set: its elements as a list sorted by their canonical encoding (msgpack bytes), an
  order defined for mixed types (``1``, ``1.0``, ``True`` and ``"1"`` stay four
  elements); a multi-value register: its concurrent values as a list in the same order.
- stored values: JSON as they are, except ``bytes`` (``{"$bytes": "<base64>"}``), a
  float that JSON cannot hold (``{"$float": "nan"}``, ``"inf"``, ``"-inf"``; a NaN of
  other bits ``"nan:<its 8 bytes in hex>"``), and a
  dict whose only key is one of those markers or ``"$dict"`` (``{"$dict": {...}}``,
  keys taken as they are), so that every stored value comes back exactly.

``import_state`` writes such a document into a replica as ordinary local writes (peers
converge to them like to any write), bringing each field it names to the exported value;
fields it does not name are left alone.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, Protocol

from crdtmem.codec import check_value, value_key
from crdtmem.crdt import CRDT
from crdtmem.errors import TypeMismatch, UnsupportedValue
from crdtmem.fields import (
    CounterField,
    GCounterField,
    ListField,
    MapField,
    MVRegisterField,
    RegisterField,
    SetField,
    TextField,
)
from crdtmem.gcounter import GCounter
from crdtmem.lwwregister import LWWRegister
from crdtmem.mvregister import MVRegister
from crdtmem.ormap import ORMap, visible
from crdtmem.orset import ORSet
from crdtmem.pncounter import PNCounter
from crdtmem.rga import RGA
from crdtmem.text import TextCRDT

__all__ = ["FORMAT", "KINDS", "decode_value", "encode_value", "export_state", "import_state"]

FORMAT: Final = "crdtmem-json/1"
# The type names an export records, in type-tag order: the accessor names.
KINDS: Final = ("gcounter", "counter", "register", "mvregister", "set", "list", "map", "text")
_BYTES: Final = "$bytes"
_FLOAT: Final = "$float"
_DICT: Final = "$dict"
_MARKERS: Final = frozenset({_BYTES, _FLOAT, _DICT})
_NON_FINITE: Final = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_DOUBLE: Final = struct.Struct(">d")
_NAN_BITS: Final = _DOUBLE.pack(math.nan)
# The key of the placeholder an import writes and removes at once to create an empty map
# (a field exists only once it has been written).
_PLACEHOLDER: Final = "$placeholder"


# --- values ------------------------------------------------------------------------


def encode_value(value: Any) -> Any:
    """A stored value (see ``crdtmem.codec.check_value``) as a JSON-ready structure."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is float:
        if math.isfinite(value):
            return value
        if not math.isnan(value):
            return {_FLOAT: "inf" if value > 0 else "-inf"}
        bits = _DOUBLE.pack(value)
        # (a NaN with another sign or payload keeps its bits: stored values come back exactly)
        return {_FLOAT: "nan" if bits == _NAN_BITS else f"nan:{bits.hex()}"}
    if kind is bytes:
        return {_BYTES: base64.b64encode(value).decode("ascii")}
    if kind is list:
        return [encode_value(item) for item in value]
    if kind is dict:
        encoded = {key: encode_value(item) for key, item in value.items()}
        if len(value) == 1 and next(iter(value)) in _MARKERS:
            return {_DICT: encoded}
        return encoded
    raise UnsupportedValue(f"not a stored value: {kind.__name__}")


def decode_value(obj: Any, where: str = "value") -> Any:
    """The stored value that :func:`encode_value` made ``obj`` from (``ValueError`` if
    ``obj`` is not such a structure)."""
    kind = type(obj)
    if kind is str or kind is int or kind is bool or kind is float or obj is None:
        return obj
    if kind is list:
        return [decode_value(item, where) for item in obj]
    if kind is not dict:
        raise ValueError(f"{where}: {kind.__name__} is not a JSON value")
    if len(obj) == 1:
        marker, inner = next(iter(obj.items()))
        if marker == _BYTES:
            if type(inner) is not str:
                raise ValueError(f"{where}: {_BYTES} holds base64 text")
            try:
                return base64.b64decode(inner, validate=True)
            except binascii.Error as exc:
                raise ValueError(f"{where}: bad base64 in {_BYTES}: {exc}") from None
        if marker == _FLOAT:
            return _non_finite(inner, where)
        if marker == _DICT:
            if type(inner) is not dict:
                raise ValueError(f"{where}: {_DICT} holds an object")
            obj = inner
    return {_key(key, where): decode_value(item, where) for key, item in obj.items()}


def _non_finite(text: object, where: str) -> float:
    if type(text) is str and text in _NON_FINITE:
        return _NON_FINITE[text]
    if type(text) is str and text.startswith("nan:"):
        try:
            value: float = _DOUBLE.unpack(bytes.fromhex(text[4:]))[0]
        except (ValueError, struct.error):
            value = 0.0
        if math.isnan(value):
            return value
    raise ValueError(f"{where}: {_FLOAT} is nan, inf, -inf or nan:<16 hex digits>")


def _key(key: object, where: str) -> str:
    if type(key) is not str:
        raise ValueError(f"{where}: object keys are str")
    return key


# --- export ------------------------------------------------------------------------


def _export_set(state: ORSet) -> list[Any]:
    # The set's own keys are the canonical encodings: sorting them costs no encoding.
    elements = state.elements
    return [encode_value(elements[key]) for key in sorted(elements)]


def _export_map(state: ORMap) -> dict[str, Any]:
    fields = state.fields
    return {key: export_field(visible(fields[key])) for key in sorted(fields) if key in state}


_EXPORTERS: Final[dict[type[CRDT], tuple[str, Callable[[Any], Any]]]] = {
    GCounter: ("gcounter", GCounter.value),
    PNCounter: ("counter", PNCounter.value),
    LWWRegister: ("register", lambda s: encode_value(s.value())),
    MVRegister: ("mvregister", lambda s: [encode_value(v) for v in s.value()]),
    ORSet: ("set", _export_set),
    RGA: ("list", lambda s: [encode_value(v) for v in s.value()]),
    ORMap: ("map", _export_map),
    TextCRDT: ("text", TextCRDT.value),
}


def export_field(state: CRDT) -> dict[str, Any]:
    """One field's state as ``{"type": name, "value": json_value}``."""
    kind, export = _EXPORTERS[type(state)]
    return {"type": kind, "value": export(state)}


def export_state(states: Mapping[str, CRDT], fields: Iterable[str] | None = None) -> dict[str, Any]:
    """The export document of the visible field states ``states`` (by name), or only of
    the names in ``fields`` that exist. The caller holds the replica's lock."""
    if isinstance(fields, str):
        raise TypeError("fields is a list of names, not a str")
    names = sorted(states) if fields is None else sorted(set(fields) & states.keys())
    return {"format": FORMAT, "fields": {name: export_field(states[name]) for name in names}}


# --- import ------------------------------------------------------------------------


class FieldParent(Protocol):
    """Where fields are made: a ``Replica`` (top-level fields) or a ``MapField``."""

    def gcounter(self, name: str) -> GCounterField: ...
    def counter(self, name: str) -> CounterField: ...
    def register(self, name: str) -> RegisterField: ...
    def mvregister(self, name: str) -> MVRegisterField: ...
    def set(self, name: str) -> SetField: ...
    def list(self, name: str) -> ListField: ...
    def map(self, name: str) -> MapField: ...
    def text(self, name: str) -> TextField: ...


class Importer(FieldParent, Protocol):
    """What an import needs of the replica: its fields, and its current export."""

    def to_json(self, fields: Iterable[str] | None = None) -> dict[str, Any]: ...


_MISSING: Final = object()


def _same(a: Any, b: Any) -> bool:
    """Exact equality of stored values (``1``, ``1.0`` and ``True`` differ; NaN is NaN)."""
    return value_key(a) == value_key(b)


def _parse_field(obj: Any, where: str) -> tuple[str, Any]:
    """``(type name, decoded value)`` of one ``{"type", "value"}`` entry, checked."""
    if type(obj) is not dict or set(obj) != {"type", "value"}:
        raise ValueError(f"{where}: expected an object with exactly 'type' and 'value'")
    kind, raw = obj["type"], obj["value"]
    if kind not in KINDS:
        raise ValueError(f"{where}: unknown type {kind!r} (one of {', '.join(KINDS)})")
    if kind in ("gcounter", "counter"):
        if type(raw) is not int or (kind == "gcounter" and raw < 0):
            raise ValueError(f"{where}: a {kind} holds an int" + (" >= 0" * (kind == "gcounter")))
        return kind, raw
    if kind == "text":
        if type(raw) is not str:
            raise ValueError(f"{where}: a text holds a str")
        return kind, raw
    if kind == "map":
        if type(raw) is not dict:
            raise ValueError(f"{where}: a map holds an object")
        return kind, {_key(k, where): _parse_field(v, f"{where}.{k}") for k, v in raw.items()}
    value = decode_value(raw, where)
    try:
        check_value(value)
    except UnsupportedValue as exc:
        raise ValueError(f"{where}: {exc}") from None
    if kind != "register" and type(value) is not list:
        raise ValueError(f"{where}: a {kind} holds a list")
    if kind == "set":
        for element in value:
            if type(element) is list or type(element) is dict:
                raise ValueError(f"{where}: set elements are scalars")
    return kind, value


Parsed = Mapping[str, tuple[str, Any]]


def _check_types(target: Parsed, current: Parsed, where: str) -> None:
    """Raise ``TypeMismatch`` before any write if a field exists with another type."""
    for name, (kind, value) in target.items():
        if name not in current:
            continue
        existing, now = current[name]
        path = f"{where}{name}"
        if existing != kind:
            raise TypeMismatch(f"field {path!r} is a {existing}, the import has a {kind}")
        if kind == "map":
            _check_types(value, now, f"{path}.")


def import_state(replica: Importer, document: Any) -> list[str]:
    """Write ``document`` (an :func:`export_state` document) into ``replica``.

    Returns the dotted paths of fields that could not be brought exactly to the
    exported value: a grow-only counter above it, or a multi-value register exported
    with several concurrent values (or none), which local writes cannot recreate (it gets
    the first value).

    Raises:
        ValueError: ``document`` is not an export document (nothing is written).
        TypeMismatch: a field it names exists with another type (nothing is written).
    """
    if type(document) is not dict or document.get("format") != FORMAT:
        raise ValueError(f"not a crdtmem JSON export: its 'format' must be {FORMAT!r}")
    fields = document.get("fields")
    if type(fields) is not dict or set(document) != {"format", "fields"}:
        raise ValueError("a crdtmem JSON export holds 'format' and a 'fields' object")
    target = {_key(name, "fields"): _parse_field(v, name) for name, v in fields.items()}
    exported = replica.to_json(target)["fields"]
    current = {name: _parse_field(v, name) for name, v in exported.items()}
    _check_types(target, current, "")
    skipped: list[str] = []
    _write_fields(replica, target, current, "", skipped)
    return skipped


def _write_fields(
    parent: FieldParent, target: Parsed, current: Parsed, where: str, skipped: list[str]
) -> None:
    for name in sorted(target):
        kind, value = target[name]
        now = current.get(name)
        old = _MISSING if now is None else now[1]
        _write(
            parent,
            name=name,
            kind=kind,
            value=value,
            old=old,
            path=f"{where}{name}",
            skipped=skipped,
        )


def _write(
    parent: FieldParent,
    *,
    name: str,
    kind: str,
    value: Any,
    old: Any,
    path: str,
    skipped: list[str],
) -> None:
    missing = old is _MISSING
    if kind == "counter":
        if missing or old != value:
            parent.counter(name).increment(value - (0 if missing else old))
    elif kind == "gcounter":
        base = 0 if missing else old
        if value < base:
            skipped.append(path)
        elif missing or value != base:
            parent.gcounter(name).increment(value - base)
    elif kind == "register":
        if missing or not _same(old, value):
            parent.register(name).set(value)
    elif kind == "mvregister":
        if missing or not _same(old, value):
            if len(value) != 1:
                skipped.append(path)  # (several concurrent values, or none: not by writes)
            if value:
                parent.mvregister(name).set(value[0])
    elif kind == "set":
        _write_set(parent.set(name), value, [] if missing else old, missing)
    elif kind == "list":
        _write_list(parent.list(name), value, [] if missing else old, missing)
    elif kind == "text":
        text = parent.text(name)
        if missing or old != value:
            if not missing and old:
                text.delete(0, len(old))
            if value or missing:
                text.insert(0, value)
    else:
        handle = parent.map(name)
        had = {} if missing else old
        for key in sorted(set(had) - set(value)):
            handle.remove(key)
        if missing and not value:
            handle.register(_PLACEHOLDER).set(None)
            handle.remove(_PLACEHOLDER)
        _write_fields(handle, value, had, f"{path}.", skipped)


def _write_set(handle: SetField, value: list[Any], old: list[Any], missing: bool) -> None:
    want = {value_key(v): v for v in value}
    have = {value_key(v): v for v in old}
    for key in sorted(want.keys() - have.keys()):
        handle.add(want[key])
    for key in sorted(have.keys() - want.keys()):
        handle.discard(have[key])
    if missing and not want:
        # (an empty set that exists: made by an add and its remove)
        handle.add(None)
        handle.discard(None)


def _write_list(handle: ListField, value: list[Any], old: list[Any], missing: bool) -> None:
    if not missing and _same(old, value):
        return
    for index in reversed(range(len(old))):
        handle.delete(index)
    for item in value:
        handle.append(item)
    if missing and not value:
        handle.append(None)
        handle.delete(0)
