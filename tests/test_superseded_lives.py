"""Issue 9: a life that a newer life of the same replica replaced leaves version vectors
through the retirement machinery, so restarts do not hold causal stability (and list
collection) back for good, and nothing any member holds of the old life is lost."""

from __future__ import annotations

from pathlib import Path

from crdtmem import Replica
from crdtmem.gossip import GossipNode
from transport import SimNetwork


def test_an_in_memory_restart_at_the_same_address_retires_the_old_life() -> None:
    net = SimNetwork(5, drop=0.1)
    for name in ("n0", "n1", "n2"):
        net.add_node(name)
    for i in range(6):
        net.write("n2", lambda r, i=i: r.list("notes").append(f"old life {i}"))  # type: ignore[misc]
    assert net.run_until_converged(timeout=30)
    old = net.replica("n2").writer_id
    net.crash("n2")
    net.restart("n2", durable=False)  # a supervisor restarts it, memory lost
    new = net.replica("n2").writer_id
    assert new != old
    net.write("n2", lambda r: r.list("notes").append("new life"))
    net.write("n0", lambda r: r.list("notes").delete(0))
    net.run_for(20)
    assert net.converged()
    for name in ("n0", "n1", "n2"):
        replica = net.replica(name)
        assert old in replica.retired() and old not in replica.version()
        assert replica.list("notes").value == [*(f"old life {i}" for i in range(1, 6)), "new life"]
        # the old life no longer holds stability back: the delete was collected
        assert replica.stats()["list_tombstones"] == 0


def test_a_durable_replica_that_lost_its_tail_has_its_old_life_retired(tmp_path: Path) -> None:
    folder = tmp_path / "a"
    a = Replica("a", path=str(folder))
    for _ in range(5):
        a.counter("c").increment()
    old = a.writer_id
    peer = Replica("peer")
    peer.merge(a.delta_since())
    a.close()
    log = folder / "log"
    log.write_bytes(log.read_bytes()[:-10])  # a power cut took the last record's tail
    again = Replica("a", path=str(folder))
    assert again.writer_id != old and again.predecessors() == [old]
    node = GossipNode(again, "A", peers=["P"])
    peer_node = GossipNode(peer, "P", peers=["A"])
    assert old in node.retired  # the new life's gossip stops waiting for the old one
    for step in range(40):  # bounded: digests every interval, answers delivered at once
        now = step * 0.5
        frames = node.tick(now) + peer_node.tick(now)
        for _ in range(20):
            answers = []
            for frame in frames:
                target = peer_node if frame.peer == "P" else node
                answers += target.receive(frame.data, now)
            frames = answers
        if again.counter("c").value == 5 and peer.retired().get(old, (0, False))[0] == 5:
            break
    assert again.counter("c").value == 5  # the peer gave back what the log lost
    assert peer.retired()[old][0] == 5  # the bar rose to what the peer had applied
    assert old in peer_node.retired
