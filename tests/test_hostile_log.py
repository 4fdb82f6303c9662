"""What a misbehaving peer can do to a replica's update log, buffer and storage
(issue 10): claims are not facts, the early-update buffer and the origin table are
bounded, and a disk that fills while receiving costs only what could not be stored."""

from __future__ import annotations

import errno
import logging
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from crdtmem import DecodeError, Replica, StorageError, codec, updatelog
from crdtmem.crdt import Writer
from crdtmem.gcounter import GCounter
from crdtmem.lwwregister import LWWRegister
from crdtmem.messages import state_message, updates_message

# --- helpers ----------------------------------------------------------------------------


def lying_state(sender: str, vector: dict[str, int]) -> bytes:
    """A full state with no fields that claims ``vector``."""
    return state_message(sender, vector, {})


def counter_update(origin: str, seq: int, deps: dict[str, int] | None = None) -> bytes:
    """One increment of counter ``c`` by ``origin``, as its ``seq``-th update."""
    delta = GCounter.empty().increment_delta(Writer.fixed(origin), seq)
    entry = (deps or {}, "c", GCounter.TAG, codec.pack_body(delta.to_wire()))
    return updates_message([(origin, seq, [entry])])


def blob_update(origin: str, seq: int, size: int, deps: dict[str, int] | None = None) -> bytes:
    """Register ``r`` set to ``size`` bytes by ``origin``, as its ``seq``-th update."""
    writer = Writer.fixed(origin)
    delta = LWWRegister.empty().set_delta(writer, b"x" * size)
    entry = (deps or {}, "r", LWWRegister.TAG, codec.pack_body(delta.to_wire()))
    return updates_message([(origin, seq, [entry])])


def sync(to: Replica, frm: Replica) -> None:
    to.merge(frm.delta_since(to.version()))


# --- claims are not facts ---------------------------------------------------------------


def test_a_state_claiming_more_of_this_replicas_own_updates_is_refused_whole() -> None:
    a = Replica("a")
    a.counter("c").increment(3)
    before = (a.value(), a.version(), a.delta_since())
    lie = state_message("liar", {a.writer_id: 2**40, "liar": 1}, {})
    with pytest.raises(DecodeError, match="claims"):
        a.merge(lie)
    assert (a.value(), a.version(), a.delta_since()) == before
    assert a.stats()["false_claims"] == 1
    a.counter("c").increment()  # still writes, and its peers still get everything
    b = Replica("b")
    sync(b, a)
    assert b.value() == a.value() and b.version() == a.version()


def test_a_state_at_or_below_what_this_replica_made_is_not_a_lie() -> None:
    a, b = Replica("a"), Replica("b")
    a.counter("c").increment()
    sync(b, a)
    b.counter("c").increment()
    a.compact_log({b.writer_id: 0})  # (nothing to trim: b sends its log, or a state)
    a.merge(state_message("b", b.version(), {}))  # claims a's 1 of 1: fine
    assert a.stats()["false_claims"] == 0


def test_a_lie_about_another_origin_costs_a_reapplication_never_its_writes() -> None:
    x, c = Replica("x"), Replica("c")
    for i in range(3):
        x.register(f"k{i}").set(i)
    sync(c, x)
    seen = c.version()
    for i in range(3, 6):  # written while the lie travels
        x.register(f"k{i}").set(i)
    x.counter("n").increment(7)
    c.merge(lying_state("liar", {x.writer_id: 2**40}))
    assert c.version()[x.writer_id] == 2**40  # the claim is held...
    c.merge(x.delta_since(seen))  # ...but x's real updates still apply
    assert c.value() == x.value()
    assert c.stats()["reapplied_updates"] == 4
    c.merge(x.delta_since(seen))  # twice: the range shrank, each applies once
    assert c.stats()["reapplied_updates"] == 4 and c.value() == x.value()
    # and a peer that learns from c gets x's writes too
    d = Replica("d")
    sync(d, c)
    assert d.value() == x.value()


