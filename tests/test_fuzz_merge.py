"""Hostile input to ``merge``: only ``DecodeError`` comes out, and the replica is left
exactly as it was. A mutated message that still decodes must leave a usable replica."""

from __future__ import annotations

import copy
import random
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdtmem import DecodeError, Replica, codec


def populated() -> tuple[Replica, list[bytes]]:
    """A replica with every type, and the messages that built it."""
    # Seeded lives: the messages (and what hypothesis draws from them) are the same
    # every run.
    a = Replica("alpha", rng=random.Random(1))
    b = Replica("beta", rng=random.Random(2))
    a.counter("votes").increment(3)
    a.gcounter("g").increment(2)
    a.register("r").set({"k": [1, b"x"]})
    a.mvregister("mv").set("one")
    a.set("s").add("x")
    a.list("l").append("first")
    a.list("l").insert(0, "zero")
    a.list("l").delete(1)
    a.text("t").insert(0, "héllo")
    m = a.map("m")
    m.counter("c").increment()
    m.set("tags").add(1)
    m.remove("c")
    b.merge(a.delta_since())
    b.list("l").append("from beta")
    messages = [a.delta_since(), b.delta_since({a.writer_id: 3}), b.delta_since()]
    b.compact_log({a.writer_id: 1})  # force the full-state form as well
    messages.append(b.delta_since({}))
    collected = Replica(
        "gamma", rng=random.Random(3)
    )  # and a full state with markers of collected elements
    collected.merge(b.delta_since())
    for i in range(6):
        collected.list("l").insert(0, i)
    for _ in range(4):
        collected.list("l").delete(1)
    collected.collect_garbage(collected.version())
    messages.append(collected._state_message())
    return b, messages


def snapshot(r: Replica) -> tuple[Any, ...]:
    return (r.value(), r.version(), r.delta_since(), r.stats()["buffered_updates"])


def message(obj: object) -> bytes:
    return codec.HEADER + msgpack.packb(obj, use_bin_type=True)


VALID_UPDATE = [1, [["alpha", 1, [[{}, "c", 1, [{"alpha": 1}, {}]]]]]]


def with_payload(tag: int, payload: object, deps: object = None) -> bytes:
    return message([1, [["evil", 1, [[deps if deps is not None else {}, "f", tag, payload]]]]])


HOSTILE: dict[str, bytes] = {
    "empty": b"",
    "no header": b"\x93\x01\x02\x03",
    "future version": b"CM\x09" + msgpack.packb(VALID_UPDATE),
    "0xc1 never-used byte": b"CM\x01\xc1",
    "truncated": message(VALID_UPDATE)[:-3],
    "extra data": message(VALID_UPDATE) + b"\x00",
    "array claims 2^32-1 items": b"CM\x01\xdd\xff\xff\xff\xff",
    "map claims 2^32-1 items": b"CM\x01\xdf\xff\xff\xff\xff",
    "str claims 2^32-1 bytes": b"CM\x01\xdb\xff\xff\xff\xff",
    "100k-deep nesting": b"CM\x01" + b"\x91" * 100_000 + b"\xc0",
    "1 MB container bomb": b"CM\x01\xdd\x00\x10\x00\x00" + b"\xc0" * 0x100000,
    "unknown ext code": b"CM\x01\x92\x01\xd4\x05\x00",
    "msgpack timestamp ext": b"CM\x01\x92\x01\xd6\xff\x00\x00\x00\x01",
    "invalid utf-8": b"CM\x01\x92\x01\xa2\xff\xfe",
    "int map key": b"CM\x01\x81\x01\x02",
    "unknown kind": message([7, []]),
    "unknown type tag": with_payload(42, []),
    "negative counter": with_payload(1, [{"evil": -5}, {}]),
    "zero counter": with_payload(1, [{"evil": 0}, {}]),
    "counter as a float": with_payload(1, [{"evil": 1.5}, {}]),
    "NaN timestamp": with_payload(3, [float("nan"), 0, "evil", "v"]),
    "negative timestamp": with_payload(3, [-1, 0, "evil", "v"]),
    "register value of wrong kind": with_payload(3, [1, 0, "evil", msgpack.ExtType(3, b"")]),
    "empty replica id": message([1, [["", 1, [[{}, "c", 1, [{}, {}]]]]]]),
    "74-char writer id": message([1, [["x" * 74, 1, [[{}, "c", 1, [{}, {}]]]]]]),
    "sequence number zero": message([1, [["evil", 0, [[{}, "c", 1, [{}, {}]]]]]]),
    "deps name own origin": with_payload(1, [{}, {}], deps={"evil": 3}),
    "deps with zero": with_payload(1, [{}, {}], deps={"other": 0}),
    "first entry without deps": message([1, [["evil", 1, [[None, "c", 1, [{}, {}]]]]]]),
    "regressing state version": message([2, "evil", {"alpha": -1}, []]),
    "state with zero version": message([2, "evil", {"alpha": 0}, []]),
    "set dot outside context": with_payload(5, [[["x", [["evil", 1]]]], [{}, []]]),
    "set element is a list": with_payload(5, [[[[1], [["evil", 1]]]], [{"evil": 1}, []]]),
    "mv dot repeated": with_payload(4, [[["e", 1, 1], ["e", 1, 2]], [{"e": 1}, []]]),
    "list out of RGA order": with_payload(
        6, [["a"], [[1, 0, None, "x"], [2, 0, None, "y"]], [], []]
    ),
    "list ref to the future": with_payload(
        6, [["a"], [[5, 0, None, "x"], [3, 0, True, "y"]], [], []]
    ),
    "list actor index out of range": with_payload(6, [["a"], [[1, 7, None, "x"]], [], []]),
    "list orphan older than its ref": with_payload(6, [["a"], [], [[1, 0, 5, 0, False, "x"]], []]),
    "list marker ids increasing": with_payload(6, [["a"], [[[1, 0, 2, 0]]], [], []]),
    "list marker odd length": with_payload(6, [["a"], [[[3, 0, 1]]], [], []]),
    "list marker empty": with_payload(6, [["a"], [[[]]], [], []]),
    "list marker id not an int": with_payload(6, [["a"], [[["x", 0]]], [], []]),
    "list element repeated after a marker": with_payload(
        6, [["a"], [[1, 0, None, "x"], [[5, 0]], [1, 0, None, "y"]], [], []]
    ),
    "text update garbage": with_payload(8, [[b"\x00", b"\xff\xff\xff\xff"]]),
    "text update not bytes": with_payload(8, [[b"\x00", "text"]]),
    "text dependencies garbage": with_payload(8, [[b"\x05\x01", b"\x00\x00"]]),
    "map nested 20 deep": with_payload(7, [[[], [{}, []]], []]),
}


