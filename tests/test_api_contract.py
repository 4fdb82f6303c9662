"""Every line of the Replica part of ../shared/API.md, as a test."""

from __future__ import annotations

import re
import threading
from typing import Any

import pytest

import crdtmem
from crdtmem import ChangeEvent, DecodeError, Replica, TypeMismatch


def sync(*replicas: Replica) -> None:
    for _ in range(2):
        for left in replicas:
            for right in replicas:
                if left is not right:
                    right.merge(left.delta_since(right.version()))


# --- replica ids ---------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["", "x" * 65, None, 7, b"agent"])
def test_bad_replica_ids_raise_value_error(bad: Any) -> None:
    with pytest.raises(ValueError):
        Replica(bad)


def test_replica_id_is_kept() -> None:
    assert Replica("x" * 64).replica_id == "x" * 64


def test_restarted_under_its_id_in_memory_or_durable_no_acknowledged_write_is_lost(
    tmp_path: Any,
) -> None:
    # "An agent may be restarted under its id at any time, in memory or durable, and two
    # live processes may share an id by mistake: no acknowledged write is lost."
    peer = Replica("peer")
    lives = [Replica("agent-a"), Replica("agent-a")]  # two lives at once
    for i, life in enumerate(lives):
        life.list("l").append(i)
        peer.merge(life.delta_since(peer.version()))
    restarted = Replica("agent-a")  # a third life, after a crash
    restarted.list("l").append(2)
    durable = Replica("agent-a", path=str(tmp_path / "a"))
    durable.list("l").append(3)
    durable.close()
    durable = Replica("agent-a", path=str(tmp_path / "a"))  # reopened: same life
    durable.list("l").append(4)
    sync(peer, restarted, durable, *lives)
    assert sorted(peer.list("l").value) == [0, 1, 2, 3, 4]
    assert all(r.value() == peer.value() for r in (restarted, durable, *lives))
    # "a replica id with an incarnation mark whose form docs/api.md gives"
    assert all(re.fullmatch(r"agent-a~[0-9a-f]{8}", key) for key in peer.version())
    assert len(peer.version()) == 4
    durable.close()


def test_a_durable_folder_is_held_by_one_replica_at_a_time(tmp_path: Any) -> None:
    first = Replica("agent-a", path=str(tmp_path / "a"))
    with pytest.raises(crdtmem.StorageLocked, match="in use by process"):
        Replica("agent-a", path=str(tmp_path / "a"))
    first.close()
    Replica("agent-a", path=str(tmp_path / "a")).close()


# --- fields --------------------------------------------------------------------------


def test_same_name_same_field_and_type_mismatch_changes_nothing() -> None:
    r = Replica("a")
    r.counter("c").increment(2)
    assert r.counter("c").value == 2
    before = (r.value(), r.version())
    with pytest.raises(TypeMismatch) as info:
        r.set("c")
    assert isinstance(info.value, TypeError)
    assert (r.value(), r.version()) == before
    m = r.map("m")
    m.counter("k").increment()
    with pytest.raises(TypeMismatch):
        m.list("k")


def test_gcounter() -> None:
    r = Replica("a")
    g = r.gcounter("g")
    g.increment()
    g.increment(4)
    assert g.value == 5
    with pytest.raises(ValueError):
        g.increment(-1)
    assert g.value == 5


def test_pncounter() -> None:
    c = Replica("a").counter("c")
    c.increment()
    c.increment(5)
    c.decrement()
    c.decrement(3)
    assert c.value == 2


def test_lww_register() -> None:
    a, b = Replica("a"), Replica("b")
    reg = a.register("r")
    assert reg.value is None
    reg.set("v1")
    sync(a, b)
    b.register("r").set("v2")  # b has seen v1, so its write wins everywhere
    sync(a, b)
    assert a.register("r").value == b.register("r").value == "v2"


def test_mvregister_keeps_concurrent_values_in_the_same_order() -> None:
    a, b = Replica("a"), Replica("b")
    a.mvregister("m").set("from-a")
    b.mvregister("m").set("from-b")
    sync(a, b)
    assert a.mvregister("m").values == b.mvregister("m").values == ["from-a", "from-b"]
    a.mvregister("m").set("resolved")
    sync(a, b)
    assert b.mvregister("m").values == ["resolved"]


def test_orset() -> None:
    s = Replica("a").set("s")
    s.add("x")
    s.add("y")
    s.discard("x")
    s.discard("never-there")
    assert s.value == frozenset({"y"})
    assert "y" in s and "x" not in s
    assert len(s) == 1


