"""Gossip on the simulated network: convergence and zero lost acknowledged writes under
random fault schedules (drop up to 50%, duplication, reordering, partitions, crashes)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from crdtmem import Replica, codec
from crdtmem.gossip import PUSH, SYNC, GossipNode
from transport import SimNetwork

NAMES = [f"n{i}" for i in range(6)]

fault = st.one_of(
    st.tuples(st.just("write"), st.integers(0, 5), st.integers(0, 3)),
    st.tuples(st.just("delete"), st.integers(0, 5), st.integers(0, 1000)),
    st.tuples(st.just("partition"), st.sets(st.integers(0, 5), min_size=1, max_size=3)),
    st.tuples(st.just("one-way"), st.integers(0, 5), st.integers(0, 5)),
    st.tuples(st.just("crash"), st.integers(0, 5)),
    st.tuples(st.just("restart"), st.integers(0, 5)),
    st.tuples(st.just("heal")),
    st.tuples(st.just("run"), st.floats(0.01, 2.0)),
)


@settings(deadline=None, max_examples=settings().max_examples // 3 or 10)
@given(
    seed=st.integers(0, 2**32 - 1),
    size=st.integers(3, 6),
    drop=st.floats(0, 0.5),
    duplicate=st.floats(0, 0.3),
    plan=st.lists(fault, min_size=5, max_size=40),
)
def test_random_fault_schedules_converge_with_no_lost_acknowledged_write(
    seed: int, size: int, drop: float, duplicate: float, plan: list[Any]
) -> None:
    note(f"replay with SimNetwork(seed={seed}, drop={drop}, duplicate={duplicate})")
    net = SimNetwork(seed, drop=drop, duplicate=duplicate, latency=(0.001, 0.05))
    names = NAMES[:size]
    for name in names:
        net.add_node(name)
    acknowledged: list[str] = []

    def add_token(name: str, token: str, field: str = "acked") -> None:
        net.write(
            name,
            lambda r: r.set(field).add(token) if field == "acked" else r.list(field).append(token),
        )

    for name in names:
        add_token(name, f"{name}-first")
        acknowledged.append(f"{name}-first")
    for step in plan:
        kind = step[0]
        if kind == "write":
            name = names[step[1] % size]
            if net.nodes[name].up:
                token = f"{name}-{len(acknowledged)}"
                add_token(name, token)
                if step[2] == 1:
                    add_token(name, token, "log")
                acknowledged.append(token)  # the call returned: acknowledged
        elif kind == "delete":  # list deletes: their elements get collected as they go
            name = names[step[1] % size]
            if net.nodes[name].up and len(net.replica(name).list("log")):
                net.write(name, functools.partial(_delete_at, step[2]))
        elif kind == "partition":
            net.partition([names[i % size] for i in step[1]])
        elif kind == "one-way":
            net.cut(names[step[1] % size], names[step[2] % size], both_ways=False)
        elif kind == "crash":
            net.crash(names[step[1] % size])
        elif kind == "restart":
            name = names[step[1] % size]
            if not net.nodes[name].up:
                net.restart(name, durable=True)
        elif kind == "heal":
            net.heal()
        else:
            net.run_for(step[1])
    net.heal()
    for name in names:
        if not net.nodes[name].up:
            net.restart(name, durable=True)
    assert net.run_until_converged(timeout=600.0), f"no convergence; seed={seed}"
    for node in net.nodes.values():
        assert node.replica.set("acked").value >= set(acknowledged), "lost an acknowledged write"

    # Quiet, every deleted element becomes stable and is collected (under heavy loss a
    # digest may take several tries to land); values stay equal.
    def collected() -> bool:
        return all(n.replica.stats()["list_tombstones"] == 0 for n in net.nodes.values())

    for _ in range(240):  # at most 120 virtual seconds
        if collected():
            break
        net.run_for(net.interval)
    assert collected(), f"deleted elements never collected; seed={seed}"
    assert net.converged()


def _delete_at(position: int, replica: Replica) -> None:
    notes = replica.list("log")
    notes.delete(position % len(notes))


def test_same_seed_replays_the_same_run() -> None:
    def run(seed: int) -> tuple[Any, ...]:
        net = SimNetwork(seed, drop=0.2, duplicate=0.1)
        for name in NAMES[:4]:
            net.add_node(name)
        for i in range(20):
            net.write(NAMES[i % 4], lambda r, item=i: r.list("l").append(item))  # type: ignore[misc]
            net.run_for(0.05)
        net.run_until_converged(timeout=60)
        return net.now, net.messages, net.bytes, net.replica("n0").value()["l"]

    assert run(11) == run(11)
    assert run(11) != run(12)


def test_partition_heal_and_idle_traffic_is_tiny() -> None:
    net = SimNetwork(3)
    for name in NAMES[:4]:
        net.add_node(name)
    net.partition(["n0", "n1"], ["n2", "n3"])
    net.write("n0", lambda r: r.counter("c").increment(1))
    net.write("n3", lambda r: r.counter("c").increment(10))
    net.run_for(5)
    assert net.replica("n1").counter("c").value == 1
    assert net.replica("n2").counter("c").value == 10
    net.heal()
    assert net.run_until_converged(timeout=30)
    assert net.replica("n2").counter("c").value == 11
    # once converged, traffic is digests only: O(peers) small frames per interval
    net.run_for(1)
    messages, volume = net.messages, net.bytes
    net.run_for(10)
    per_node_per_interval = (net.messages - messages) / 4 / (10 / net.interval)
    assert per_node_per_interval <= 3 + 0.5  # one digest to each of 3 peers
    assert (net.bytes - volume) / (net.messages - messages) < 200


def test_a_node_learns_the_group_from_one_seed() -> None:
    net = SimNetwork(5)
    net.add_node("seed", peers=[])
    for name in ("x", "y", "z"):
        net.add_node(name, peers=["seed"])
        net.nodes["seed"].gossip.add_peer(name)
    net.run_for(3)
    assert set(net.nodes["x"].gossip.peers) == {"seed", "y", "z"}
    net.write("x", lambda r: r.set("s").add("hello"))
    assert net.run_until_converged(timeout=10)


def test_crash_without_durable_state_rejoins_under_a_new_incarnation() -> None:
    net = SimNetwork(9)
    for name in NAMES[:3]:
        net.add_node(name)
    net.write("n0", lambda r: r.list("l").append("before"))
    net.run_until_converged(timeout=10)
    net.crash("n0")
    net.restart("n0", durable=False)
    net.write("n0", lambda r: r.list("l").append("after"))
    assert net.run_until_converged(timeout=10)
    # written on an empty list, "after" is concurrent with "before": both survive
    assert sorted(net.replica("n1").list("l").value) == ["after", "before"]


def test_garbage_frames_are_rejected_counted_and_harmless() -> None:
    a = GossipNode(Replica("a"), "A", peers=["B"])
    b = GossipNode(Replica("b"), "B", peers=["A"])
    bad_push = codec.pack([PUSH, "X", "x", {}, b"not a crdtmem message"])
    for garbage in (
        b"",
        b"\xc1\xc1",
        codec.pack([99]),
        codec.pack([PUSH, "", "x", {}, b""]),
        bad_push,
        codec.pack([13, "X", "x", {}, "not a list"]),
        codec.pack([13, "X", "x", {}, [None, b"short", [], []]]),  # members digest: 8 bytes
        codec.pack([13, "X", "x", {}, [None, b"8 bytes!", [["gone"]], []]]),  # no bar
        codec.pack([13, "X", "x", {}, [None, b"8 bytes!", [["gone", -1]], []]]),
        codec.pack([13, "X", "x", {}, [None, b"8 bytes!", [], [""]]]),  # empty replica id
        codec.pack([13, "X", "x", {}, [None, b"8 bytes!", []]]),  # three items, not four
    ):
        assert b.receive(garbage, now=0.0) == []
    assert b.stats["rejected_frames"] == 11
    assert not b.retired and b.replica.retired() == {}
    a.replica.counter("c").increment()
    frames = a.flush(0.0)
    while frames:
        frames = [
            f for frame in frames for f in (b if frame.peer == "B" else a).receive(frame.data, 0.0)
        ]
    assert b.replica.counter("c").value == 1


def test_large_sync_is_split_into_bounded_chunks() -> None:
    a = GossipNode(Replica("a"), "A", peers=["B"], chunk_bytes=2_000)
    b = GossipNode(Replica("b"), "B", peers=["A"])
    for i in range(500):
        a.replica.list("l").append(f"item {i:04d} " + "x" * 20)
    frames = a.flush(0.0)
    sizes = [len(f.data) for f in frames]
    assert len(frames) == 16 and max(sizes) < 2_000 + 500
    while frames:
        out = []
        for frame in frames:
            out += (b if frame.peer == "B" else a).receive(frame.data, 0.0)
        frames = out + a.tick(10.0) + b.tick(10.0)
        if b.replica.version() == a.replica.version():
            break
    assert b.replica.list("l").value == a.replica.list("l").value


def _churn(net: SimNetwork, names: list[str], rounds: int) -> None:
    for i in range(rounds):
        name = names[i % len(names)]
        net.write(name, lambda r, i=i: r.list("notes").append(i))  # type: ignore[misc]
        if i % 2:
            net.write(name, lambda r: r.list("notes").delete(0))
        net.run_for(0.02)


def test_deleted_elements_are_collected_once_stable_and_reads_do_not_change() -> None:
    net = SimNetwork(21, drop=0.1)
    names = NAMES[:4]
    for name in names:
        net.add_node(name)
    _churn(net, names, 200)
    assert net.run_until_converged(timeout=60)
    net.run_for(5)
    live = net.replica("n0").list("notes").value
    assert 100 <= len(live) < 200  # some deletes were concurrent, of the same element
    for node in net.nodes.values():
        stats = node.replica.stats()
        assert stats["list_tombstones"] == 0 and stats["list_collected"] == 200 - len(live)
        assert stats["awaiting_stability"] == 0
        assert node.gossip.stats["collected"] == stats["list_collected"]
    assert net.converged()


def test_a_silent_member_holds_collection_back_until_retired() -> None:
    net = SimNetwork(22)
    names = NAMES[:4]
    for name in names:
        net.add_node(name)
    net.run_for(2)
    net.crash("n3")  # gone for good, without a word
    _churn(net, names[:3], 60)
    net.run_for(10)
    assert all(net.replica(n).stats()["list_tombstones"] == 30 for n in names[:3])
    net.nodes["n0"].gossip.retire("n3")  # an operator's decision, on one node
    net.run_for(5)
    for name in names[:3]:
        assert net.replica(name).stats()["list_tombstones"] == 0
        assert net.replica("n3").writer_id in net.nodes[name].gossip.retired  # it spread
    assert net.converged()


def test_a_retired_replica_is_forgotten_by_version_vectors_and_its_writes_stay() -> None:
    net = SimNetwork(25, drop=0.2)
    names = NAMES[:4]
    for name in names:
        net.add_node(name)
    for i in range(30):
        net.write(names[i % 4], lambda r, i=i: r.set("done").add(i))  # type: ignore[misc]
        net.run_for(0.05)
    assert net.run_until_converged(timeout=30)
    gone = net.replica("n3").writer_id
    net.crash("n3")
    net.nodes["n1"].gossip.retire("n3")  # a name: every life of it
    net.run_for(10)
    for name in names[:3]:
        replica = net.replica(name)
        assert gone not in replica.version()
        assert replica.retired() == {gone: (replica.retired()[gone][0], True)}
        assert replica.set("done").value == set(range(30))  # its writes stay
    before = net.bytes / net.messages
    net.write("n0", lambda r: r.set("done").add("after"))
    assert net.run_until_converged(timeout=10)
    for name in names[:3]:
        assert gone not in net.replica(name).version()
    assert net.bytes / net.messages <= before  # frames no longer carry its entry
    # Collection goes on without it: reports that omit a forgotten replica still count.
    _churn(net, names[:3], 20)
    net.run_for(5)
    assert all(net.replica(n).stats()["list_tombstones"] == 0 for n in names[:3])


def test_a_retired_replica_that_comes_back_is_refused_and_cannot_resurrect_state() -> None:
    net = SimNetwork(23)
    names = NAMES[:3]
    for name in names:
        net.add_node(name)
    net.write("n2", lambda r: r.list("notes").append("old"))
    assert net.run_until_converged(timeout=10)
    net.crash("n2")
    net.write("n0", lambda r: r.list("notes").delete(0))
    net.nodes["n0"].gossip.retire("n2")
    net.run_for(5)
    assert net.replica("n1").stats()["list_collected"] == 1
    # n2 returns with its old state (the element alive) and writes next to it.
    net.restart("n2", durable=True)
    net.write("n2", lambda r: r.list("notes").insert(1, "next to old"))
    net.run_for(5)
    for name in ("n0", "n1"):
        assert net.replica(name).list("notes").value == []
        assert net.nodes[name].gossip.stats["refused_retired"] > 0


def test_a_late_joiner_with_its_own_writes_converges_with_a_group_that_collected() -> None:
    net = SimNetwork(24)
    names = NAMES[:3]
    for name in names:
        net.add_node(name)
    _churn(net, names, 90)
    net.run_for(5)
    assert net.replica("n0").stats()["list_collected"] == 45
    # A new agent writes before it has heard from anyone (its writes are concurrent with
    # everything the group collected), then joins through one seed.
    late = net.add_node("late", peers=[])
    late.replica.list("notes").insert(0, "early bird")
    late.replica.list("notes").append("late append")
    late.gossip.add_peer("n0")
    net.nodes["n0"].gossip.add_peer("late")
    assert net.run_until_converged(timeout=30)
    value = net.replica("n1").list("notes").value
    assert "early bird" in value and "late append" in value and len(value) == 47


def test_a_node_that_leaves_is_retired_by_all_without_an_operator() -> None:
    net = SimNetwork(26, drop=0.2)
    names = NAMES[:4]
    for name in names:
        net.add_node(name)
    for i in range(12):
        net.write("n3", lambda r, i=i: r.set("done").add(f"n3-{i}"))  # type: ignore[misc]
    assert net.run_until_converged(timeout=30)
    net.run_for(2)
    assert net.nodes["n3"].gossip.spread()
    gone = net.replica("n3").writer_id
    net.leave("n3")
    _churn(net, names[:3], 30)
    net.run_for(10)
    for name in names[:3]:
        replica = net.replica(name)
        assert replica.retired() == {gone: (12, True)} and gone not in replica.version()
        assert replica.stats()["list_tombstones"] == 0
        assert replica.set("done").value == {f"n3-{i}" for i in range(12)}
    assert net.converged()


def test_durable_nodes_reopened_from_disk_keep_collecting_and_converge(tmp_path: Path) -> None:
    net = SimNetwork(27, drop=0.1)
    names = NAMES[:3]
    for name in names:
        net.add_node(name, path=str(tmp_path / name))
    _churn(net, names, 60)
    net.run_for(3)
    for round_ in range(3):
        victim = names[round_ % 3]
        net.crash(victim)
        _churn(net, [n for n in names if n != victim], 20)
        net.restart(victim, durable=True)  # really reopened: its log, snapshots, markers
        net.nodes[victim].replica.compact_storage()
        assert net.run_until_converged(timeout=30)
    net.run_for(5)
    assert net.converged()
    for name in names:
        stats = net.replica(name).stats()
        assert stats["list_tombstones"] == 0 and stats["list_collected"] > 0
        net.replica(name).close()


def test_retire_after_retires_a_crashed_member_by_itself() -> None:
    net = SimNetwork(28)
    names = NAMES[:3]
    for name in names:
        net.add_node(name)
    for name in names:
        net.nodes[name].gossip.retire_after = 20.0
    net.run_for(2)
    gone = net.replica("n2").writer_id
    net.crash("n2")  # an agent that died without leaving
    _churn(net, names[:2], 20)
    net.run_for(10)
    assert net.replica("n0").stats()["list_tombstones"] > 0  # still waiting for n2
    net.run_for(20)
    for name in names[:2]:
        assert net.nodes[name].gossip.retired.keys() == {gone}
        assert net.replica(name).stats()["list_tombstones"] == 0
    with pytest.raises(ValueError, match="retire_after"):
        GossipNode(Replica("x"), "x", dead_after=5, retire_after=1)


def test_a_retired_address_is_not_learned_back_from_a_peer_that_has_not_heard() -> None:
    net = SimNetwork(29)
    names = NAMES[:3]
    for name in names:
        net.add_node(name)
    net.run_for(2)
    net.crash("n2")
    n0, n1 = net.nodes["n0"].gossip, net.nodes["n1"].gossip
    n1.peers["n0"].told = None  # its next digest to n0 lists its peers, n2 included
    stale = n1._frame(n1.peers["n0"], SYNC)
    n0.retire("n2")
    n0.receive(stale.data, net.now)
    assert "n2" not in n0.peers  # else n0 would wait for it forever: no stability
    _churn(net, names[:2], 20)
    net.run_for(5)
    assert all(net.replica(n).stats()["list_tombstones"] == 0 for n in names[:2])


# --- the leave policy, as the drivers run it ------------------------------------------


def test_leave_policy_waits_for_acknowledgements_then_for_nothing_past_its_deadline() -> None:
    a = GossipNode(Replica("a"), "A", peers=["B"])
    b = GossipNode(Replica("b"), "B", peers=["A"])
    with pytest.raises(ValueError, match="timeout"):
        a.begin_leave(0.0, -1.0)
    assert not a.leaving and not a.leave_done(100.0)  # nobody asked to leave
    a.replica.counter("c").increment()
    pushes = a.begin_leave(now=1.0, timeout=4.0)
    assert pushes and a.leaving and a.next_deadline() <= 5.0
    assert not a.leave_done(1.0)  # B has not acknowledged
    assert a.leave_done(5.0)  # the deadline
    acks = [f for frame in pushes for f in b.receive(frame.data, 1.0) if f.peer == "A"]
    for ack in acks:
        a.receive(ack.data, 1.0)
    assert a.spread() and a.leave_done(1.0)
    goodbye = a.leave()
    assert [frame.peer for frame in goodbye] == ["B"] and a.left_spread is True
    assert not a.leaving and not a.leave_done(9.0) and a.next_deadline() == a.next_sync
    b.receive(goodbye[0].data, 1.0)
    assert a.replica.writer_id in b.retired


def test_sim_leave_waits_in_virtual_time_for_every_peer_to_acknowledge() -> None:
    net = SimNetwork(31, drop=0.3)  # (seed 30 loses all three goodbyes: best effort)
    for name in NAMES[:4]:
        net.add_node(name)
    net.run_for(2)
    for i in range(12):
        net.write("n3", lambda r, i=i: r.set("done").add(f"n3-{i}"))  # type: ignore[misc]
    started = net.now
    assert not net.nodes["n3"].gossip.spread()  # nothing acknowledged yet
    assert net.leave("n3", timeout=30.0) is True
    assert started < net.now < started + 30.0  # it waited, for the acks and no longer
    assert not net.nodes["n3"].up
    net.run_for(10)
    for name in NAMES[:3]:
        replica = net.replica(name)
        assert replica.set("done").value == {f"n3-{i}" for i in range(12)}
        assert net.replica("n3").writer_id in net.nodes[name].gossip.retired
    with pytest.raises(RuntimeError, match="down"):
        net.leave("n3")


def test_sim_leave_gives_up_at_its_deadline_when_a_peer_is_cut_off() -> None:
    net = SimNetwork(31)
    for name in NAMES[:3]:
        net.add_node(name)
    net.run_for(2)
    net.cut("n2", "n1")
    net.write("n2", lambda r: r.counter("c").increment())
    started = net.now
    assert net.leave("n2", timeout=3.0) is False  # n1 never acknowledged
    assert net.now == pytest.approx(started + 3.0)  # the deadline, not a moment later
    assert not net.nodes["n2"].up and net.nodes["n2"].gossip.left
    assert net.replica("n0").counter("c").value == 1
    net.heal()
    assert net.run_until_converged(timeout=10)  # n0 passes n2's write on to n1
    assert net.replica("n1").counter("c").value == 1


def test_a_replica_closed_under_a_running_node_is_counted_and_the_node_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    net = SimNetwork(30)
    net.add_node("n0", path=str(tmp_path / "n0"))
    net.add_node("n1")
    net.run_for(2)
    closed = net.nodes["n0"]
    closed.replica.close()  # e.g. the agent shut its memory down before the gossip
    for i in range(5):
        net.write("n1", lambda r, i=i: r.list("notes").append(i))  # type: ignore[misc]
    sent = closed.gossip.stats["frames_out"]
    with caplog.at_level("ERROR", logger="crdtmem.gossip"):
        net.run_for(5)
    stats = closed.gossip.stats
    assert stats["replica_closed"] >= 5 and stats["frames_out"] > sent  # still gossiping
    assert "notes" not in closed.replica.value()  # nothing applied, nothing acknowledged
    assert net.nodes["n1"].gossip.peers["n0"].known.get("n1", 0) == 0
    closed_logs = [r for r in caplog.records if "closed" in r.getMessage()]
    assert len(closed_logs) == 1  # logged once, counted every time
