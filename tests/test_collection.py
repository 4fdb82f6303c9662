"""Collecting deleted list elements once their deletes are causally stable.

The proof is a shadow run: every replica has a twin that never collects, receives the
same messages (its own sender's twin's, for full states) and makes the same writes. At
every step each replica must read exactly what its twin reads, so collection is
invisible, whatever the delivery order, duplication, loss, or a late joiner's writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import event, given
from hypothesis import strategies as st

from crdtmem import Replica
from crdtmem.causality import dominates
from crdtmem.crdt import Writer
from crdtmem.rga import RGA

NAMES = ("a", "b", "c", "late")


@dataclass
class Node:
    """A replica, its never-collecting twin, and what it heard of the others."""

    replica: Replica
    twin: Replica
    member: bool
    reports: dict[str, dict[str, int]] = field(default_factory=dict)
    complete: dict[str, dict[str, int]] = field(default_factory=dict)

    def stable(self, members: list[str]) -> dict[str, int] | None:
        """The causally stable version: the pointwise minimum of this replica's version
        and each other member's last report that this replica has caught up with (so
        everything each member made before it saw the stable updates is applied here)."""
        mine = self.replica.version()
        for name, report in self.reports.items():
            if dominates(mine, report):
                self.complete[name] = report
        others = [n for n in members if n != self.replica.replica_id]
        if any(n not in self.complete for n in others):
            return None
        return {
            origin: min([count, *(self.complete[n].get(origin, 0) for n in others)])
            for origin, count in mine.items()
        }


def _write(node: Node, roll: int, where: int) -> None:
    for target in (node.replica, node.twin):
        items = target.map("doc").list("items") if roll % 3 == 0 else target.list("items")
        if roll % 2 and len(items):
            items.delete(where % len(items))
        else:
            items.insert(where % (len(items) + 1), f"{target.replica_id}{roll}")


def _reads(replica: Replica) -> object:
    return replica.value()


steps = st.lists(
    st.tuples(
        st.sampled_from(
            ["write", "write", "send", "sync", "round", "deliver", "report", "gc", "gc"]
        ),
        st.integers(0, 3),
        st.integers(0, 3),
        st.integers(0, 10_000),
    ),
    min_size=20,
    max_size=150,
)


@given(steps, st.booleans())
def test_collection_is_invisible_to_reads(plan: list[tuple[str, int, int, int]], dup: bool) -> None:
    nodes = {n: Node(Replica(n), Replica(n), member=n != "late") for n in NAMES}
    # (to, message, twin's message, sender, sender's version): like a gossip frame, a
    # message tells the receiver what its sender had.
    flight: list[tuple[str, bytes, bytes, str, dict[str, int]]] = []
    collected = 0

    def send(me: Node, peer: Node, roll: int, now: bool) -> None:
        if roll % 5 == 0:  # a full state, markers and all
            pair = (me.replica._state_message(), me.twin._state_message())
        else:
            seen = peer.replica.version() if roll % 2 else {}
            pair = (me.replica.delta_since(seen), me.twin.delta_since(seen))
        flight.insert(
            0, (peer.replica.replica_id, *pair, me.replica.replica_id, me.replica.version())
        )
        # Talking makes the late joiner a member, in everyone's eyes.
        me.member = peer.member = True
        if now:
            deliver(0, again=False)

    def deliver(k: int, again: bool) -> None:
        sent = flight.pop(k)
        to, message, twin_message, sender, version = sent
        nodes[to].replica.merge(message)
        nodes[to].twin.merge(twin_message)
        nodes[to].reports[sender] = version
        if again:
            flight.append(sent)

    for action, i, j, roll in plan:
        me, peer = nodes[NAMES[i]], nodes[NAMES[j]]
        members = [n for n, node in nodes.items() if node.member]
        if action == "write":
            _write(me, roll, roll // 7)
        elif action in ("send", "sync") and me is not peer:
            send(me, peer, roll, now=action == "sync")
        elif action == "round":  # every member syncs with every other, in turn
            for one in members:
                for other in members:
                    if one != other:
                        send(nodes[one], nodes[other], roll, now=True)
        elif action == "deliver" and flight:
            deliver(roll % len(flight), again=dup and roll % 3 == 0)
        elif action == "report" and me is not peer and me.member:
            peer.reports[me.replica.replica_id] = me.replica.version()
        elif action == "gc" and me.member:
            stable = me.stable(members)
            if stable is not None:
                collected += me.replica.collect_garbage(stable)
        for node in nodes.values():
            assert _reads(node.replica) == _reads(node.twin)
    event(f"collected something: {collected > 0}")
    # Heal: everything to everyone, in both directions, then compare.
    for _ in range(2):
        for sender in nodes.values():
            for receiver in nodes.values():
                if sender is not receiver:
                    receiver.replica.merge(sender.replica.delta_since(receiver.replica.version()))
                    receiver.twin.merge(sender.twin.delta_since(receiver.twin.version()))
    values = [_reads(node.replica) for node in nodes.values()]
    assert all(v == values[0] for v in values)
    assert values[0] == _reads(nodes["a"].twin)


def test_collection_frees_the_elements_and_keeps_one_id_per_forward_run() -> None:
    a, b = Replica("a"), Replica("b")
    for i in range(1000):
        a.list("log").append(i)
    for _ in range(990):
        a.list("log").delete(5)
    b.merge(a.delta_since())
    assert a.stats()["list_tombstones"] == 990
    stable = b.version()  # b has everything, and a has everything b made (nothing)
    assert a.collect_garbage(stable) == 990
    stats = a.stats()
    assert stats["list_tombstones"] == 0 and stats["list_collected"] == 990
    assert stats["list_marker_ids"] == 1  # one forward run, one id
    assert a.list("log").value == b.list("log").value == [0, 1, 2, 3, 4, 995, 996, 997, 998, 999]
    assert a.collect_garbage(stable) == 0  # nothing left to do
    # Writes keep converging with the replica that did not collect.
    a.list("log").insert(5, "a")
    b.list("log").insert(5, "b")
    a.merge(b.delta_since(a.version()))
    b.merge(a.delta_since(b.version()))
    assert a.value() == b.value()


def test_nothing_is_collected_before_it_is_stable() -> None:
    a = Replica("a")
    for i in range(10):
        a.list("l").append(i)
    a.list("l").delete(0)
    assert a.collect_garbage({}) == 0
    assert a.collect_garbage({a.writer_id: a.version()[a.writer_id] - 1}) == 0
    assert a.collect_garbage(a.version()) == 1


def test_a_scan_that_stops_inside_a_collected_run_splits_its_marker() -> None:
    # Elements typed backwards (each at the head) make a run whose ids all decrease:
    # every id is a prefix minimum, and a concurrent insert can stop between any two.
    a, b = Writer.fixed("a"), Writer.fixed("b")
    doc = RGA.empty()
    for i in range(3):
        doc.absorb(doc.insert_delta(a, 0, i))
    behind = doc.copy()  # b saw (1,a) (2,a) (3,a)
    for i in range(3, 6):
        doc.absorb(doc.insert_delta(a, 0, i))
    concurrent = behind.insert_delta(b, 0, "b")  # id (4, "b"): between (5,a) and (4,a)
    twin = doc.copy()
    ids = [n.id for c in doc.chunks for n in c.nodes]
    assert ids == [(6, "a"), (5, "a"), (4, "a"), (3, "a"), (2, "a"), (1, "a")]
    for _ in range(5):
        doc.absorb(doc.delete_delta(a, 0))
        twin.absorb(twin.delete_delta(a, 0))
    assert doc.collect(ids) == 5 and doc.markers == 1 and doc.marker_ids() == 5
    doc.absorb(concurrent)
    twin.absorb(concurrent)
    layout = [n.records or n.id for c in doc.chunks for n in c.nodes]
    assert layout == [[(6, "a"), (5, "a")], (4, "b"), [(4, "a"), (3, "a"), (2, "a")], (1, "a")]
    assert [n.id for c in twin.chunks for n in c.nodes][1:4] == [(5, "a"), (4, "b"), (4, "a")]
    assert doc.value() == twin.value() == ["b", 0]
    decoded = RGA.decode(doc.encode())
    assert [n.records or n.id for c in decoded.chunks for n in c.nodes] == layout


def test_a_long_queue_of_deletes_is_collected_in_steps_and_trimmed() -> None:
    a = Replica("a")
    items = a.list("items")
    for i in range(12_000):
        items.append(i)
    for _ in range(10_000):
        items.delete(0)
    assert a.stats()["awaiting_stability"] == 10_000
    halfway = a.version()[a.writer_id] - 5_000  # the last 5,000 deletes not stable yet
    assert a.collect_garbage({a.writer_id: halfway}) == 5_000
    assert a.stats()["awaiting_stability"] == 5_000
    assert a.collect_garbage(a.version()) == 5_000
    assert a.stats()["awaiting_stability"] == 0 and a.stats()["list_tombstones"] == 0
    assert items.value == list(range(10_000, 12_000))


def test_a_stale_full_state_does_not_bring_collected_elements_back() -> None:
    a, b = Replica("a"), Replica("b")
    for i in range(30):
        a.list("l").append(i)
    for _ in range(20):
        a.list("l").delete(5)  # elements 5..24, each the ref of the next
    b.merge(a.delta_since())
    stable = b.version()
    assert a.collect_garbage(stable) == 20
    # b collected only the first ten deletes: its state holds a marker for 5..14, then
    # 15..24 as tombstones whose refs (14, ...) are gone here.
    assert b.collect_garbage({a.writer_id: stable[a.writer_id] - 10}) == 10
    b.counter("c").increment()
    b.compact_log(b.version())  # forces b to answer with its full state
    a.merge(b.delta_since(a.version()))
    assert a.list("l").value == b.list("l").value
    a.collect_garbage(a.version())
    stats = a.stats()
    assert stats["list_tombstones"] == 0 and stats["awaiting_stability"] == 0
