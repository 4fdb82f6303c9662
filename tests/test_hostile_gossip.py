"""A hostile or broken peer cannot crash, blind or bloat a gossip node (issue 10).

Sans-IO and simulator tests of the node's rules, and real loopback sockets for the
drivers (both the threaded and the asyncio one): whatever handling one frame raises is
contained and counted; the log of rejected frames is bounded; a dead loop says so and
``stop()`` does not raise; digests cannot claim this node's own updates; learned
addresses are bounded, dialled under a socket budget, and count as members only once
they answered.

Loopback only; every driver, socket and process a test starts, it stops; waits are
conditions with deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import resource
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from crdtmem import Replica, StorageError, codec
from crdtmem.gossip import (
    ACK,
    MAX_LOGGED_SENDERS,
    MAX_PEERS_LEARNED,
    MAX_PROBES_PER_ROUND,
    PUSH,
    REJECT_LOG_SECONDS,
    SYNC,
    GossipConfig,
    GossipNode,
)
from tests.test_async_gossip import until
from tests.test_zmq_integration import _wait_until
from transport import AsyncZmqGossip, SimNetwork, ZmqGossip, _driver
from transport.loopback import free_loopback_addresses as addresses

GHOST = "tcp://127.0.0.1:9"  # the discard port: nothing answers there
MEMBERS = b"8 bytes!"


def frame(kind: int, sender: str, writer: str, version: dict[str, int], extra: Any) -> bytes:
    """A well-formed gossip frame, as any peer could send."""
    return codec.pack([kind, sender, writer, version, extra])


def digest(sender: str, writer: str, version: dict[str, int], peers: list[str] | None) -> bytes:
    return frame(SYNC, sender, writer, version, [peers, MEMBERS, [], []])


def run_pair(a: GossipNode, b: GossipNode, frames: list[Any], now: float = 0.0) -> None:
    """Deliver frames between two sans-IO nodes until none is left (bounded)."""
    for _ in range(100):
        if not frames:
            return
        out = []
        for f in frames:
            target = a if f.peer == a.address else b if f.peer == b.address else None
            if target is not None:
                out += target.receive(f.data, now)
        frames = out


class LogBytes(logging.Handler):
    """Counts the bytes and lines a logger writes (formatted, tracebacks included)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        self.bytes = 0
        self.lines = 0
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record) + "\n"
        self.bytes += len(text.encode())
        self.lines += text.count("\n")
        self.records.append(record)


@contextlib.contextmanager
def captured(name: str) -> Iterator[LogBytes]:
    handler = LogBytes()
    log = logging.getLogger(name)
    log.addHandler(handler)
    old = log.level
    log.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        log.removeHandler(handler)
        log.setLevel(old)


# --- 1. a node never dies of its input -----------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        OverflowError("int too big to convert"),
        MemoryError(),
        OSError(28, "No space left on device"),
        StorageError("disk full"),
        ValueError("bad"),
        TypeError("bad"),
        KeyError("k"),
        RecursionError("deep"),
    ],
)
def test_whatever_one_frame_raises_is_contained_counted_and_logged(error: Exception) -> None:
    a = GossipNode(Replica("a"), "A", peers=["B"])
    b = GossipNode(Replica("b"), "B", peers=["A"])
    a.replica.counter("c").increment()
    pushes = a.flush(0.0)

    def broken(message: bytes) -> None:
        raise error

    b.replica.merge = broken  # type: ignore[method-assign]
    with captured("crdtmem.gossip") as log:
        for i in range(5):
            b.receive(pushes[0].data, float(i))
    assert b.stats["handler_errors"] == 5
    stored = isinstance(error, OSError)
    assert b.stats["unpersisted"] == (5 if stored else 0)
    assert log.lines > 0 and len(log.records) == 1  # rate-limited: one line in 10 s
    assert log.records[0].exc_info is not None  # the first of its kind has its traceback
    # Storage failed: the push was still answered with what b holds (nothing), so a
    # resends it once b can store again.
    del b.replica.merge
    run_pair(a, b, a.tick(10.0), 10.0)
    run_pair(a, b, b.tick(10.0), 10.0)
    run_pair(a, b, a.tick(11.0), 11.0)
    assert b.replica.counter("c").value == 1


