"""JSON export and import (``Replica.to_json``, ``Replica.from_json``, crdtmem.jsonstate)."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdtmem import Replica, TypeMismatch
from crdtmem.codec import INT_MAX, INT_MIN, value_key
from crdtmem.fields import MapField
from crdtmem.jsonstate import FORMAT, decode_value, encode_value

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(INT_MIN, INT_MAX),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.binary(max_size=8),
)
# Keys include the markers the encoding uses, so that escaping is exercised.
keys = st.one_of(st.sampled_from(["$bytes", "$float", "$dict", "a", ""]), st.text(max_size=4))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=3)),
    max_leaves=8,
)


def dumps(document: Any) -> str:
    return json.dumps(document, sort_keys=True, allow_nan=False)


@given(values)
def test_every_stored_value_comes_back_exactly(value: Any) -> None:
    encoded = json.loads(json.dumps(encode_value(value), allow_nan=False))
    assert value_key(decode_value(encoded)) == value_key(value)
    # With sort_keys only the order of dict keys changes.
    resorted = decode_value(json.loads(dumps(encode_value(value))))
    assert dumps(encode_value(resorted)) == dumps(encode_value(value))


# --- a replica built by random writes to every type, nested maps included ----------------

KINDS = ("gcounter", "counter", "register", "mvregister", "set", "list", "map", "text")


def write(parent: Any, rng: random.Random, value: Any, depth: int) -> None:
    """One random write under ``parent`` (a replica or a map)."""
    kind = rng.choice(KINDS if depth < 2 else (*KINDS[:-2], "text"))
    name = f"{kind}{rng.randrange(2)}"
    if kind == "gcounter":
        parent.gcounter(name).increment(rng.randrange(3))
    elif kind == "counter":
        parent.counter(name).increment(rng.randrange(-3, 4))
    elif kind == "register":
        parent.register(name).set(value)
    elif kind == "mvregister":
        parent.mvregister(name).set(value)
    elif kind == "set":
        handle = parent.set(name)
        element = value if type(value) not in (list, dict) else str(value)
        if rng.random() < 0.3:
            handle.discard(element)
        else:
            handle.add(element)
    elif kind == "list":
        handle = parent.list(name)
        if len(handle) and rng.random() < 0.3:
            handle.delete(rng.randrange(len(handle)))
        else:
            handle.insert(rng.randrange(len(handle) + 1), value)
    elif kind == "text":
        handle = parent.text(name)
        if len(handle) and rng.random() < 0.3:
            handle.delete(0, 1)
        else:
            handle.insert(rng.randrange(len(handle) + 1), rng.choice(["a", "é\n", "😀", ""]))
    else:
        handle = parent.map(name)
        if rng.random() < 0.2 and handle.keys():
            handle.remove(rng.choice(handle.keys()))
        else:
            write(handle, rng, value, depth + 1)


def build(seed: int, payload: list[Any], name: str = "a") -> Replica:
    rng = random.Random(seed)
    replica = Replica(name, rng=random.Random(seed))
    for value in payload:
        write(replica, rng, value, 0)
    return replica


@given(st.integers(0, 2**32), st.lists(values, max_size=15))
def test_export_import_export_is_identical(seed: int, payload: list[Any]) -> None:
    original = build(seed, payload)
    exported = original.to_json()
    text = dumps(exported)  # json.dumps takes it as it is
    copy = Replica("b", rng=random.Random(1))
    skipped = copy.from_json(json.loads(text))
    assert skipped == []  # (one writer: no concurrent multi-values)
    assert dumps(copy.to_json()) == text
    # Importing again changes nothing, and writes nothing.
    version = copy.version()
    assert copy.from_json(json.loads(text)) == []
    assert copy.version() == version


@given(st.integers(0, 2**32), st.lists(values, max_size=8), st.lists(values, max_size=8))
def test_import_brings_existing_fields_to_the_exported_values(
    seed: int, first: list[Any], second: list[Any]
) -> None:
    target = build(seed, first).to_json()
    other = build(seed + 1, second, "c")
    before = other.to_json()["fields"]
    try:
        other.from_json(target)
    except TypeMismatch:
        return  # (a name with another type in the other replica: nothing written)
    after = other.to_json()["fields"]
    for name, field in target["fields"].items():
        if field["type"] != "gcounter":
            assert after[name] == field, name
    for name in set(before) - set(target["fields"]):
        assert after[name] == before[name]  # fields the import does not name stay


@given(st.integers(0, 2**32), st.lists(values, max_size=8))
def test_the_same_state_gives_the_same_bytes(seed: int, payload: list[Any]) -> None:
    a = build(seed, payload)
    b = Replica("b")
    b.register("late").set(1)
    a.merge(b.delta_since())
    # b receives a's updates in one message, a got b's: same state, same export.
    b.merge(a.delta_since())
    assert dumps(a.to_json()) == dumps(b.to_json())


def test_the_export_shape_is_documented() -> None:
    r = Replica("a")
    r.list("findings").append("GDP growth at 7.2%")
    r.set("tags").add(b"\x00")
    r.set("tags").add(1)
    r.set("tags").add("1")
    r.set("tags").add(True)
    r.map("notes").text("alice").insert(0, "hi")
    r.register("score").set(float("nan"))
    assert r.to_json() == {
        "format": FORMAT,
        "fields": {
            "findings": {"type": "list", "value": ["GDP growth at 7.2%"]},
            "notes": {"type": "map", "value": {"alice": {"type": "text", "value": "hi"}}},
            "score": {"type": "register", "value": {"$float": "nan"}},
            # (by canonical encoding, msgpack: int 0x01, str 0xa1.., True 0xc3, bytes 0xc4..)
            "tags": {"type": "set", "value": [1, "1", True, {"$bytes": "AA=="}]},
        },
    }
    assert r.to_json(["findings", "absent"])["fields"].keys() == {"findings"}
    with pytest.raises(TypeError):
        r.to_json("findings")


def test_concurrent_values_and_shrunk_grow_only_counters_are_reported() -> None:
    a, b = Replica("a"), Replica("b")
    a.mvregister("plan").set("x")
    b.mvregister("plan").set("y")
    a.merge(b.delta_since())
    assert a.mvregister("plan").values == ["x", "y"]
    c = Replica("c")
    c.gcounter("seen").increment(5)
    document = a.to_json()
    document["fields"]["seen"] = {"type": "gcounter", "value": 2}
    assert c.from_json(document) == ["plan", "seen"]
    assert c.mvregister("plan").values == ["x"]  # the first, in the canonical order
    assert c.gcounter("seen").value == 5
    # A replica that holds those concurrent values already is at the value: no report.
    assert a.from_json(a.to_json()) == []


def test_empty_fields_are_recreated() -> None:
    a = Replica("a")
    a.set("s").add(1)
    a.set("s").discard(1)
    a.list("l").append(1)
    a.list("l").delete(0)
    a.map("m").map("inner").register("k").set(1)
    a.map("m").map("inner").remove("k")
    a.text("t").insert(0, "")
    a.counter("c").increment(0)
    b = Replica("b")
    b.from_json(a.to_json())
    assert (
        b.value()
        == a.value()
        == {
            "c": 0,
            "l": [],
            "m": {"inner": {}},
            "s": frozenset(),
            "t": "",
        }
    )


def test_a_type_mismatch_writes_nothing() -> None:
    r = Replica("a")
    r.counter("votes").increment()
    r.map("m").counter("k").increment()
    document = {
        "format": FORMAT,
        "fields": {
            "a": {"type": "register", "value": 1},
            "m": {"type": "map", "value": {"k": {"type": "list", "value": []}}},
        },
    }
    version = r.version()
    with pytest.raises(TypeMismatch, match=r"m\.k"):
        r.from_json(document)
    assert r.version() == version
    assert isinstance(r.map("m"), MapField)


@pytest.mark.parametrize(
    "document",
    [
        [],
        {"fields": {}},
        {"format": "other", "fields": {}},
        {"format": FORMAT, "fields": [], "extra": 1},
        {"format": FORMAT, "fields": {"x": {"type": "tree", "value": 1}}},
        {"format": FORMAT, "fields": {"x": {"type": "counter", "value": 1.5}}},
        {"format": FORMAT, "fields": {"x": {"type": "gcounter", "value": -1}}},
        {"format": FORMAT, "fields": {"x": {"type": "counter"}}},
        {"format": FORMAT, "fields": {"x": {"type": "set", "value": [[1]]}}},
        {"format": FORMAT, "fields": {"x": {"type": "list", "value": 1}}},
        {"format": FORMAT, "fields": {"x": {"type": "text", "value": 1}}},
        {"format": FORMAT, "fields": {"x": {"type": "map", "value": []}}},
        {"format": FORMAT, "fields": {"x": {"type": "register", "value": {"$bytes": "!"}}}},
        {"format": FORMAT, "fields": {"x": {"type": "register", "value": {"$float": "1"}}}},
        {"format": FORMAT, "fields": {"x": {"type": "register", "value": {"$float": "nan:zz"}}}},
        {
            "format": FORMAT,
            "fields": {"x": {"type": "register", "value": {"$float": "nan:3ff0000000000000"}}},
        },
        {"format": FORMAT, "fields": {"x": {"type": "register", "value": {"$dict": 1}}}},
        {"format": FORMAT, "fields": {"x": {"type": "register", "value": 2**64}}},
    ],
)
def test_a_bad_document_is_refused_before_any_write(document: Any) -> None:
    r = Replica("a")
    with pytest.raises(ValueError):
        r.from_json(document)
    assert r.version() == {}


def test_non_finite_floats_and_marker_dicts_survive() -> None:
    r = Replica("a")
    stored = [math.inf, -math.inf, {"$bytes": "not bytes"}, {"$dict": {}}, b"\xff"]
    r.register("v").set(stored)
    text = json.dumps(r.to_json(), allow_nan=False)
    b = Replica("b")
    b.from_json(json.loads(text))
    assert value_key(b.register("v").value) == value_key(stored)
