"""Issue 10, "How it is proved": no frame can crash, blind, poison or bloat a node.

Each case the issue saw is replayed against running nodes: one honest pair (two ZeroMQ
drivers in this process, or one here and one in a constrained process of
tests/hostile_agent.py) and a hostile process (tests/hostile_agent.py ``send``) whose raw
DEALER sends the case's crafted frames to a node's ROUTER. After every attack the test
checks that

- the gossip loops are alive (``health == "running"``, ``stats["healthy"] == 1``),
- the honest pair keeps converging: both write after the attack, and every write that
  returned (acknowledged) reaches both,
- memory stays within the stated bound (replica stats against the named limits:
  ``MAX_BUFFERED_UPDATES``, ``MAX_BUFFERED_BYTES``, ``MAX_ORIGINS``; log entries and list
  tombstones; peak RSS for the decoding bomb),

and the same frames run in the simulator (:class:`~transport.SimNetwork`: fast and
deterministic), where the frames the nodes answer with are delivered at once.

Where a bound is proved with fewer frames than the issue used, the case says so: the
limit is what is checked, and a few times the limit's worth of frames proves it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from crdtmem import Replica
from crdtmem.codec import MAX_COUNT, MAX_LAMPORT, MAX_LOGICAL, MAX_SEQ, MAX_WALL
from crdtmem.gossip import MAX_PEERS_LEARNED, UNVERIFIED_PEER_TTL
from crdtmem.identity import MAX_WRITER_ID
from crdtmem.updatelog import MAX_BUFFERED_BYTES, MAX_BUFFERED_UPDATES, MAX_ORIGINS
from tests import hostile_agent as hostile
from transport import AsyncZmqGossip, SimNetwork, ZmqGossip
from transport.loopback import free_loopback_addresses as addresses

AGENT = str(Path(__file__).with_name("hostile_agent.py"))
ROOT = str(Path(__file__).resolve().parent.parent)
ENV = {**os.environ, "PYTHONPATH": ROOT}
# Waits that normally take milliseconds; generous for a loaded 2-core machine.
DEADLINE = 60.0
INTERVAL = 0.1
MIB = 1024 * 1024

Driver = ZmqGossip | AsyncZmqGossip

# Cases the integration of the issue-10 branches does not survive yet (strict: a fix
# makes these tests pass, which fails them until the marker is removed). The real-socket
# versions are not run meanwhile (each would wait out its deadline); remove their markers
# together with the simulator ones.
CASE_3_OPEN = pytest.mark.xfail(
    strict=True,
    reason="issue 10 case 3 open: after a state's false claim of a writer's updates, the "
    "writer's later list writes never arrive (updates holding list content are never "
    "applied again in a claimed range) and version() keeps counting the claim",
)
CASE_4_OPEN = pytest.mark.xfail(
    strict=True,
    reason="issue 10 case 4 open: a list that has seen lamport MAX_LAMPORT takes no more "
    "inserts, and a register at (MAX_WALL, MAX_LOGICAL) no more writes, on every replica "
    "(ValueError): decode accepts the one value no timestamp or lamport can follow",
)
OPEN_IN_SIM = {"3 false claim": CASE_3_OPEN, "4 largest": CASE_4_OPEN}


# --- helpers -----------------------------------------------------------------------------


def wait_until(condition: Callable[[], bool], timeout: float = DEADLINE) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def driver_stats(driver: Driver) -> dict[str, int]:
    """A driver's counters (``stats``, called if it is a method)."""
    stats: Any = driver.stats
    return dict(stats() if callable(stats) else stats)


def assert_alive(*drivers: Driver) -> None:
    for driver in drivers:
        assert driver.health == "running", (driver.health, driver.error)
        assert driver_stats(driver)["healthy"] == 1
        assert driver.error is None