def test_an_error_outside_the_merge_is_contained_too() -> None:
    b = GossipNode(Replica("b"), "B", peers=["A"])

    def boom(peer: object, writer: str, now: float) -> None:
        raise ZeroDivisionError("a bug")

    b._check_duplicate = boom  # type: ignore[method-assign]
    assert b.receive(digest("A", "a", {}, None), 0.0) == []
    assert b.stats["handler_errors"] == 1


def test_a_failing_maintenance_round_is_contained_and_digests_still_go_out() -> None:
    a = GossipNode(Replica("a"), "A", peers=["B"])

    def full(stable: object) -> int:
        raise StorageError("no space left on device")

    a.replica.compact_log = full  # type: ignore[method-assign]
    with captured("crdtmem.gossip") as log:
        for i in range(3):
            frames = a.tick(float(i))
            assert [f.peer for f in frames] == ["B"]  # the digest
    assert a.stats["maintenance_errors"] == 3
    assert len(log.records) == 1 and log.records[0].exc_info is not None


def test_200000_garbage_frames_write_a_bounded_log() -> None:
    node = GossipNode(Replica("a"), "A", peers=["B"])
    made_up = [frame(99, f"tcp://10.0.{i // 256}.{i % 256}:1", "x", {}, None) for i in range(4096)]
    undecodable = [b"\xc1" + bytes([i % 256]) for i in range(256)]
    with captured("crdtmem.gossip") as log:
        for i in range(200_000):
            now = i * 20.0 / 200_000  # two rate-limit windows
            if i % 3:
                node.receive(made_up[i % len(made_up)], now)
            else:  # each from its own connection
                node.receive_message([i.to_bytes(5, "big"), undecodable[i % 256]], now)
        for _ in range(1000):  # wrong number of parts: rate-limited too
            node.receive_message([b"\x00\x01"] * 3, 20.0)
    assert node.stats["rejected_frames"] == 201_000
    windows = 20.0 / REJECT_LOG_SECONDS + 1
    assert log.lines <= (MAX_LOGGED_SENDERS + 1) * windows + 1
    assert log.bytes < 100_000  # (26.7 MB before)
    assert len(node._rejects) <= MAX_LOGGED_SENDERS + 1
    print(f"200,000 garbage frames: {log.lines} log lines, {log.bytes} bytes")


def test_rejected_frames_log_one_line_per_sender_per_window() -> None:
    node = GossipNode(Replica("a"), "A")
    with captured("crdtmem.gossip") as log:
        for i in range(100):
            node.receive(frame(99, "tcp://127.0.0.1:5", "x", {}, None), i * 0.01)
        node.receive(frame(99, "tcp://127.0.0.1:5", "x", {}, None), REJECT_LOG_SECONDS + 1)
    assert len(log.records) == 2
    assert "99 more rejected" in log.records[1].getMessage()


# --- 3. claims are not facts -----------------------------------------------------------


def test_a_digest_claiming_more_of_this_node_than_it_made_is_ignored_and_resent() -> None:
    a = GossipNode(Replica("a"), "A", peers=["B"])
    b = GossipNode(Replica("b"), "B", peers=["A"])
    for _ in range(5):
        a.replica.counter("c").increment()
    run_pair(a, b, a.flush(0.0))
    own = a.replica.writer_id
    assert a.peers["B"].known[own] == 5
    before = dict(a.replica.version())
    lie = {own: 2**60, "x~00000000": 2**60}
    answers = a.receive(digest("B", b.replica.writer_id, lie, None), 1.0)
    assert a.stats["false_claims"] == 1
    assert a.replica.version() == before  # a digest never moves the version
    assert own not in a.peers["B"].known or a.peers["B"].known[own] < 5
    pushes = [f for f in answers if codec.unpack(f.data)[0] == PUSH]
    assert pushes  # its own updates, again (B applies them idempotently)
    for kind in (ACK, PUSH):
        extra = None if kind == ACK else a.replica.delta_since(a.replica.version())
        a.receive(frame(kind, "B", b.replica.writer_id, {own: 10**9}, extra), 2.0)
    assert a.stats["false_claims"] == 3
    assert a.replica.version() == before
    assert a.stable_version().get(own, 0) <= 5


# --- 4 and 5. learned addresses: bounded, and members only once they answered ------------