def test_list() -> None:
    lst = Replica("a").list("l")
    lst.append("b")
    lst.insert(0, "a")
    lst.append("c")
    lst.delete(1)
    assert lst.value == ["a", "c"]
    assert len(lst) == 2
    assert lst[1] == "c" and lst[-1] == "c"
    for bad in (lambda: lst.insert(5, "x"), lambda: lst.delete(2), lambda: lst[2]):
        with pytest.raises(IndexError):
            bad()
    assert lst.value == ["a", "c"]


def test_map_of_nested_fields() -> None:
    r = Replica("a")
    m = r.map("m")
    m.counter("votes").increment(2)
    m.list("notes").append("n1")
    m.register("owner").set("alice")
    m.set("tags").add("t")
    m.mvregister("mv").set(1)
    m.gcounter("g").increment()
    m.text("draft").insert(0, "hi")
    m.map("inner").counter("x").increment()
    assert m.value == {
        "draft": "hi",
        "g": 1,
        "inner": {"x": 1},
        "mv": [1],
        "notes": ["n1"],
        "owner": "alice",
        "tags": frozenset({"t"}),
        "votes": 2,
    }
    m.remove("votes")
    assert "votes" not in m.value


def test_nested_fields_emptied_or_removed_keep_working() -> None:
    a, b = Replica("a"), Replica("b")
    m = a.map("m")
    m.list("notes").append("one")
    m.list("notes").delete(0)  # the nested list is now empty, but exists
    m.list("notes").append("two")
    m.set("tags").add("t")
    m.remove("tags")
    m.set("tags").add("again")
    b.merge(a.delta_since())
    assert a.map("m").value == b.map("m").value == {"notes": ["two"], "tags": frozenset({"again"})}


def test_text_positions_are_code_points() -> None:
    t = Replica("a").text("t")
    t.insert(0, "naïve 😀 café")
    t.insert(7, "🎉")
    t.delete(0, 2)
    assert t.value == "ïve 😀🎉 café"
    with pytest.raises(IndexError):
        t.insert(100, "x")
    with pytest.raises(IndexError):
        t.delete(10, 5)
    assert t.value == "ïve 😀🎉 café"


def test_text_converges_between_replicas_with_non_ascii() -> None:
    a, b = Replica("a"), Replica("b")
    a.text("t").insert(0, "héllo")
    sync(a, b)
    a.text("t").insert(5, " wörld")
    b.text("t").insert(1, "→")
    sync(a, b)
    assert a.text("t").value == b.text("t").value
    assert sorted(a.text("t").value) == sorted("h→éllo wörld")


# --- values ------------------------------------------------------------------------


ROUND_TRIP = [
    None,
    True,
    False,
    0,
    -(2**63),
    2**64 - 1,
    1.5,
    float("inf"),
    "s",
    b"\x00b",
    [1, [2, "x"]],
    {"k": {"n": [None, b"z"]}},
]


@pytest.mark.parametrize("stored", ROUND_TRIP, ids=repr)
def test_values_come_back_exactly(stored: Any) -> None:
    a, b = Replica("a"), Replica("b")
    a.register("r").set(stored)
    a.list("l").append(stored)
    sync(a, b)
    for replica in (a, b):
        got = replica.register("r").value
        assert got == stored and type(got) is type(stored)
        assert replica.list("l")[0] == stored


@pytest.mark.parametrize(
    "bad",
    [(1, 2), {1: "int key"}, object(), 2**64, -(2**63) - 1, {"s": {1, 2}}, [complex(1, 1)]],
    ids=repr,
)
def test_unsupported_values_raise_type_error_and_change_nothing(bad: Any) -> None:
    r = Replica("a")
    before = (r.value(), r.version())
    r_fields = [r.register("r").set, r.list("l").append, r.set("s").add, r.mvregister("m").set]
    before = (r.value(), r.version())
    for mutate in r_fields:
        with pytest.raises(TypeError):
            mutate(bad)
    assert (r.value(), r.version()) == before


def test_stored_values_are_detached_from_the_caller() -> None:
    r = Replica("a")
    mine = [1, 2]
    r.register("r").set(mine)
    mine.append(3)
    got = r.register("r").value
    got.append(4)
    assert r.register("r").value == [1, 2]


# --- whole-replica reads -------------------------------------------------------------


def test_value_and_version() -> None:
    r = Replica("a")
    r.counter("c").increment()
    r.list("l").append(1)
    r.text("t").insert(0, "x")
    assert r.value() == {"c": 1, "l": [1], "t": "x"}
    # each mutation is one update of this life of "a"; asking for a field writes nothing
    assert r.version() == {r.writer_id: 3}
    assert re.fullmatch(r"a~[0-9a-f]{8}", r.writer_id) and r.replica_id == "a"