def _deep_map(levels: int) -> list[Any]:
    inner: list[Any] = [[[], [{}, []]], []]
    for _ in range(levels):
        inner = [[[], [{}, []]], [["k", [[7, inner]]]]]
    return inner


HOSTILE["map nested 20 deep"] = with_payload(7, _deep_map(20))


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_corpus_only_raises_decode_error(name: str) -> None:
    replica, _ = populated()
    before = snapshot(replica)
    rejected = replica.stats()["rejected_messages"]
    with pytest.raises(DecodeError) as info:
        replica.merge(HOSTILE[name])
    assert str(info.value)
    assert snapshot(replica) == before
    assert replica.stats()["rejected_messages"] == rejected + 1


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_byte_mutations_raise_decode_error_or_leave_a_consistent_replica(
    data: st.DataObject,
) -> None:
    replica, messages = populated()
    original = bytearray(data.draw(st.sampled_from(messages)))
    for _ in range(data.draw(st.integers(1, 4))):
        where = data.draw(st.integers(0, len(original)))
        how = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if how == "flip" and where < len(original):
            original[where] ^= data.draw(st.integers(1, 255))
        elif how == "insert":
            original[where:where] = data.draw(st.binary(min_size=1, max_size=4))
        elif how == "delete":
            del original[where : where + data.draw(st.integers(1, 4))]
        else:
            del original[where:]
    check_merge(replica, bytes(original))


leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(),
    st.text(max_size=3),
    st.binary(max_size=3),
    st.just([]),
    st.just({}),
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_structure_aware_mutations(data: st.DataObject) -> None:
    """Replace one node of a valid message's tree with a random value."""
    replica, messages = populated()
    tree = codec.unpack(data.draw(st.sampled_from(messages)))
    mutated = copy.deepcopy(tree)
    paths = list(_paths(mutated))
    container, key = data.draw(st.sampled_from(paths))
    container[key] = data.draw(leaves)
    check_merge(replica, message(mutated))


def _paths(node: Any) -> Any:
    if isinstance(node, list):
        for index, item in enumerate(node):
            yield node, index
            yield from _paths(item)
    elif isinstance(node, dict):
        for key, item in node.items():
            yield node, key
            yield from _paths(item)


def check_merge(replica: Replica, data: bytes) -> None:
    before = snapshot(replica)
    try:
        replica.merge(data)
    except DecodeError:
        assert snapshot(replica) == before
        return
    # accepted: the replica must still work and still sync
    replica.value()
    peer = Replica("observer", rng=random.Random(4))
    peer.merge(replica.delta_since())
    assert set(peer.version()) <= set(replica.version()) | {"observer"}
    replica.counter("after").increment()