def test_updates_buffered_when_a_lying_state_overtakes_them_are_applied() -> None:
    x, c = Replica("x"), Replica("c")
    x.counter("c").increment()
    first = x.delta_since()
    x.counter("c").increment(10)
    second = x.delta_since(x.version() | {x.writer_id: 1})
    c.merge(second)  # early: waits for the first
    assert c.stats()["buffered_updates"] == 1
    c.merge(lying_state("liar", {x.writer_id: 1000}))
    assert c.stats()["buffered_updates"] == 0 and c.stats()["buffered_bytes"] == 0
    c.merge(first)
    assert c.value() == x.value() == {"c": 11}
    assert c.stats()["reapplied_updates"] == 2


def test_a_lie_costs_no_list_writes_while_nothing_was_collected() -> None:
    x, c = Replica("x"), Replica("c")
    x.list("l").append(1)
    x.map("m").list("inner").append("a")
    sync(c, x)
    seen = c.version()
    x.list("l").append(2)
    x.map("m").list("inner").append("b")
    c.merge(lying_state("liar", {x.writer_id: 50}))
    c.merge(x.delta_since(seen))
    assert c.value() == x.value() and c.stats()["reapplied_updates"] == 2


def test_list_updates_are_not_applied_again_at_or_below_a_collection() -> None:
    """Applying a list update again could bring back an element collected since (here,
    or in a state joined since), so a list update in the claimed range is applied again
    only above the last collection's stable version: the documented exception."""
    x, c = Replica("x"), Replica("c")
    x.list("l").append(1)
    sync(c, x)
    seen = c.version()
    x.list("l").append(2)
    x.counter("n").increment()
    c.merge(lying_state("liar", {x.writer_id: 50}))
    c.collect_garbage({x.writer_id: 10, c.writer_id: 0})  # (as if 10 were stable)
    c.merge(x.delta_since(seen))
    assert c.list("l").value == [1] and c.counter("n").value == 1
    assert c.stats()["reapplied_updates"] == 1


def test_a_state_holding_collected_elements_sets_the_list_floor() -> None:
    x, d, c = Replica("x"), Replica("d"), Replica("c")
    x.list("l").append(1)
    sync(c, x)
    seen = c.version()
    x.list("l").append(2)  # x's update 2 inserts 2 ...
    x.list("l").delete(1)  # ... and update 3 deletes it
    c.merge(lying_state("liar", {x.writer_id: 50}))
    sync(d, x)
    assert d.collect_garbage(d.version()) == 1  # d collects 2, then writes and
    d.counter("n").increment()  # trims its log: c gets d's state, markers and all
    d.compact_log(d.version())
    c.merge(d.delta_since(c.version()))
    assert c.list("l").value == [1]
    insert, _ = x.delta_chunk(seen, max_bytes=1)  # x's update 2 again, alone:
    c.merge(insert)  # applying it again would bring 2 back
    assert c.list("l").value == d.list("l").value == [1]
    assert c.stats()["reapplied_updates"] == 0


def test_reapplied_updates_are_stored_and_replayed(tmp_path: Path) -> None:
    x = Replica("x")
    c = Replica("c", path=str(tmp_path / "c"))
    x.counter("n").increment()
    sync(c, x)
    seen = c.version()
    x.counter("n").increment(5)
    x.register("r").set("after the lie")
    c.merge(lying_state("liar", {x.writer_id: 99}))
    c.merge(x.delta_since(seen))
    value, version = c.value(), c.version()
    assert value == x.value()
    c.close()
    again = Replica("c", path=str(tmp_path / "c"))
    assert again.value() == value and again.version() == version
    again.compact_storage()  # a snapshot holds them too
    again.close()
    third = Replica("c", path=str(tmp_path / "c"))
    assert third.value() == value and third.version() == version
    third.close()