def test_version_never_counts_an_unapplied_update() -> None:
    a, b, c = Replica("a"), Replica("b"), Replica("c")
    a.list("l").append("first")
    b.merge(a.delta_since())
    b.list("l").append("reply")  # depends on a's update
    c.merge(b.delta_since({a.writer_id: 2}))  # only b's updates: c lacks what they depend on
    assert c.version() == {}
    assert c.value() == {}
    c.merge(a.delta_since())  # the gap fills; the buffered updates apply
    assert c.version() == b.version()
    assert c.list("l").value == ["first", "reply"]


# --- sync --------------------------------------------------------------------------


def test_delta_since_none_and_empty_give_the_whole_state() -> None:
    a = Replica("a")
    a.counter("c").increment(3)
    for arg in (None, dict[str, int]()):
        b = Replica("b")
        b.merge(a.delta_since(arg))
        assert b.value() == a.value() and b.version() == a.version()


def test_merge_is_idempotent_and_order_independent() -> None:
    a, b, c = Replica("a"), Replica("b"), Replica("c")
    messages = []
    for i in range(5):
        a.list("l").append(i)
        messages.append(a.delta_since(b.version()))
        b.merge(messages[-1])
    for message in reversed(messages + messages):
        c.merge(message)
    assert c.value() == a.value() and c.version() == a.version()


def test_converge_once_everyone_has_everything() -> None:
    replicas = [Replica(name) for name in "abcd"]
    for i, r in enumerate(replicas):
        r.counter("votes").increment(i + 1)
        r.set("tags").add(f"tag{i}")
        r.list("findings").append(f"finding {i}")
        r.map("m").register("last").set(i)
    sync(*replicas)
    values = [r.value() for r in replicas]
    versions = [r.version() for r in replicas]
    assert all(v == values[0] for v in values) and all(v == versions[0] for v in versions)
    assert values[0]["votes"] == 10


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"garbage",
        b"CM",
        b"CM\x03\x90",
        b"CM\x01\x90",
        b"CM\x02\xc1",
        b"CM\x02\x92\x01",
        b"CM\x02\x93\x09\x00\x00",
        "not bytes",
    ],
    ids=repr,
)
def test_malformed_messages_raise_decode_error_and_change_nothing(garbage: Any) -> None:
    r = Replica("a")
    r.counter("c").increment()
    before = (r.value(), r.version(), r.delta_since())
    with pytest.raises(DecodeError) as info:
        r.merge(garbage)
    assert isinstance(info.value, ValueError) and str(info.value)
    assert (r.value(), r.version(), r.delta_since()) == before


# --- changes ------------------------------------------------------------------------


def test_subscribe_local_and_remote_with_field_filter_and_unsubscribe() -> None:
    a, b = Replica("a"), Replica("b")
    everything: list[ChangeEvent] = []
    only_votes: list[ChangeEvent] = []
    stop = b.subscribe(everything.append)
    b.subscribe(only_votes.append, field="votes")
    b.counter("votes").increment()
    a.list("notes").append("x")
    b.merge(a.delta_since(b.version()))
    assert ("votes", "b", True) in [(e.field, e.origin, e.local) for e in everything]
    assert ("notes", "a", False) in [(e.field, e.origin, e.local) for e in everything]
    assert {e.field for e in only_votes} == {"votes"}
    stop()
    count = len(everything)
    b.counter("votes").increment()
    assert len(everything) == count


def test_a_failing_subscriber_does_not_break_the_write_or_others() -> None:
    r = Replica("a")
    seen: list[ChangeEvent] = []

    def broken(_: ChangeEvent) -> None:
        raise RuntimeError("subscriber bug")

    r.subscribe(broken)
    r.subscribe(seen.append)
    r.counter("c").increment()
    assert r.counter("c").value == 1 and seen


def test_subscriber_may_write_to_the_replica() -> None:
    r = Replica("a")
    counter = r.counter("c")  # creating the field is itself a change; subscribe after it
    r.subscribe(lambda e: r.counter("echo").increment() if e.field == "c" else None)
    counter.increment()
    counter.increment()
    assert r.counter("echo").value == 2


# --- threads ----------------------------------------------------------------------------


def test_threads_can_share_a_replica() -> None:
    a, b = Replica("a"), Replica("b")
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for i in range(300):
                a.counter("c").increment()
                a.list("l").append((k, i)[1])
                a.set("s").add(i % 7)
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    def syncer() -> None:
        try:
            for _ in range(100):
                b.merge(a.delta_since(b.version()))
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(3)]
    threads.append(threading.Thread(target=syncer))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and not any(t.is_alive() for t in threads)
    b.merge(a.delta_since(b.version()))
    assert a.counter("c").value == 900 == b.counter("c").value
    assert b.value() == a.value() and b.version() == a.version()


def test_public_names() -> None:
    assert issubclass(crdtmem.DecodeError, crdtmem.CrdtmemError)
    assert issubclass(crdtmem.TypeMismatch, TypeError)
