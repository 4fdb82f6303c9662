"""Defects a review of issue 10's changes reproduced, each now a test (sans-IO nodes, so
deterministic): an honest seed topology collecting while a live but not yet verified
peer held concurrent inserts; a leave that reported its writes spread to such a peer; a
retirement table past one digest's bound blinding the node that holds it; and peers'
made-up writers kept in per-peer vectors."""

from __future__ import annotations

from crdtmem import Replica, codec
from crdtmem.gossip import (
    MAX_FRAME_VECTOR,
    MAX_RETIRED_PER_DIGEST,
    SYNC,
    Frame,
    GossipNode,
)


def _deliver(
    nodes: dict[str, GossipNode], frames: list[Frame], now: float, rounds: int = 20
) -> None:
    for _ in range(rounds):
        out: list[Frame] = []
        for frame in frames:
            out += nodes[frame.peer].receive(frame.data, now)
        frames = out
        if not frames:
            return


def test_a_heard_but_unverified_peer_holds_collection_back() -> None:
    """X is a seed (no configured peers); Y dials it. Until X's own dial to Y answers,
    Y counts for nothing at X, yet Y is live and may insert next to what X deletes:
    collecting then would lose Y's insert at X for good (with equal versions)."""
    x = GossipNode(Replica("x"), "X", peers=[])
    y = GossipNode(Replica("y"), "Y", peers=["X"])
    y.replica.list("l").append("a")
    frames = y.flush(0.0)
    for _ in range(5):  # Y -> X only: X never verifies Y
        out: list[Frame] = []
        for frame in frames:
            out += (x if frame.peer == "X" else y).receive(frame.data, 0.0)
        frames = [f for f in out if f.peer == "X"]
    assert not x.peers["Y"].counts and x.peers["Y"].last_heard is not None
    x.replica.list("l").delete(0)
    y.replica.list("l").insert(1, "b")  # concurrently, after 'a'
    x.tick(1.0)
    assert x.causally_stable() is None
    assert x.stats["collected"] == 0
    x.replica.merge(y.replica.delta_since(x.replica.version()))
    y.replica.merge(x.replica.delta_since(y.replica.version()))
    assert x.replica.value() == y.replica.value() == {"l": ["b"]}


def test_leave_waits_for_a_heard_but_unverified_peer() -> None:
    x = GossipNode(Replica("x"), "X", peers=[])
    y = GossipNode(Replica("y"), "Y", peers=["X"])
    for frame in y.tick(0.0):
        x.receive(frame.data, 0.0)
    x.replica.counter("c").increment()
    x.begin_leave(0.0, timeout=5.0)
    assert not x.spread()
    assert not x.leave_done(0.0)
    x.leave()
    assert x.left_spread is False  # said honestly: Y may not have the write


def test_a_long_retirement_table_never_blinds_its_node() -> None:
    """1,025 retirements over a group's life (leaves, silent agents, superseded lives):
    every digest still decodes, and every retirement reaches the peer within a few
    rounds (windows of MAX_RETIRED_PER_DIGEST)."""
    a = GossipNode(Replica("a"), "A", peers=["B"])
    b = GossipNode(Replica("b"), "B", peers=["A"])
    nodes = {"A": a, "B": b}
    _deliver(nodes, a.tick(0.0) + b.tick(0.0), 0.0)
    for i in range(1025):
        a.retire(f"agent{i}~{i:08x}")
    frames = a.tick(1.0)
    sizes = [len(codec.unpack(f.data)[4][2]) for f in frames if codec.unpack(f.data)[0] == SYNC]
    assert sizes and max(sizes) <= MAX_RETIRED_PER_DIGEST
    _deliver(nodes, frames, 1.0)
    a.replica.counter("c").increment()
    for t in range(2, 2 + 2 * (1025 // MAX_RETIRED_PER_DIGEST + 2)):
        _deliver(nodes, a.tick(float(t)) + b.tick(float(t)), float(t))
    assert b.stats["rejected_frames"] == 0
    assert len(b.retired) == 1025
    assert b.replica.value() == a.replica.value() == {"c": 1}
    assert len(b.peers["A"].retired) == 1025  # what A reported adds up across digests


def test_an_old_or_hostile_digest_with_a_long_retired_list_is_cut_not_refused() -> None:
    a = GossipNode(Replica("a"), "A", peers=["B"])
    retired = [[f"ghost{i}~{i:08x}", 1] for i in range(2000)]
    frame = codec.pack([SYNC, "B", "b~0000abcd", {}, [None, b"\0" * 8, retired, []]])
    a.receive(frame, 0.0)
    assert a.stats["rejected_frames"] == 0
    assert len(a.retired) <= 1024


def test_a_frame_vector_past_max_origins_is_refused_and_made_up_writers_cost_nothing() -> None:
    a = GossipNode(Replica("a"), "A", peers=["B"])
    huge = {f"w{i}~{i:08x}": 1 for i in range(MAX_FRAME_VECTOR + 1)}
    a.receive(codec.pack([SYNC, "B", "b~0000abcd", huge, [None, b"\0" * 8, [], []]]), 0.0)
    assert a.stats["rejected_frames"] == 1
    a.replica.counter("c").increment()
    for k in range(5):  # different made-up writers in each digest
        made_up = {f"k{k}w{i}~{i:08x}": 1 for i in range(1000)}
        a.receive(codec.pack([SYNC, "B", "b~0000abcd", made_up, [None, b"\0" * 8, [], []]]), 0.0)
    assert set(a.peers["B"].known) <= set(a.replica.version())
