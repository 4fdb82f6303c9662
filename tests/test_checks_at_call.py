"""Issue 9, "checks at the call": what could never be replicated is refused when it is
written, reading writes nothing, a type clash between replicas is said and counted, and
a replica that left refuses writes."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from crdtmem import (
    DecodeError,
    Replica,
    ReplicaLeft,
    TypeMismatch,
    UnsupportedValue,
    ValueTooLarge,
    codec,
)
from transport import SimNetwork


def test_reading_a_missing_field_writes_nothing() -> None:
    r = Replica("reader")
    assert r.list("findings").value == []
    assert len(r.list("findings")) == 0
    assert r.register("status").value is None
    assert r.map("plan").counter("votes").value == 0
    assert "votes" not in r.map("plan")
    assert r.text("draft").value == ""
    assert r.set("tags").value == frozenset()
    assert r.version() == {} and r.value() == {}
    peer = Replica("peer")
    peer.merge(r.delta_since())
    assert peer.value() == {} and peer.version() == {}


def test_a_field_exists_from_its_first_write_and_keeps_its_type() -> None:
    r = Replica("writer")
    handle = r.list("findings")  # no field yet: another type may still be asked for
    r.set("findings")
    handle.append("first")
    assert r.version() == {r.writer_id: 1} and r.value() == {"findings": ["first"]}
    with pytest.raises(TypeMismatch, match="is a list, not a set"):
        r.set("findings")
    with pytest.raises(TypeMismatch):
        r.map("m").counter("k").increment()
        r.map("m").register("k")


def test_a_value_no_peer_would_accept_is_refused_at_the_call() -> None:
    r = Replica("big")
    r.register("note").set("small")
    before = (r.value(), r.version(), r.delta_since())
    huge = b"x" * (codec.MAX_BLOB_BYTES + 1)
    writes: list[Callable[[], None]] = [
        lambda: r.register("blob").set(huge),
        lambda: r.list("blobs").append(huge),
        lambda: r.map("m").register("blob").set({"payload": huge}),
    ]
    for write in writes:
        with pytest.raises(ValueTooLarge, match=r"could not be replicated|at most") as caught:
            write()
        assert isinstance(caught.value, ValueError)
        assert (r.value(), r.version(), r.delta_since()) == before
    # Just under the limit: written here, and a peer accepts it.
    fits = b"y" * (codec.MAX_UPDATE_BYTES - 64 * 1024)
    r.register("blob").set(fits)
    peer = Replica("peer")
    peer.merge(r.delta_since())
    assert peer.register("blob").value == fits


def test_too_many_items_in_one_value_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # The container limit, shrunk so the test stays small: the same check guards the
    # real 16 Mi items.
    monkeypatch.setattr(codec, "MAX_CONTAINER_LEN", 1000)
    monkeypatch.setattr(codec, "SMALLEST_LIMIT", 1000)
    r = Replica("wide")
    with pytest.raises(ValueTooLarge, match="could not be replicated"):
        r.register("r").set(list(range(1001)))
    assert r.version() == {}
    r.register("r").set(list(range(1000)))
    peer = Replica("peer")
    peer.merge(r.delta_since())
    assert peer.register("r").value == list(range(1000))
    with pytest.raises(DecodeError):  # what the check spared the group from
        codec.unpack(codec.pack([list(range(1001))]))


def test_a_type_clash_between_replicas_is_logged_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, b, c = Replica("a"), Replica("b"), Replica("c")
    a.list("x").append("from a")
    b.set("x").add("from b")
    with caplog.at_level(logging.WARNING, logger="crdtmem.replica"):
        a.merge(b.delta_since())
        b.merge(a.delta_since())
        c.merge(a.delta_since({"a": 0}))  # a's state, both types at once (updates)
        a.set("x").add("again from b's type")
        b.merge(a.delta_since(b.version()))
    for replica in (a, b, c):
        assert replica.stats()["type_clashes"] == 1
    clashes = [r for r in caplog.records if "different types" in r.getMessage()]
    assert len(clashes) == 3  # once per replica, not once per update
    message = clashes[0].getMessage()
    assert "'x'" in message and "(set, list)" in message and "r.list('x')" in message
    # Nothing is hidden for good: value() shows the lowest tag, the other handle reads.
    assert a.value()["x"] == {"from b", "again from b's type"}
    assert a.list("x").value == ["from a"]
    assert b.set("x").value == a.set("x").value and b.list("x").value == ["from a"]


def test_a_type_clash_arriving_in_a_full_state_is_counted() -> None:
    a, b = Replica("a"), Replica("b")
    a.counter("x").increment()
    b.register("x").set("b")
    b.compact_log(b.version())  # b can only send its full state now
    a.merge(b.delta_since(a.version()))
    assert a.stats()["type_clashes"] == 1
    assert a.counter("x").value == 1 and a.register("x").value == "b"


def test_a_replica_that_left_refuses_writes_and_still_reads() -> None:
    r, peer = Replica("leaver"), Replica("peer")
    r.list("notes").append("before")
    r.mark_left()
    with pytest.raises(ReplicaLeft, match="left the group") as caught:
        r.list("notes").append("after")
    assert isinstance(caught.value, RuntimeError)
    with pytest.raises(ReplicaLeft):
        r.counter("c").increment()
    assert r.list("notes").value == ["before"] and r.version() == {r.writer_id: 1}
    peer.counter("c").increment()
    r.merge(peer.delta_since())  # remote updates still apply: reads stay current
    assert r.counter("c").value == 1


def test_unsupported_values_are_still_type_errors() -> None:
    r = Replica("a")
    with pytest.raises(UnsupportedValue):
        r.register("r").set(object())
    assert r.version() == {}


def test_leaving_through_gossip_makes_the_replica_refuse_writes() -> None:
    net = SimNetwork(3)
    for name in ("a", "b"):
        net.add_node(name)
    net.write("a", lambda r: r.list("notes").append("said before leaving"))
    assert net.leave("a") is True
    leaver = net.replica("a")
    with pytest.raises(ReplicaLeft):
        leaver.list("notes").append("after")
    assert leaver.list("notes").value == ["said before leaving"]
    assert net.replica("b").list("notes").value == ["said before leaving"]