def test_learned_addresses_are_bounded_and_count_only_once_they_answered() -> None:
    a = GossipNode(Replica("a"), "A", peers=["B"])
    members = a._members()
    named = [f"tcp://127.0.0.1:{20000 + i}" for i in range(MAX_PEERS_LEARNED)]
    a.receive(digest("B", "b", {}, named), 0.0)
    assert len(a.peers) == MAX_PEERS_LEARNED + 1 and "B" in a.peers
    assert a._members() != members  # B now has a replica id: b
    members = a._members()
    assert a.stable_version() == {} or a.stable_version() == a.peers["B"].known
    more = [f"tcp://127.0.0.1:{30000 + i}" for i in range(10)]
    a.receive(digest("B", "b", {}, more), 0.0)
    assert len(a.peers) == MAX_PEERS_LEARNED + 1  # the oldest unanswered made room
    assert a.stats["peers_dropped"] == 10
    assert a._members() == members  # none of them counts
    a.add_peer("C")  # configured: kept, beyond the bound
    assert len(a.peers) == MAX_PEERS_LEARNED + 2
    frames = a.tick(0.0)  # a member round plus a few probes of unanswered addresses
    probed = [f.peer for f in frames if f.peer not in ("B", "C")]
    assert 0 < len(probed) <= MAX_PROBES_PER_ROUND
    # A digest lists members only: the made-up addresses are not spread.
    a.peers["B"].told = None  # (its next digest lists the peers, changed or not)
    listed = codec.unpack(a._frame(a.peers["B"], SYNC).data)[4][0]
    assert listed == ["C"]
    # One of them answers (its connection came up): it counts from then on.
    a.peer_connected(more[-1], 0.5)
    assert a.peers[more[-1]].verified and a._members() != members
    # The others are dropped once unanswered past the TTL; configured ones stay.
    ttl = a.config.unverified_ttl
    a.tick(ttl + 1.0)
    assert set(a.peers) == {"B", "C", more[-1]}


def test_a_flood_of_made_up_senders_gets_a_few_answers_per_round() -> None:
    a = GossipNode(Replica("a"), "A", peers=["B"])
    answered = set()
    for i in range(100):
        sender = f"tcp://127.0.0.1:{50000 + i}"
        answered |= {f.peer for f in a.receive(digest(sender, f"s{i}", {}, None), 0.0)}
    assert len(answered) == MAX_PROBES_PER_ROUND  # the others wait for the rounds' probes
    a.tick(0.0)
    late = a.receive(digest("tcp://127.0.0.1:60000", "late", {}, None), 0.1)
    assert [f.peer for f in late] == ["tcp://127.0.0.1:60000"]  # a new round: answered


def test_unverified_ttl_follows_the_timing_settings() -> None:
    assert GossipConfig().unverified_ttl == 32.0  # 4 x the 8 s backoff cap
    assert GossipConfig(dead_after=20.0).unverified_ttl == 80.0
    assert GossipConfig(interval=0.05, dead_after=0.3, max_backoff=0.2).unverified_ttl == 30.0


def _churn(net: SimNetwork, names: list[str], rounds: int) -> None:
    for i in range(rounds):
        name = names[i % len(names)]
        net.write(name, lambda r, i=i: r.list("notes").append(i))  # type: ignore[misc]
        if i % 2:
            net.write(name, lambda r: r.list("notes").delete(0))
        net.run_for(0.02)


def test_one_ack_from_a_made_up_address_does_not_stop_collection_in_the_simulator() -> None:
    net = SimNetwork(3)
    names = ["n0", "n1"]
    for name in names:
        net.add_node(name)
    n0 = net.nodes["n0"].gossip
    n0.receive(frame(ACK, GHOST, "ghost", {}, None), net.now)
    assert GHOST in n0.peers and not n0.peers[GHOST].counts
    _churn(net, names, 100)
    assert net.run_until_converged(timeout=30)
    net.run_for(10)
    for name in names:
        stats = net.replica(name).stats()
        assert stats["list_tombstones"] == 0 and stats["log_entries"] == 0, stats
        assert GHOST not in [p.address for p in net.nodes[name].gossip._members_now()]
    assert GHOST not in net.nodes["n1"].gossip.peers  # never spread
    net.run_for(n0.config.unverified_ttl + 5)
    assert GHOST not in n0.peers and n0.stats["peers_dropped"] >= 1
    # Nor does a restart make it a member (the restarted node is configured with its
    # members only).
    n0.receive(frame(ACK, GHOST, "ghost", {}, None), net.now)
    net.crash("n0")
    net.restart("n0", durable=False)
    assert GHOST not in net.nodes["n0"].gossip.peers


