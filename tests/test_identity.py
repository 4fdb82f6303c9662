"""The second life of an agent (issue 9): incarnations, restarts under the same id, two
lives at once, a folder held by another process, damaged logs, older peers.

Unit checks on one replica first, then the seeded simulator, then real processes over
loopback (tests/identity_agent.py).
"""

from __future__ import annotations

import logging
import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import crdtmem.storage
from crdtmem import DecodeError, Replica, StorageError, StorageLocked, codec
from crdtmem.gossip import GossipNode
from crdtmem.identity import name_of, token_of
from transport.loopback import free_loopback_addresses as addresses
from transport.sim import SimNetwork

WRITER = re.compile(r"[a-z0-9]+~[0-9a-f]{8}")


def _items(r: Replica) -> set[str]:
    return set(r.list("items").value)


# --- lives in memory --------------------------------------------------------------------


def test_every_in_memory_construction_is_a_new_life_with_the_same_name() -> None:
    first, second = Replica("analyst"), Replica("analyst")
    assert first.replica_id == second.replica_id == "analyst"
    assert WRITER.fullmatch(first.writer_id) and first.writer_id != second.writer_id
    assert name_of(first.writer_id) == "analyst" and first.predecessors() == []
    # Seeded: the same rng gives the same life (simulations replay exactly).
    assert (
        Replica("a", rng=random.Random(5)).writer_id == Replica("a", rng=random.Random(5)).writer_id
    )


def test_a_restart_in_memory_mints_no_dot_twice_and_nothing_is_lost() -> None:
    peer = Replica("peer")
    crashed = Replica("analyst")
    for i in range(5):
        crashed.list("items").append(f"old {i}")
    peer.merge(crashed.delta_since())
    restarted = Replica("analyst")  # the supervisor restarts it: empty memory, same name
    for i in range(3):
        restarted.list("items").append(f"new {i}")
    peer.merge(restarted.delta_since(peer.version()))
    restarted.merge(peer.delta_since(restarted.version()))
    expected = {f"old {i}" for i in range(5)} | {f"new {i}" for i in range(3)}
    assert _items(peer) == _items(restarted) == expected
    assert peer.version() == restarted.version()
    assert set(peer.version()) == {crashed.writer_id, restarted.writer_id}


def test_change_events_name_the_replica_not_its_life() -> None:
    a, b = Replica("a"), Replica("b")
    seen: list[str] = []
    b.subscribe(lambda event: seen.append(event.origin))
    a.counter("c").increment()
    b.merge(a.delta_since())
    assert seen and set(seen) == {"a"}


def test_retire_takes_a_writer_id_and_a_bare_name_is_the_legacy_life() -> None:
    a, gone = Replica("a"), Replica("gone")
    gone.counter("c").increment()
    a.merge(gone.delta_since())
    assert a.retire(gone.writer_id, 0) == 1
    assert a.retire("gone", 0) == 0  # the legacy life of "gone": not the one above
    assert set(a.retired()) == {gone.writer_id, "gone"}
    with pytest.raises(ValueError, match="retire itself"):
        a.retire(a.writer_id, 0)
    with pytest.raises(ValueError, match="not a writer id"):
        a.retire("x" * 65, 0)


# --- durable lives ----------------------------------------------------------------------


def test_a_durable_replica_keeps_its_life_while_its_log_is_intact(tmp_path: Path) -> None:
    folder = str(tmp_path / "a")
    r = Replica("a", path=folder)
    r.counter("c").increment()
    life = r.writer_id
    r.close()
    again = Replica("a", path=folder)
    assert again.writer_id == life and again.version() == {life: 1}
    again.counter("c").increment()
    assert again.version() == {life: 2}
    # Killed without close(), same boot: the page cache kept every write. Same life.
    os.close(again._storage._lock_fd)  # type: ignore[union-attr]  # (as the kernel would)
    again._storage._lock_fd = -1  # type: ignore[union-attr]
    killed = Replica("a", path=folder)
    assert killed.writer_id == life and killed.counter("c").value == 2
    killed.close()