def test_time_travel_is_not_taken_for_a_lie() -> None:
    """A view of the past is a replica of the same name; with the same seeded
    randomness it even has the same writer id, and its own checkpoint claims that id."""
    a = Replica("a", rng=random.Random(0))
    a.counter("c").increment(2)
    point = a.checkpoint()
    a.counter("c").increment()
    assert a.at(point).value() == {"c": 2}
    assert a.at({a.writer_id: 1}).value() == {"c": 2}


# --- the early-update buffer --------------------------------------------------------------


def test_the_buffer_is_bounded_in_bytes_per_origin_and_in_total(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(updatelog, "MAX_BUFFERED_BYTES_PER_ORIGIN", 10_000)
    monkeypatch.setattr(updatelog, "MAX_BUFFERED_BYTES", 25_000)
    c = Replica("c")
    for origin in ("m1", "m2", "m3", "m4"):
        for seq in range(2, 12):  # seq 1 never comes: never deliverable
            c.merge(blob_update(origin, seq, 3_000))
    stats = c.stats()
    assert 0 < stats["buffered_bytes"] <= 25_000
    assert stats["buffered_updates"] < 40 and stats["dropped_early_updates"] > 0
    # an origin may always hold one update, however large, while the total allows it
    c.merge(blob_update("big", 2, 20_000))
    assert c.stats()["dropped_early_updates"] == stats["dropped_early_updates"] + 1
    fresh = Replica("fresh")
    fresh.merge(blob_update("big", 2, 20_000))
    fresh.merge(blob_update("big", 3, 100))
    assert fresh.stats()["buffered_updates"] == 1
    assert fresh.stats()["dropped_early_updates"] == 1


def test_dropped_early_updates_come_again_and_nothing_is_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(updatelog, "MAX_BUFFERED_BYTES", 3_000)
    a, b = Replica("a"), Replica("b")
    for i in range(40):
        a.register(f"k{i % 7}").set(b"v" * 200)
        b.counter("n").increment()
        sync(a, b)
    c = Replica("c")
    for _ in range(40):  # chunked syncs, anti-entropy style, until nothing is missing
        missing = a.version()
        if c.version() == missing:
            break
        message, _ = a.delta_chunk(c.version(), max_bytes=500)
        c.merge(message)
        assert c.stats()["buffered_bytes"] <= 3_000
    assert c.value() == a.value() and c.version() == a.version()


def test_many_never_deliverable_origins_do_not_hold_honest_merges_back() -> None:
    c, a = Replica("c"), Replica("a")
    for i in range(2_000):
        c.merge(counter_update(f"fake{i}", 2))
        c.merge(counter_update(f"wait{i}", 1, {"nobody": 5}))
    assert c.stats()["buffered_updates"] == 4_000
    for _ in range(20):
        a.counter("n").increment()
        sync(c, a)
    assert c.value()["n"] == 20 and c.stats()["buffered_updates"] == 4_000


def test_buffered_heads_wake_when_what_they_wait_for_arrives() -> None:
    """Heads index by the dependency they wait for; a chain across origins drains."""
    origins = [f"o{i}" for i in range(30)]
    c = Replica("c")
    # o{i}'s update depends on o{i+1}'s; offered in the worst order
    for i, origin in enumerate(origins[:-1]):
        c.merge(counter_update(origin, 1, {origins[i + 1]: 1}))
        c.merge(counter_update(origin, 2))
    assert c.stats()["buffered_updates"] == 2 * 29
    c.merge(counter_update(origins[-1], 1))
    assert c.stats()["buffered_updates"] == 0
    assert all(c.version()[o] == 2 for o in origins[:-1])


# --- the origin table ---------------------------------------------------------------------


def test_origins_past_the_bound_are_refused_until_room_is_freed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(updatelog, "MAX_ORIGINS", 4)
    c = Replica("c")
    c.counter("n").increment()  # own writer id: one of the four
    for i in range(6):
        c.merge(counter_update(f"m{i}", 1))
    assert len(c.version()) == 4 and c.stats()["refused_origins"] == 3
    c.merge(counter_update("m0", 2))  # an admitted origin is unaffected
    assert c.version()["m0"] == 2
    c.counter("n").increment()  # and so is this replica's own writer id
    # a state bringing new origins: the same rule, the rest of it is joined
    c.merge(lying_state("s", {"m0": 2, "s1": 3, "s2": 3}))  # brings nothing admissible
    assert c.stats()["refused_origins"] == 3
    c.merge(lying_state("s", {"m0": 3, "s1": 3, "s2": 3}))
    assert c.version()["m0"] == 3 and "s1" not in c.version()
    assert c.stats()["refused_origins"] == 5
    # an update depending on a refused origin is not held back for good
    c.merge(counter_update("m1", 2, {"m5": 1}))
    assert c.version()["m1"] == 2
    c.retire("m2", 0)
    c.forget("m2")
    c.merge(counter_update("m5", 1))
    assert c.version()["m5"] == 1


def test_a_replica_own_writer_id_is_admitted_on_a_full_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(updatelog, "MAX_ORIGINS", 2)
    c = Replica("c")
    for i in range(3):
        c.merge(counter_update(f"m{i}", 1))
    c.counter("n").increment()
    assert c.version()[c.writer_id] == 1 and len(c.version()) == 3


# --- disk full while receiving ------------------------------------------------------------


class Disk:
    """A disk with room for ``room`` bytes of log: a write past it is cut short (as
    a real one is), the next fails with ENOSPC. ``room = None``: unlimited."""

    def __init__(self, room: int | None) -> None:
        self.room = room
        self.real_write = os.write

    def write(self, fd: int, data: Any) -> int:
        if self.room is None or not os.readlink(f"/proc/self/fd/{fd}").endswith("/log"):
            return self.real_write(fd, data)
        free = self.room - os.fstat(fd).st_size
        if free <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.real_write(fd, bytes(data)[:free])


def writer_with(updates: int) -> Replica:
    a = Replica("a")
    for i in range(updates):
        a.register(f"k{i % 20}").set(i)
        a.counter("n").increment()
    return a


@pytest.mark.skipif(not os.path.exists("/proc/self/fd"), reason="needs /proc/self/fd")
def test_a_full_disk_while_receiving_costs_only_what_could_not_be_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    folder = str(tmp_path / "b")
    a = writer_with(300)
    b = Replica("b", path=folder)
    b.counter("mine").increment()
    disk = Disk(os.path.getsize(os.path.join(folder, "log")) + 8_000)
    monkeypatch.setattr("crdtmem.storage.os.write", disk.write)
    with caplog.at_level(logging.WARNING, logger="crdtmem"):
        with pytest.raises(StorageError):
            sync(b, a)
        applied = b.version()[a.writer_id]
        assert 0 < applied < 600
        # what is applied is exactly what was stored, in order: a's first updates
        # (a register set, then a counter increment, in turn)
        assert b.counter("n").value == applied // 2
        stats = b.stats()
        assert stats["unpersisted_updates"] == 600 - applied
        for _ in range(3):  # still full: nothing more, nothing less
            with pytest.raises(StorageError):
                sync(b, a)
        assert b.version()[a.writer_id] == applied
        with pytest.raises(OSError):  # local writes: their documented error
            b.counter("mine").increment()
        assert b.counter("mine").value == 1
        disk.room = None  # space returns: the next merge works, no operator action
        sync(b, a)
    assert b.value() | {"mine": 1} == a.value() | {"mine": 1}
    assert b.version()[a.writer_id] == 600
    warnings = [r for r in caplog.records if "could not store" in r.getMessage()]
    assert len(warnings) == 1  # rate-limited: the first of the failed merges
    assert any("works again" in r.getMessage() for r in caplog.records)
    value, version = b.value(), b.version()
    b.close()
    # the second life: same writer id, the log replays, nothing acknowledged is lost
    again = Replica("b", path=folder)
    assert again.writer_id == b.writer_id
    assert again.value() == value and again.version() == version
    assert again.stats()["storage_damaged_regions"] == 0
    again.close()


@pytest.mark.skipif(not os.path.exists("/proc/self/fd"), reason="needs /proc/self/fd")
def test_a_full_state_that_cannot_be_stored_is_not_joined(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = str(tmp_path / "b")
    a = writer_with(50)
    a.compact_log(a.version())  # a can only send its whole state
    b = Replica("b", path=folder)
    disk = Disk(0)
    monkeypatch.setattr("crdtmem.storage.os.write", disk.write)
    with pytest.raises(StorageError):
        sync(b, a)
    assert b.value() == {} and b.version() == {}
    assert b.stats()["unpersisted_updates"] == 1
    disk.room = None
    sync(b, a)
    assert b.value() == a.value()
    b.close()
    assert Replica("b", path=folder).value() == a.value()


REAL_LIMIT = textwrap.dedent(
    """
    import resource, signal, sys
    from crdtmem import Replica, StorageError
    folder = sys.argv[1]
    a = Replica("a")
    for i in range(400):
        a.register(f"k{i % 20}").set("v" * 100)
    b = Replica("b", path=folder)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past it fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, hard))
    try:
        b.merge(a.delta_since())
        print("no error")
    except StorageError as exc:
        print("refused", exc.__cause__.errno)
    applied = b.version().get(a.writer_id, 0)
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    b.merge(a.delta_since(b.version()))
    assert b.value() == a.value(), "converged"
    b.close()
    again = Replica("b", path=folder)
    assert again.value() == a.value() and again.writer_id == b.writer_id
    print("applied", applied, "of", a.version()[a.writer_id])
    """
)


def test_a_real_file_size_limit_while_receiving(tmp_path: Path) -> None:
    """A real kernel write failure without root: RLIMIT_FSIZE (in a child process)
    cuts writes at a byte count, with a short write and then EFBIG, like a full disk."""
    pytest.importorskip("resource")
    done = subprocess.run(
        [sys.executable, "-c", REAL_LIMIT, str(tmp_path / "b")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split("\n")
    assert lines[0] == f"refused {errno.EFBIG}"
    applied, made = int(lines[1].split()[1]), int(lines[1].split()[3])
    assert 0 < applied < made


def test_updates_of_this_replicas_own_writer_id_it_never_made_are_dropped(
    tmp_path: Path,
) -> None:
    a = Replica("a", path=str(tmp_path / "a"))
    a.counter("c").increment()
    a.merge(counter_update(a.writer_id, 2))
    a.merge(counter_update(a.writer_id, 7))
    assert a.version() == {a.writer_id: 1} and a.stats()["false_claims"] == 2
    a.counter("c").increment()  # its own next update is still its seq 2
    assert a.version() == {a.writer_id: 2} and a.counter("c").value == 2
    a.close()
    again = Replica("a", path=str(tmp_path / "a"))  # its own log replays, all of it
    assert again.version() == {again.writer_id: 2} and again.counter("c").value == 2
    again.close()


def test_updates_waiting_for_a_writer_stop_waiting_once_it_can_no_longer_be_admitted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(updatelog, "MAX_ORIGINS", 4)
    c = Replica("c")
    c.counter("n").increment()
    c.merge(counter_update("b", 1))
    c.merge(counter_update("b", 2, {"z": 1}))  # z is unknown, and there is room for it
    assert c.stats()["buffered_updates"] == 1
    c.merge(counter_update("m1", 1))
    c.merge(counter_update("m2", 1))  # the table is full: z will never be admitted
    assert c.version()["b"] == 2 and c.stats()["buffered_updates"] == 0


def test_a_close_that_cannot_write_its_clean_mark_still_releases_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = str(tmp_path / "a")
    a = Replica("a", path=folder)
    a.counter("c").increment()

    def full(target: str, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("crdtmem.storage.write_atomically", full)
    with pytest.raises(OSError):
        a.close()
    monkeypatch.undo()
    again = Replica("a", path=folder)  # not locked; the same boot: the same life
    assert again.writer_id == a.writer_id and again.counter("c").value == 1
    again.close()