def test_peers_learned_through_a_seed_answer_and_join_fast_in_the_simulator() -> None:
    net = SimNetwork(5)
    net.add_node("seed", peers=[])
    for name in ("n1", "n2", "n3"):
        net.add_node(name, peers=["seed"])  # know only the seed; the seed knows them
    net.write("n1", lambda r: r.list("notes").append("x"))
    net.write("n3", lambda r: r.list("notes").append("y"))
    assert net.run_until_converged(timeout=30)
    net.run_for(5)
    n1 = net.nodes["n1"].gossip
    assert {"n2", "n3"} <= set(n1.peers) and all(p.counts for p in n1.peers.values())
    net.write("n2", lambda r: r.list("notes").delete(0))
    assert net.run_until_converged(timeout=30)
    net.run_for(5)
    assert all(net.replica(n).stats()["list_tombstones"] == 0 for n in net.nodes)
    assert all(node.gossip.stats["false_claims"] == 0 for node in net.nodes.values())


def test_a_full_disk_on_the_receiving_side_is_survived_and_repaired_in_the_simulator() -> None:
    net = SimNetwork(11, drop=0.05)
    for name in ("n0", "n1", "n2"):
        net.add_node(name)
    full = {"on": True}
    replica = net.replica("n1")
    merge = replica.merge

    def disk(message: bytes) -> None:
        if full["on"]:
            raise StorageError("no space left on device")
        merge(message)

    replica.merge = disk  # type: ignore[method-assign]
    for i in range(30):
        net.write("n0", lambda r, i=i: r.counter("c").increment())  # type: ignore[misc]
        net.run_for(0.05)
    net.run_for(2)
    assert net.nodes["n1"].gossip.stats["unpersisted"] > 0
    assert replica.counter("c").value == 0
    full["on"] = False  # space returns: no operator action
    assert net.run_until_converged(timeout=30)
    assert replica.counter("c").value == 30


# --- the drivers, over real loopback sockets -----------------------------------------


def test_socket_budget_follows_the_process_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    context: zmq.Context[Any] = zmq.Context.instance()
    by_zmq = context.get(zmq.MAX_SOCKETS) // 6  # 1023 // 2 // 3 = 170 by default
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 4096))
    assert _driver.socket_budget(context) == min(128, by_zmq)
    monkeypatch.setattr(resource, "getrlimit", lambda _: (64, 4096))
    assert _driver.socket_budget(context) == 8
    monkeypatch.setattr(resource, "getrlimit", lambda _: (2, 4096))
    assert _driver.socket_budget(context) == 1
    infinite = resource.RLIM_INFINITY
    monkeypatch.setattr(resource, "getrlimit", lambda _: (infinite, infinite))
    assert _driver.socket_budget(context) == min(256, by_zmq)


@contextlib.contextmanager
def raw_dealer(address: str) -> Iterator[zmq.Socket[bytes]]:
    """A plain socket to a node's ROUTER: what a hostile process sends with."""
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    try:
        yield sock
    finally:
        sock.close(linger=0)


def _write_and_delete(r: Replica, n: int) -> None:
    for i in range(n):
        r.list("notes").append(i)
    for _ in range(n):
        r.list("notes").delete(0)


def _collected(*replicas: Replica) -> Callable[[], bool]:
    """Converged, deleted list elements collected and the update logs trimmed: what a
    member that never answers would hold back for good."""

    def done() -> bool:
        stats = [r.stats() for r in replicas]
        return len({str(r.version()) for r in replicas}) == 1 and all(
            s["list_tombstones"] == 0 and s["log_entries"] == 0 for s in stats
        )

    return done