def assert_bounded(replica: Replica, *, log_entries: int = 100_000) -> None:
    """The replica's memory is within the named limits."""
    stats = replica.stats()
    assert stats["buffered_updates"] <= MAX_BUFFERED_UPDATES, stats
    assert stats["buffered_bytes"] <= MAX_BUFFERED_BYTES, stats
    assert stats["log_entries"] <= log_entries, stats
    assert len(replica.version()) <= MAX_ORIGINS, len(replica.version())


class Acked:
    """Writes that returned (acknowledged), each a set item: all must reach every replica."""

    def __init__(self) -> None:
        self.items: set[str] = set()

    def write(self, replica: Replica, tag: str, count: int = 3) -> None:
        for i in range(count):
            item = f"{replica.replica_id}-{tag}-{i}"
            replica.set("items").add(item)
            self.items.add(item)

    def everywhere(self, *replicas: Replica) -> bool:
        return all(self.items <= r.set("items").value for r in replicas)


def converge(acked: Acked, a: Replica, b: Replica, tag: str) -> None:
    """Both write now; every acknowledged write reaches both, and their values agree."""
    acked.write(a, f"{tag}-a")
    acked.write(b, f"{tag}-b")
    assert wait_until(lambda: acked.everywhere(a, b) and a.value() == b.value()), (
        sorted(acked.items - a.set("items").value),
        sorted(acked.items - b.set("items").value),
    )