def test_an_unclean_close_then_a_reboot_starts_a_new_life_unless_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for durability, keeps in (("process", False), ("group", False), ("fsync", True)):
        folder = str(tmp_path / durability)
        monkeypatch.setattr(crdtmem.storage, "boot_id", lambda: "boot-1")
        r = Replica("a", path=folder, durability=durability)
        r.counter("c").increment()
        life = r.writer_id
        os.close(r._storage._lock_fd)  # type: ignore[union-attr]  # killed: lock released
        r._storage._lock_fd = -1  # type: ignore[union-attr]
        monkeypatch.setattr(crdtmem.storage, "boot_id", lambda: "boot-2")  # power cut
        again = Replica("a", path=folder, durability=durability)
        assert (again.writer_id == life) is keeps, durability
        assert again.predecessors() == ([] if keeps else [life])
        assert again.counter("c").value == 1
        again.close()
        # Unknown boot ids: an unclean reopen counts as possibly lossy too.
        monkeypatch.setattr(crdtmem.storage, "boot_id", lambda: None)
        r = Replica("a", path=folder, durability=durability)
        os.close(r._storage._lock_fd)  # type: ignore[union-attr]
        r._storage._lock_fd = -1  # type: ignore[union-attr]
        third = Replica("a", path=folder, durability=durability)
        assert (third.writer_id == r.writer_id) is keeps
        third.close()


def test_a_truncated_tail_starts_a_new_life_and_the_peer_gives_back_what_it_holds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "a"
    r = Replica("a", path=str(folder))
    peer = Replica("peer")
    for i in range(20):
        r.list("items").append(i)
        peer.merge(r.delta_since(peer.version()))  # each write pushed, acknowledged
    old = r.writer_id
    r.close()
    log = folder / "log"
    log.write_bytes(log.read_bytes()[:-30])  # power cut: the last records' bytes gone
    with caplog.at_level(logging.WARNING, logger="crdtmem"):
        again = Replica("a", path=str(folder))
    assert str(log) in caplog.text and "damaged" in caplog.text
    assert again.writer_id != old and again.predecessors() == [old]
    assert again.stats()["storage_damaged_regions"] == 1
    assert len(again.list("items").value) < 20
    again.list("items").append("after")  # a new life: peers do not drop it as a duplicate
    peer.merge(again.delta_since(peer.version()))
    again.merge(peer.delta_since(again.version()))
    # ("after" was made without the lost items: concurrent with them, ordered either way)
    assert again.list("items").value == peer.list("items").value
    assert sorted(map(str, again.list("items").value)) == sorted([*map(str, range(20)), "after"])
    assert again.version() == peer.version()
    again.close()
    # Reported once: the log was rewritten without the damage; the new life is kept.
    third = Replica("a", path=str(folder))
    assert third.stats()["storage_damaged_regions"] == 0 and third.writer_id == again.writer_id
    assert third.list("items").value == peer.list("items").value
    assert third.predecessors() == [old]
    third.close()


def test_a_flipped_byte_costs_one_record_not_everything_after_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "a"
    r = Replica("a", path=str(folder))
    peer = Replica("peer")
    for i in range(1000):
        r.register(f"k{i % 50}").set(i)
        r.gcounter("n").increment()
    peer.merge(r.delta_since())
    made = r.version()[r.writer_id]
    r.close()
    log = folder / "log"
    data = bytearray(log.read_bytes())
    data[len(data) // 2] ^= 0x01
    log.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="crdtmem"):
        again = Replica("a", path=str(folder))
    assert re.search(r"bytes \d+-\d+", caplog.text)
    stats = again.stats()
    assert stats["storage_damaged_regions"] == 1
    assert 0 < stats["storage_lost_bytes"] < 200  # about one record
    # Every record after the damage was kept: those of the old life wait for the lost
    # one (buffered), which the peer gives back; nothing is lost.
    applied = again.version()[r.writer_id]
    assert applied + 1 + stats["buffered_updates"] == made
    again.merge(peer.delta_since(again.version()))
    assert again.value() == peer.value() and again.stats()["buffered_updates"] == 0
    again.close()