def test_threaded_pair_survives_garbage_a_flood_of_addresses_and_a_ghost() -> None:
    addr_a, addr_b = addresses(2)
    a, b = Replica("a"), Replica("b")
    ga = ZmqGossip(a, bind=addr_a, peers=[addr_b], interval=0.05, dead_after=0.5)
    gb = ZmqGossip(b, bind=addr_b, peers=[addr_a], interval=0.05, dead_after=0.5)
    with ga, gb:
        assert ga.health == "running" and ga.stats["healthy"] == 1
        ga._core.budget = 8  # a small budget, to see it kept
        named = [f"tcp://127.0.0.1:{p}" for p in range(40000, 40000 + MAX_PEERS_LEARNED)]
        with raw_dealer(addr_a) as hostile:
            hostile.send(b"\xc1garbage")
            hostile.send_multipart([b"x", b"y"])
            hostile.send(digest(GHOST, "ghost", {}, named))
            hostile.send(frame(ACK, GHOST, "ghost", {}, None))
            assert _wait_until(lambda: ga.stats["rejected_frames"] >= 2)
            assert _wait_until(lambda: ga.stats["peers_closed"] > 0)
        _write_and_delete(a, 50)
        _write_and_delete(b, 50)
        assert _wait_until(_collected(a, b), 60)
        assert ga.stats["open_peers"] <= 8
        assert ga.health == "running" and ga.stats["healthy"] == 1
        node = ga.node
        assert node is not None and GHOST in node.peers and not node.peers[GHOST].counts
    assert ga.health == "stopped" and ga.error is None


@pytest.mark.asyncio
async def test_async_pair_survives_garbage_a_flood_of_addresses_and_a_ghost() -> None:
    addr_a, addr_b = addresses(2)
    a, b = Replica("a"), Replica("b")
    ga = AsyncZmqGossip(a, bind=addr_a, peers=[addr_b], interval=0.05, dead_after=0.5)
    gb = AsyncZmqGossip(b, bind=addr_b, peers=[addr_a], interval=0.05, dead_after=0.5)
    async with ga, gb:
        ga._core.budget = 8
        named = [f"tcp://127.0.0.1:{p}" for p in range(40000, 40000 + MAX_PEERS_LEARNED)]
        with raw_dealer(addr_a) as hostile:
            hostile.send(b"\xc1garbage")
            hostile.send(digest(GHOST, "ghost", {}, named))
            hostile.send(frame(ACK, GHOST, "ghost", {}, None))
            assert await until(lambda: ga.stats["peers_closed"] > 0, 30)
        _write_and_delete(a, 50)
        _write_and_delete(b, 50)
        assert await until(_collected(a, b), 60)
        assert ga.stats["open_peers"] <= 8
        assert ga.health == "running" and ga.stats["healthy"] == 1
        node = ga.node
        assert node is not None and GHOST in node.peers and not node.peers[GHOST].counts
    assert ga.health == "stopped"


def _kill_tick(node: GossipNode) -> None:
    def tick(now: float) -> list[Any]:
        raise RuntimeError("a bug outside frame handling")

    node.tick = tick  # type: ignore[method-assign]


def test_a_dead_threaded_loop_is_reported_and_stop_does_not_raise() -> None:
    (addr,) = addresses(1)
    a = Replica("a")
    gossip = ZmqGossip(a, bind=addr, interval=0.05)
    with captured("transport.zmq") as log:
        gossip.start()
        try:
            assert gossip.node is not None
            _kill_tick(gossip.node)
            a.counter("c").increment()  # wakes the loop, which dies
            assert _wait_until(lambda: gossip.health == "failed")
            assert isinstance(gossip.error, RuntimeError) and gossip.stats["healthy"] == 0
            a.counter("c").increment()  # a write while dead: loud
        finally:
            gossip.stop()  # does not raise
    died = [r for r in log.records if "died" in r.getMessage()]
    assert died and died[0].levelno == logging.ERROR and died[0].exc_info is not None
    assert any("not gossiped" in r.getMessage() for r in log.records)
    assert gossip.health == "failed"
    gossip.start()  # a fresh run
    try:
        assert gossip.health == "running" and gossip.error is None
    finally:
        gossip.stop()


@pytest.mark.asyncio
async def test_a_dead_async_loop_is_reported_and_stop_does_not_raise() -> None:
    (addr,) = addresses(1)
    a = Replica("a")
    gossip = AsyncZmqGossip(a, bind=addr, interval=0.05)
    with captured("transport.zmq") as log:
        await gossip.start()
        try:
            assert gossip.node is not None
            _kill_tick(gossip.node)
            a.counter("c").increment()
            assert await until(lambda: gossip.health == "failed")
            assert isinstance(gossip.error, RuntimeError) and gossip.stats["healthy"] == 0
            a.counter("c").increment()
        finally:
            await gossip.stop()  # does not raise
    died = [r for r in log.records if "died" in r.getMessage()]
    assert died and died[0].exc_info is not None
    assert any("not gossiped" in r.getMessage() for r in log.records)