def run_hostile(
    target: str, case: str, *, victim: str = "victim", count: int = 1, size: int = 1
) -> int:
    """Run the hostile process for ``case`` against ``target`` until it has sent every
    frame (bounded; killed otherwise); returns how many frames it sent."""
    command = [sys.executable, AGENT, "send", "--target", target, "--case", case]
    command += ["--victim", victim, "--count", str(count), "--size", str(size)]
    done = subprocess.run(
        command, env=ENV, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    word, frames, *_ = done.stdout.split()
    assert word == "SENT", done.stdout
    return int(frames)


def attack_counted(
    target: str,
    handled_in: Callable[[], int],
    honest_out: Callable[[], int],
    case: str,
    **options: Any,
) -> None:
    """Run the hostile process against the node at ``target`` and wait until that node
    has handled every frame it sent: frames handled (``handled_in``), minus every frame
    its one honest sender made (``honest_out``), reach the hostile's count. The hostile's
    trailer of rejected frames comes last on its connection, so the case's own frames
    were handled before."""
    before_in, before_out = handled_in(), honest_out()
    frames = run_hostile(target, case, **options)

    def handled() -> int:
        return handled_in() - before_in - (honest_out() - before_out)

    assert wait_until(lambda: handled() >= frames), (handled(), frames)


def attack(target: Driver, honest: Driver, case: str, **options: Any) -> None:
    """:func:`attack_counted` against ``target``, whose one honest peer is ``honest``."""
    attack_counted(
        target.address,
        lambda: driver_stats(target)["frames_in"],
        lambda: driver_stats(honest)["frames_out"],
        case,
        **options,
    )


@contextlib.contextmanager
def honest_pair(**options: Any) -> Iterator[tuple[ZmqGossip, ZmqGossip]]:
    """Replicas a and b gossiping over loopback in this process, connected, stopped on exit
    (``stop`` must not raise, whatever happened to the loops)."""
    addr_a, addr_b = addresses(2)
    a, b = Replica("a"), Replica("b")
    ga = ZmqGossip(a, bind=addr_a, peers=[addr_b], interval=INTERVAL, dead_after=1.0, **options)
    gb = ZmqGossip(b, bind=addr_b, peers=[addr_a], interval=INTERVAL, dead_after=1.0, **options)
    with ga, gb:
        yield ga, gb


class Node:
    """An honest node in its own process (tests/hostile_agent.py ``node``), stopped by the
    test: one command per stdin line, one answer per stdout line."""

    def __init__(self, name: str, bind: str, peers: list[str], *extra: str) -> None:
        command = [sys.executable, AGENT, "node", "--name", name, "--bind", bind]
        command += ["--peers", ",".join(peers), *extra]
        self.proc = subprocess.Popen(
            command, env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.address = self.answer("READY")

    def answer(self, *words: str, timeout: float = DEADLINE) -> str:
        """The rest of the next stdout line, which must start with one of ``words``."""
        assert self.proc.stdout is not None
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()))  # type: ignore[union-attr]
        reader.daemon = True
        reader.start()
        reader.join(timeout)
        assert result and result[0], f"no answer from the node (exit {self.proc.poll()})"
        word, _, rest = result[0].strip().partition(" ")
        assert word in words, result[0]
        return rest

    def ask(self, command: str, *words: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.answer(*words)

    def stats(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.ask("stats", "STATS"))
        return parsed

    def frames_in(self) -> int:
        count: int = self.stats()["gossip"]["frames_in"]
        return count

    def write(self, tag: str, count: int, acked: Acked) -> str:
        """Writes ``count`` items; records the ones that returned as acknowledged."""
        answer = self.ask(f"write {tag} {count}", "WROTE", "FULL")
        done = int(answer.split()[0])
        acked.items.update(f"{tag}-{i}" for i in range(done))
        return answer

    def stop(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.ask("quit", "FINAL"))
        self.proc.wait(timeout=30)
        return parsed

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None and not stream.closed:
                stream.close()


@contextlib.contextmanager
def node_process(name: str, bind: str, peers: list[str], *extra: str) -> Iterator[Node]:
    node = Node(name, bind, peers, *extra)
    try:
        yield node
    finally:
        node.kill()


def ga_frames_out(driver: Driver) -> Callable[[], int]:
    return lambda: driver_stats(driver)["frames_out"]


def assert_node_alive(stats: dict[str, Any]) -> None:
    assert stats["health"] == "running", stats["error"]
    assert stats["gossip"]["healthy"] == 1, stats["gossip"]


def inject(net: SimNetwork, target: str, frames: list[bytes], limit: int = 1_000_000) -> None:
    """Deliver hostile ``frames`` to simulated node ``target`` now; the frames nodes
    answer with are delivered at once to the simulated nodes they are for (bounded), and
    dropped when they are for the hostile (nothing there)."""
    queue = collections.deque((target, data) for data in frames)
    for _ in range(limit):
        if not queue:
            return
        name, data = queue.popleft()
        for answer in net.nodes[name].gossip.receive(data, net.now):
            if answer.peer in net.nodes and net.nodes[answer.peer].up:
                queue.append((answer.peer, answer.data))
    raise AssertionError("answers to the hostile frames never settled")


@contextlib.contextmanager
def log_bytes() -> Iterator[list[int]]:
    """Bytes logged by ``crdtmem`` and ``transport`` while the block runs (one total)."""
    total = [0]

    class Counter(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            total[0] += len(self.format(record)) + 1

    handler = Counter(logging.DEBUG)
    loggers = [logging.getLogger("crdtmem"), logging.getLogger("transport")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield total
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


def every_type(replica: Replica, tag: str) -> None:
    """One write on every field type."""
    replica.counter("votes").increment()
    replica.gcounter("hits").increment()
    replica.register("notes").set(f"{tag} notes")
    replica.register("shared").set(f"{tag} shared")
    replica.mvregister("mv").set(tag)
    replica.set("tags").add(tag)
    findings = replica.list("findings")
    findings.append(tag)
    findings.insert(0, f"{tag} first")
    replica.map("m").register("k").set(tag)
    replica.map("m").counter("c").increment()
    replica.text("t").insert(0, tag)


def sim_pair(seed: int = 1) -> SimNetwork:
    net = SimNetwork(seed)
    net.add_node("a")
    net.add_node("b")
    return net


def sim_converge(net: SimNetwork, acked: Acked, tag: str) -> None:
    for name in ("a", "b"):
        net.write(name, lambda r, name=name: acked.write(r, f"{tag}-{name}"))  # type: ignore[misc]
    assert net.run_until_converged(timeout=60.0)
    assert acked.everywhere(net.replica("a"), net.replica("b"))


# --- the simulator: every case, fast and deterministic -------------------------------------


def _victim(net: SimNetwork) -> str:
    return net.replica("a").writer_id


SIM_CASES: dict[str, Callable[[SimNetwork], list[bytes]]] = {
    "1 overflow": lambda net: hostile.case_overflow(_victim(net)),
    "2 wide digest": lambda net: hostile.case_wide_digest(1024),
    "3 false claim": lambda net: hostile.case_false_claim(_victim(net), MAX_SEQ),
    "4 largest": lambda net: hostile.case_largest(MAX_WALL, MAX_LOGICAL, MAX_LAMPORT, MAX_COUNT),
    "6 bomb": lambda net: hostile.case_bomb(MIB),
    "7 undeliverable": lambda net: hostile.case_undeliverable(
        min(200, MAX_BUFFERED_BYTES // MIB + 8), MIB
    ),
    "7 early origins": lambda net: hostile.case_origins(100_000, 5_000, deliverable=False),
    "8 ghost ack": lambda net: hostile.case_ghost_ack(),
    # (the 20,000 in test_sim_made_up_origins_stay_out_of_version_vectors)
    "9 origins": lambda net: hostile.case_origins(2 * MAX_ORIGINS + 1_000, 2_000, deliverable=True),
    "10 garbage": lambda net: hostile.case_garbage(20_000),
}


@pytest.mark.parametrize(
    "case", [pytest.param(case, marks=OPEN_IN_SIM.get(case, ())) for case in sorted(SIM_CASES)]
)
def test_sim_pair_survives_and_converges(case: str) -> None:
    """Any case, sent to b: nothing raises out of the node, both keep converging on every
    type, and b stays within the limits."""
    net = sim_pair()
    acked = Acked()
    sim_converge(net, acked, "before")
    inject(net, "b", SIM_CASES[case](net))
    for name in ("a", "b"):
        net.write(name, lambda r, name=name: every_type(r, name))  # type: ignore[misc]
    sim_converge(net, acked, "after")
    assert net.replica("a").value() == net.replica("b").value()
    for name in ("a", "b"):
        assert_bounded(net.replica(name))
        learned = [p for p in net.nodes[name].gossip.peers.values() if not p.configured]
        assert len(learned) <= MAX_PEERS_LEARNED


def test_sim_overflow_claim_is_rejected_before_it_spreads() -> None:
    """Case 1: the writer's version entry never jumps to 2**64-1, here or at the writer."""
    net = sim_pair()
    acked = Acked()
    sim_converge(net, acked, "before")
    inject(net, "b", hostile.case_overflow(_victim(net)))
    for name in ("a", "b"):
        assert max(net.replica(name).version().values()) <= MAX_SEQ
    sim_converge(net, acked, "after")


@CASE_3_OPEN
def test_sim_false_claim_costs_no_write_of_the_researcher() -> None:
    """Case 3: a state claiming the researcher's first 2**62 updates moves no version,
    and the researcher's later writes (and inserts referring to them) arrive."""
    net = sim_pair()
    acked = Acked()
    sim_converge(net, acked, "before")
    researcher = net.replica("a")
    own = researcher.version()[researcher.writer_id]
    inject(net, "b", hostile.case_false_claim(researcher.writer_id, MAX_SEQ))
    assert net.replica("b").version()[researcher.writer_id] <= own
    for i in range(5):
        net.write("a", lambda r, i=i: r.list("findings").append(f"a{i}"))  # type: ignore[misc]
    assert net.run_until_converged(timeout=60.0)
    net.write("b", lambda r: r.list("findings").insert(2, "b between"))
    sim_converge(net, acked, "after")
    assert net.replica("a").list("findings").value == ["a0", "a1", "b between", "a2", "a3", "a4"]
    for name in ("a", "b"):
        version = net.replica(name).version()
        assert version[researcher.writer_id] == researcher.version()[researcher.writer_id]


@CASE_4_OPEN
def test_sim_largest_timestamp_still_loses_to_a_later_write() -> None:
    """Case 4: after a register write at the largest timestamp, a later honest write
    still wins (the clock observes it and issues a greater one) on every replica."""
    net = sim_pair()
    inject(net, "b", hostile.case_largest(MAX_WALL, MAX_LOGICAL, MAX_LAMPORT, MAX_COUNT))
    assert net.run_until_converged(timeout=60.0)
    assert net.replica("a").register("shared").value == "evil"
    net.write("a", lambda r: r.register("shared").set("honest"))
    net.write("b", lambda r: r.list("findings").append("after"))
    assert net.run_until_converged(timeout=60.0)
    for name in ("a", "b"):
        replica = net.replica(name)
        assert replica.register("shared").value == "honest"
        assert replica.list("findings").value[-1] == "after"


def test_sim_unanswered_addresses_stop_holding_collection_back() -> None:
    """Cases 2 and 8: addresses named in a digest, or an ACK from an address that never
    answers, stop counting after UNVERIFIED_PEER_TTL: deleted list elements are collected
    and the log trimmed, as in a clean pair."""
    net = sim_pair()
    inject(net, "b", hostile.case_ghost_ack() + hostile.case_wide_digest(64))
    for name in ("a", "b"):
        for i in range(20):
            net.write(name, lambda r, i=i: r.list("work").append(i))  # type: ignore[misc]
        for _ in range(20):
            net.write(name, lambda r: r.list("work").delete(0))
    assert net.run_until_converged(timeout=60.0)
    # (the TTL in force: UNVERIFIED_PEER_TTL, or longer for slow probing settings)
    ttl = max(UNVERIFIED_PEER_TTL, net.config.unverified_ttl)
    net.run_for(ttl + 10 * net.interval)
    for name in ("a", "b"):
        stats = net.replica(name).stats()
        assert stats["list_tombstones"] == 0, (name, stats)
        assert stats["log_entries"] == 0, (name, stats)
        assert set(net.nodes[name].gossip.peers) == {"b" if name == "a" else "a"}
    assert net.nodes["b"].gossip.stats["peers_dropped"] >= 1


def test_sim_made_up_origins_stay_out_of_version_vectors() -> None:
    """Case 9: 20,000 made-up origins: every version vector stays within MAX_ORIGINS, and
    so does an idle digest's size."""
    net = sim_pair()
    acked = Acked()
    sim_converge(net, acked, "before")
    inject(net, "b", hostile.case_origins(20_000, 2_000, deliverable=True))
    sim_converge(net, acked, "after")
    bytes_before, messages_before = net.bytes, net.messages
    net.run_for(20 * net.interval)
    per_frame = (net.bytes - bytes_before) / max(1, net.messages - messages_before)
    assert per_frame <= MAX_ORIGINS * (MAX_WRITER_ID + 12) + 4096
    for name in ("a", "b"):
        assert len(net.replica(name).version()) <= MAX_ORIGINS


def test_sim_garbage_flood_logs_a_bounded_amount(caplog: pytest.LogCaptureFixture) -> None:
    """Case 10: 20,000 rejected frames, each claiming another sender (a tenth of the
    issue's 200,000: without a bound they log ~2 MB, so 64 KiB proves it)."""
    net = sim_pair()
    with log_bytes() as logged:
        inject(net, "b", hostile.case_garbage(20_000))
    assert net.nodes["b"].gossip.stats["rejected_frames"] >= 20_000
    assert logged[0] <= 64 * 1024, logged[0]


# --- real sockets, a hostile process ----------------------------------------------------------


def test_overflow_claims_kill_no_thread_driver() -> None:
    """Case 1: {writer: 2**64-1} as a state, a digest and a sequence number, sent to b:
    both loops live, the writer's next writes arrive, and stop() does not raise."""
    acked = Acked()
    with honest_pair() as (ga, gb):
        converge(acked, ga.replica, gb.replica, "before")
        attack(gb, ga, "overflow", victim=ga.replica.writer_id)
        converge(acked, ga.replica, gb.replica, "after")
        converge(acked, ga.replica, gb.replica, "again")
        assert_alive(ga, gb)
        assert max(gb.replica.version().values()) <= MAX_SEQ
    assert ga.health == gb.health == "stopped"


@pytest.mark.asyncio
async def test_overflow_claims_kill_no_asyncio_driver() -> None:
    """Case 1 with the asyncio driver: its task stays alive and its stop() returns."""

    async def until(condition: Callable[[], bool]) -> bool:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline and not condition():
            await asyncio.sleep(0.02)
        return condition()

    acked = Acked()
    a, b = Replica("a"), Replica("b")
    addr_a, addr_b = addresses(2)
    ga = AsyncZmqGossip(a, bind=addr_a, peers=[addr_b], interval=INTERVAL, dead_after=1.0)
    gb = AsyncZmqGossip(b, bind=addr_b, peers=[addr_a], interval=INTERVAL, dead_after=1.0)

    async def converge_async(tag: str) -> None:
        acked.write(a, f"{tag}-a")
        acked.write(b, f"{tag}-b")
        assert await until(lambda: acked.everywhere(a, b))

    async with ga, gb:
        await converge_async("before")
        before_in = driver_stats(gb)["frames_in"]
        before_out = driver_stats(ga)["frames_out"]
        frames = await asyncio.to_thread(run_hostile, gb.address, "overflow", victim=a.writer_id)

        def handled() -> int:
            honest = driver_stats(ga)["frames_out"] - before_out
            return driver_stats(gb)["frames_in"] - before_in - honest

        assert await until(lambda: handled() >= frames)
        await converge_async("after")
        await converge_async("again")
        assert_alive(ga, gb)
    assert ga.health == gb.health == "stopped"


def test_wide_digest_under_a_low_file_limit() -> None:
    """Case 2: a digest naming 1,024 addresses, sent to a node whose RLIMIT_NOFILE is
    1,024 (the issue's ``ulimit -n 1024``): it dials within its socket budget and lives."""
    acked = Acked()
    addr_a, addr_b = addresses(2)
    a = Replica("a")
    with (
        node_process("b", addr_b, [addr_a], "--nofile", "1024") as b,
        ZmqGossip(a, bind=addr_a, peers=[addr_b], interval=INTERVAL, dead_after=1.0) as ga,
    ):
        b.write("b-before", 3, acked)
        assert wait_until(lambda: acked.everywhere(a))
        fds_before = b.stats()["open_fds"]
        attack_counted(b.address, b.frames_in, ga_frames_out(ga), "wide-digest", count=1024)
        for round_ in range(3):  # each write pushes to every peer never heard from
            b.write(f"b-{round_}", 3, acked)
            acked.write(a, f"a-{round_}")
            assert wait_until(
                lambda: acked.everywhere(a) and acked.items <= set(b.stats()["items"])
            )
        stats = b.stats()
        assert_node_alive(stats)
        assert_alive(ga)
        assert stats["open_fds"] < 1024, (fds_before, stats["open_fds"])
        assert set(b.stop()["items"]) >= acked.items


@pytest.mark.xfail(run=False, reason=CASE_3_OPEN.kwargs["reason"])
def test_false_claim_costs_no_write_of_the_researcher() -> None:
    """Case 3: a state claiming {researcher: 2**62}, sent to b: the researcher's later
    writes, and b's list inserts between them, arrive everywhere; no version moves."""
    acked = Acked()
    with honest_pair() as (ga, gb):
        researcher, b = ga.replica, gb.replica
        converge(acked, researcher, b, "before")
        attack(gb, ga, "false-claim", victim=researcher.writer_id, count=MAX_SEQ)
        for i in range(5):
            researcher.list("findings").append(f"a{i}")
        assert wait_until(lambda: len(b.list("findings")) == 5)
        b.list("findings").insert(2, "b between")
        converge(acked, researcher, b, "after")
        expected = ["a0", "a1", "b between", "a2", "a3", "a4"]
        assert researcher.list("findings").value == b.list("findings").value == expected
        own = researcher.writer_id
        assert wait_until(lambda: b.version()[own] == researcher.version()[own])
        assert_alive(ga, gb)


@pytest.mark.xfail(run=False, reason=CASE_4_OPEN.kwargs["reason"])
def test_largest_timestamps_leave_every_type_writable() -> None:
    """Case 4: updates at the largest timestamp, lamport and count allowed: afterwards
    both write every type, and converge."""
    acked = Acked()
    with honest_pair() as (ga, gb):
        a, b = ga.replica, gb.replica
        converge(acked, a, b, "before")
        attack(gb, ga, "largest")
        assert wait_until(lambda: a.register("shared").value == "evil")
        every_type(a, "a")
        every_type(b, "b")
        converge(acked, a, b, "after")
        assert a.register("shared").value == b.register("shared").value == "b shared"
        assert_alive(ga, gb)
        assert_bounded(a)
        assert_bounded(b)


def test_disk_full_on_the_receiving_side(tmp_path: Path) -> None:
    """Case 5: a durable node whose disk fills while it receives (os.write fails with
    ENOSPC in that process only, a partial write first) keeps running, applies only what
    it stored, and once space returns catches up by itself; reopened, it holds everything
    it had (its file undamaged)."""
    acked = Acked()
    addr_a, addr_b = addresses(2)
    a = Replica("a")
    path = tmp_path / "b"
    with (
        node_process(
            "b", addr_b, [addr_a], "--path", str(path), "--disk-budget", str(64 * 1024)
        ) as b,
        ZmqGossip(a, bind=addr_a, peers=[addr_b], interval=INTERVAL, dead_after=1.0) as ga,
    ):
        for i in range(2_000):  # about 100 B stored per item: the disk fills at ~650
            a.set("items").add(f"a-{i}")
            acked.items.add(f"a-{i}")
        assert wait_until(lambda: b.stats()["disk_failures"] > 0)
        full = b.stats()
        assert_node_alive(full)
        assert full["gossip"]["unpersisted"] + full["replica"]["unpersisted_updates"] > 0
        b.write("b-full", 1, Acked())  # a local write on a full disk: as documented
        assert b.ask("space", "SPACE") == ""
        b.write("b-after", 3, acked)
        acked.write(a, "a-after")
        assert wait_until(lambda: acked.items <= set(b.stats()["items"]) and acked.everywhere(a))
        assert_node_alive(b.stats())
        assert_alive(ga)
        final = b.stop()
    reopened = Replica("b", path=str(path))
    try:
        assert reopened.set("items").value == set(final["items"]) >= acked.items
        assert reopened.stats()["storage_lost_bytes"] == 0
    finally:
        reopened.close()


def test_msgpack_bomb_costs_a_bounded_peak() -> None:
    """Case 6: 8 MiB of 0x90, whole and nested (a frame's version, an updates message's
    runs), in frames and in push messages, sent to a node capped at 384 MiB of address
    space above its running size: it lives, and its peak RSS grows by at most 16 bytes
    per frame byte (the issue's decoder: 58, ~464 MiB; half the issue's 16 MiB frame
    proves the same factor)."""
    size = 8 * MIB
    acked = Acked()
    addr_a, addr_b = addresses(2)
    a = Replica("a")
    with (
        node_process("b", addr_b, [addr_a], "--address-space-mib", "384") as b,
        ZmqGossip(a, bind=addr_a, peers=[addr_b], interval=INTERVAL, dead_after=1.0) as ga,
    ):
        b.write("b-before", 3, acked)
        assert wait_until(lambda: acked.everywhere(a))
        before = b.stats()
        attack_counted(b.address, b.frames_in, ga_frames_out(ga), "bomb", size=size)
        b.write("b-after", 3, acked)
        acked.write(a, "a-after")
        assert wait_until(lambda: acked.everywhere(a) and acked.items <= set(b.stats()["items"]))
        after = b.stats()
        assert_node_alive(after)
        assert_alive(ga)
        growth = (after["maxrss_kib"] - before["maxrss_kib"]) * 1024
        assert growth <= 16 * size, f"peak RSS grew {growth / MIB:.0f} MiB"
        b.stop()


def test_undeliverable_updates_are_bounded_in_bytes() -> None:
    """Case 7: 1 MiB updates that can never be delivered (as many as fill
    MAX_BUFFERED_BYTES, plus 8: the issue's 200 when the limit is larger), then small ones
    from 2 x MAX_ORIGINS + 1,000 made-up origins (the issue's 100,000 run in the
    simulator): the buffer stays within its limits and honest merges go on."""
    acked = Acked()
    with honest_pair() as (ga, gb):
        a, b = ga.replica, gb.replica
        converge(acked, a, b, "before")
        count = min(200, MAX_BUFFERED_BYTES // MIB + 8)
        attack(gb, ga, "undeliverable", count=count, size=MIB)
        assert_bounded(b)
        attack(gb, ga, "early-origins", count=2 * MAX_ORIGINS + 1_000, size=2_000)
        assert_bounded(b)
        converge(acked, a, b, "after")
        assert_alive(ga, gb)


def test_ack_from_an_address_that_never_answers() -> None:
    """Case 8: an ACK from tcp://127.0.0.1:9 sent to b: causal stability still comes,
    so list tombstones go to 0 and the logs are trimmed on both."""
    acked = Acked()
    with honest_pair() as (ga, gb):
        a, b = ga.replica, gb.replica
        converge(acked, a, b, "before")
        attack(gb, ga, "ghost-ack")
        for replica in (a, b):
            work = replica.list("work")
            for i in range(50):
                work.append(i)
            for _ in range(50):
                work.delete(0)
        converge(acked, a, b, "after")
        assert wait_until(
            lambda: all(
                r.stats()["list_tombstones"] == 0 and r.stats()["log_entries"] == 0 for r in (a, b)
            )
        ), (a.stats(), b.stats())
        assert_alive(ga, gb)


def test_made_up_origins_stay_out_of_version_vectors() -> None:
    """Case 9: 2 x MAX_ORIGINS + 1,000 made-up origins (the issue's 20,000 run in the
    simulator): version vectors stay within MAX_ORIGINS and an idle digest within what
    that many entries take."""
    acked = Acked()
    with honest_pair() as (ga, gb):
        a, b = ga.replica, gb.replica
        converge(acked, a, b, "before")
        attack(gb, ga, "origins", count=2 * MAX_ORIGINS + 1_000, size=2_000)
        converge(acked, a, b, "after")
        for replica in (a, b):
            assert len(replica.version()) <= MAX_ORIGINS
        before = driver_stats(gb)
        assert wait_until(lambda: driver_stats(gb)["frames_out"] >= before["frames_out"] + 10)
        after = driver_stats(gb)
        per_frame = (after["bytes_out"] - before["bytes_out"]) / (
            after["frames_out"] - before["frames_out"]
        )
        assert per_frame <= MAX_ORIGINS * (MAX_WRITER_ID + 12) + 4096
        assert_alive(ga, gb)


def test_garbage_flood_logs_a_bounded_amount() -> None:
    """Case 10: 10,000 rejected frames, each claiming another sender (a twentieth of the
    issue's 200,000, 20,000 in the simulator: unbounded, they log ~1 MB, so a 64 KiB
    bound proves it)."""
    acked = Acked()
    with honest_pair() as (ga, gb), log_bytes() as logged:
        converge(acked, ga.replica, gb.replica, "before")
        before = driver_stats(gb)["rejected_frames"]
        attack(gb, ga, "garbage", count=10_000)
        assert driver_stats(gb)["rejected_frames"] - before >= 10_000
        converge(acked, ga.replica, gb.replica, "after")
        assert_alive(ga, gb)
    assert logged[0] <= 64 * 1024, logged[0]