def test_the_folder_lock_refuses_a_second_opener_in_this_process(tmp_path: Path) -> None:
    folder = str(tmp_path / "a")
    first = Replica("a", path=folder)
    with pytest.raises(StorageLocked, match=rf"{re.escape(folder)}.*process {os.getpid()}") as err:
        Replica("a", path=folder)
    assert err.value.pid == os.getpid() and err.value.path == folder
    assert isinstance(err.value, StorageError)
    first.counter("c").increment()  # the holder is unaffected
    first.close()
    second = Replica("a", path=folder)  # released at close
    assert second.counter("c").value == 1
    second.close()


def test_a_missing_manifest_beside_a_log_and_a_corrupt_one_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "a"
    r = Replica("a", path=str(folder))
    r.counter("c").increment()
    r.close()
    manifest = folder / "MANIFEST"
    saved = manifest.read_bytes()
    manifest.unlink()
    with pytest.raises(StorageError, match="MANIFEST is missing beside a non-empty log"):
        Replica("b", path=str(folder))  # another id must not take the folder over
    manifest.write_bytes(b"\x00garbage")
    with pytest.raises(StorageError, match="MANIFEST is corrupt"):
        Replica("a", path=str(folder))
    manifest.write_bytes(saved)
    assert Replica("a", path=str(folder)).counter("c").value == 1


# --- the wire ----------------------------------------------------------------------------


def test_a_peer_of_another_wire_format_is_told_which_side_to_upgrade() -> None:
    a = Replica("a")
    a.counter("c").increment()
    message = a.delta_since()
    assert message[:3] == b"CM\x02"
    with pytest.raises(DecodeError, match="wire format 1, this node speaks 2: upgrade the peer"):
        Replica("b").merge(b"CM\x01" + message[3:])
    with pytest.raises(DecodeError, match="wire format 3, this node speaks 2: upgrade this node"):
        Replica("b").merge(b"CM\x03" + message[3:])
    # Writer ids fill up to 73 characters on the wire.
    long = Replica("x" * 64)
    long.counter("c").increment()
    assert len(long.writer_id) == 73 and token_of(long.writer_id) is not None
    b = Replica("b")
    b.merge(long.delta_since())
    assert b.version() == {long.writer_id: 1}
    assert codec.unpack_stored(b"CM\x01\x90") == []  # stored data of format 1 still reads
    # A frame that lies: 73 characters that are not NAME~TOKEN, or a token too long.
    genuine = long.delta_since()
    for bad in ("y" * 73, "x" * 64 + "~0123456g", "x" * 64 + "~0123456A"):
        assert len(bad) == 73
        forged = genuine.replace(long.writer_id.encode(), bad.encode())
        assert forged != genuine
        with pytest.raises(DecodeError, match="writer id"):
            Replica("c").merge(forged)


# --- the simulator (seeded, virtual time) ------------------------------------------------


def _append(item: str) -> Callable[[Replica], None]:
    return lambda r: r.list("items").append(item)


def _increment(name: str) -> Callable[[Replica], None]:
    return lambda r: r.counter(name).increment()


def _converged_items(net: SimNetwork) -> list[set[str]]:
    return [_items(n.replica) for n in net.nodes.values() if n.up]


@pytest.mark.parametrize("durable", [False, True])
def test_sim_restart_under_the_same_id_loses_nothing(tmp_path: Path, durable: bool) -> None:
    net = SimNetwork(3, drop=0.1)
    for i in range(3):
        net.add_node(f"n{i}", path=str(tmp_path / f"n{i}") if durable else None)
    for i in range(5):
        net.write("n0", _append(f"before {i}"))
    assert net.run_until_converged(timeout=30)
    old = net.replica("n0").writer_id
    net.crash("n0")
    net.restart("n0", durable=durable)
    restarted = net.replica("n0")
    assert restarted.replica_id == "n0" and (restarted.writer_id == old) is durable
    for i in range(3):
        net.write("n0", _append(f"after {i}"))
    assert net.run_until_converged(timeout=60)
    expected = {f"before {i}" for i in range(5)} | {f"after {i}" for i in range(3)}
    assert all(items == expected for items in _converged_items(net))