def test_a_frame_that_raises_in_a_running_driver_leaves_it_running() -> None:
    addr_a, addr_b = addresses(2)
    a, b = Replica("a"), Replica("b")
    merge = b.merge
    failures = {"left": 3}

    def flaky(message: bytes) -> None:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise OverflowError("int too big to convert")
        merge(message)

    b.merge = flaky  # type: ignore[method-assign]
    with (
        ZmqGossip(a, bind=addr_a, peers=[addr_b], interval=0.05, dead_after=0.5),
        ZmqGossip(b, bind=addr_b, peers=[addr_a], interval=0.05, dead_after=0.5) as gb,
    ):
        for _ in range(5):
            a.counter("c").increment()
        assert _wait_until(lambda: b.counter("c").value == 5, 30)
        assert gb.stats["handler_errors"] >= 1 and gb.health == "running"


@pytest.mark.asyncio
async def test_a_frame_that_raises_in_a_running_async_driver_leaves_it_running() -> None:
    addr_a, addr_b = addresses(2)
    a, b = Replica("a"), Replica("b")
    merge = b.merge
    failures = {"left": 3}

    def flaky(message: bytes) -> None:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise StorageError("no space left on device")
        merge(message)

    b.merge = flaky  # type: ignore[method-assign]
    ga = AsyncZmqGossip(a, bind=addr_a, peers=[addr_b], interval=0.05, dead_after=0.5)
    gb = AsyncZmqGossip(b, bind=addr_b, peers=[addr_a], interval=0.05, dead_after=0.5)
    async with ga, gb:
        for _ in range(5):
            a.counter("c").increment()
        assert await until(lambda: b.counter("c").value == 5, 30)
        assert gb.stats["unpersisted"] >= 1 and gb.health == "running"


def test_one_digest_naming_1000_addresses_under_ulimit_1024(tmp_path: Path) -> None:
    """Seen-item 2, in a process of its own with ``RLIMIT_NOFILE`` at 1024."""
    script = textwrap.dedent(
        f"""
        import resource, sys, time
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
        import zmq
        from crdtmem import Replica, codec
        from transport import ZmqGossip
        from transport.loopback import free_loopback_addresses
        (addr,) = free_loopback_addresses(1)
        named = [f"tcp://127.0.0.1:{{p}}" for p in range(41000, 42000)]
        frame = codec.pack([13, {GHOST!r}, "ghost", {{}}, [named, b"8 bytes!", [], []]])
        with ZmqGossip(Replica("a"), bind=addr, interval=0.01) as g:
            sock = zmq.Context.instance().socket(zmq.DEALER)
            sock.connect(addr)
            sock.send(frame)
            deadline = time.monotonic() + 60
            while g.stats["peers_closed"] < 200 and time.monotonic() < deadline:
                time.sleep(0.05)
            sock.close(linger=0)
            print(g.health, g.stats["open_peers"], g.stats["peers_closed"], g._core.budget)
            sys.exit(0 if g.health == "running" and g.stats["peers_closed"] >= 200 else 1)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    health, open_peers, _closed, budget = done.stdout.split()
    assert health == "running" and int(open_peers) <= int(budget) <= 256


def test_the_rejected_frame_log_names_the_connection_of_undecodable_frames() -> None:
    node = GossipNode(Replica("a"), "A")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    log = logging.getLogger("crdtmem.gossip")
    log.addHandler(handler)
    try:
        node.receive_message([b"\x01\x02", b"\xc1"], 0.0)
        node.receive_message([b"\x03\x04", b"\xc1"], 0.0)  # another connection: its own line
        node.receive_message([b"\x03\x04", b"\xc1"], 0.0)  # same one: suppressed
    finally:
        log.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert "connection 0102" in lines[0] and "connection 0304" in lines[1]


def test_stop_of_an_async_driver_whose_task_died_does_not_raise() -> None:
    async def scenario() -> str:
        (addr,) = addresses(1)
        gossip = await AsyncZmqGossip(Replica("a"), bind=addr, interval=0.05).start()
        assert gossip.node is not None
        _kill_tick(gossip.node)
        assert await until(lambda: gossip.health == "failed")
        await gossip.stop()
        return gossip.health

    assert asyncio.run(scenario()) == "failed"