def test_sim_two_live_replicas_under_one_id_both_keep_working() -> None:
    net = SimNetwork(4, drop=0.1)
    net.add_node("n0")
    net.add_node("n1")
    net.add_node("twin", replica_id="n0")  # the same agent started twice by mistake
    for i in range(10):
        net.write("n0", _append(f"first {i}"))
        net.write("twin", _append(f"second {i}"))
        net.run_for(0.05)
    assert net.run_until_converged(timeout=60)
    expected = {f"first {i}" for i in range(10)} | {f"second {i}" for i in range(10)}
    values = [n.replica.value() for n in net.nodes.values()]
    assert all(v == values[0] for v in values) and _items(net.replica("n1")) == expected
    assert net.replica("n0").writer_id != net.replica("twin").writer_id


@pytest.mark.parametrize("damage", ["tail", "middle"])
def test_sim_durable_node_with_a_damaged_log_rejoins_with_everything(
    tmp_path: Path, damage: str
) -> None:
    net = SimNetwork(5, drop=0.05)
    for i in range(3):
        net.add_node(f"n{i}", path=str(tmp_path / f"n{i}"))
    for i in range(30):
        net.write("n0", _append(f"ack {i}"))
        net.write("n1", _increment("n1"))
        net.run_for(0.02)
    assert net.run_until_converged(timeout=60)
    old = net.replica("n0").writer_id
    net.crash("n0")
    net.replica("n0").close()  # the process is gone (its lock with it)
    log = tmp_path / "n0" / "log"
    data = bytearray(log.read_bytes())
    if damage == "tail":
        del data[-200:]
    else:
        data[len(data) // 2] ^= 0x40
    log.write_bytes(bytes(data))
    net.restart("n0", durable=True)
    n0 = net.replica("n0")
    assert n0.writer_id != old and n0.predecessors() == [old]
    assert n0.stats()["storage_damaged_regions"] == 1
    for i in range(5):
        net.write("n0", _append(f"new {i}"))
    assert net.run_until_converged(timeout=60)
    expected = {f"ack {i}" for i in range(30)} | {f"new {i}" for i in range(5)}
    values = [n.replica.value() for n in net.nodes.values()]
    assert all(v == values[0] for v in values)
    assert _items(net.replica("n2")) == expected and values[0]["n1"] == 30


# --- real processes over loopback --------------------------------------------------------

AGENT = [sys.executable, "-m", "tests.identity_agent"]
ROOT = Path(__file__).parent.parent


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*AGENT, *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _line(process: subprocess.Popen[str], deadline: float) -> str:
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line:
            return line.strip()
        if process.poll() is not None:
            break
    raise AssertionError(f"agent said nothing: {process.stderr.read() if process.stderr else ''}")


def _stop(*processes: subprocess.Popen[str]) -> None:
    for process in processes:
        if process.stdin is not None:
            process.stdin.close()
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def test_two_processes_on_one_folder_the_second_gets_storage_locked(tmp_path: Path) -> None:
    folder = str(tmp_path / "shared")
    holder = _spawn("hold", folder)
    try:
        assert _line(holder, time.monotonic() + 30) == "holding"
        second = _spawn("hold", folder)
        try:
            line = _line(second, time.monotonic() + 30)
            assert line.startswith("locked") and str(holder.pid) in line and folder in line
            second.wait(timeout=30)
        finally:
            _stop(second)
        holder.send_signal(signal.SIGKILL)  # its lock goes with it
        holder.wait(timeout=10)
        third = _spawn("hold", folder)
        try:
            assert _line(third, time.monotonic() + 30) == "holding"
        finally:
            _stop(third)
    finally:
        _stop(holder)


class _Agents:
    """Agent processes (tests/identity_agent.py) whose output lines are collected by
    reader threads, so waits have deadlines; every process is killed at the end."""

    def __init__(self) -> None:
        self.processes: dict[str, subprocess.Popen[str]] = {}
        self.lines: dict[str, queue.Queue[str]] = {}

    def start(self, key: str, *args: str) -> None:
        process = _spawn("agent", *args)
        lines: queue.Queue[str] = queue.Queue()
        stdout = process.stdout
        assert stdout is not None

        def read() -> None:
            for line in stdout:
                lines.put(line.strip())

        threading.Thread(target=read, daemon=True).start()
        self.processes[key], self.lines[key] = process, lines

    def wait_for(self, key: str, test: Callable[[str], bool], timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines[key].get(timeout=left)
            except queue.Empty:
                break
            if test(line):
                return line
        raise AssertionError(f"{key}: no matching line within {timeout} s")

    def acks(self, key: str, count: int) -> set[str]:
        return {
            self.wait_for(key, lambda line: line.startswith("ACK ")).split()[1]
            for _ in range(count)
        }

    def kill(self, key: str) -> None:
        process = self.processes.pop(key)
        process.send_signal(signal.SIGKILL)
        _stop(process)

    def stop_all(self) -> None:
        _stop(*self.processes.values())
        self.processes.clear()


def _converged(agents: _Agents, keys: list[str], count: int, timeout: float = 30) -> set[str]:
    """Each agent's last ``ITEMS`` line once it holds ``count`` items; the digests."""
    return {
        agents.wait_for(key, lambda line: line.startswith(f"ITEMS {count} "), timeout).split()[2]
        for key in keys
    }


@pytest.mark.parametrize("durable", [False, True])
def test_sigkill_and_restart_under_the_same_id_loses_no_acknowledged_write(
    tmp_path: Path, durable: bool
) -> None:
    peer_addr, agent_addr = addresses(2)
    path = [str(tmp_path / "analyst")] if durable else []
    agents = _Agents()
    try:
        agents.start("peer", "peer", peer_addr, agent_addr, "0")
        agents.start("analyst", "analyst", agent_addr, peer_addr, "5", *path)
        acknowledged = agents.acks("analyst", 5)
        _converged(agents, ["peer"], 5)
        agents.kill("analyst")  # SIGKILL, then the supervisor restarts it: same name
        agents.start("analyst", "analyst", agent_addr, peer_addr, "3", *path)
        acknowledged |= agents.acks("analyst", 3)
        digests = _converged(agents, ["peer", "analyst"], 8)
        assert len(digests) == 1 and len(acknowledged) == 8
    finally:
        agents.stop_all()


def test_two_processes_under_one_id_both_keep_working() -> None:
    peer_addr, first_addr, second_addr = addresses(3)
    agents = _Agents()
    try:
        everyone = ",".join((peer_addr, first_addr, second_addr))
        agents.start("peer", "peer", peer_addr, everyone, "0")
        agents.start("first", "analyst", first_addr, everyone, "5")
        agents.start("second", "analyst", second_addr, everyone, "5")
        acknowledged = agents.acks("first", 5) | agents.acks("second", 5)
        assert len(acknowledged) == 10  # two lives: their items are told apart
        digests = _converged(agents, ["peer", "first", "second"], 10)
        assert len(digests) == 1
    finally:
        agents.stop_all()


@pytest.mark.xfail(
    not hasattr(GossipNode, "peer_connected"),
    reason="needs the liveness fix of issue 9 (gossip: lost pushes repaired while "
    "writes keep coming)",
    strict=True,
)
def test_sim_a_first_push_dropped_while_the_writer_keeps_writing_is_repaired() -> None:
    net = SimNetwork(6)
    net.add_node("peer")
    net.add_node("writer")
    net.run_for(1.0)
    net.cut("writer", "peer", both_ways=False)
    net.write("writer", _append("item 0"))  # its push is lost
    net.heal()
    interval = net.interval
    for i in range(1, 40):  # a write every 0.2 interval, for 8 intervals
        net.write("writer", _append(f"item {i}"))
        net.run_for(interval / 5)
        if i >= 15:  # three intervals after the loss: item 0 and what followed are there
            assert {f"item {j}" for j in range(i - 5)} <= _items(net.replica("peer")), i
    assert net.run_until_converged(timeout=30)
