"""Bounded logs: trimming what every peer has, and snapshotting the durable log."""

from __future__ import annotations

import errno
import itertools
from pathlib import Path

import pytest

from crdtmem import Replica
from crdtmem.storage import Storage
from transport import SimNetwork


def test_compacted_log_falls_back_to_full_state_for_a_peer_behind() -> None:
    a, behind = Replica("a"), Replica("behind")
    for i in range(100):
        a.list("l").append(i)
    a.set("s").add("x")
    middle = a.version()
    assert a.compact_log(middle) == 100 + 1  # the appends and the add
    assert a.stats()["log_entries"] == 0
    a.counter("c").increment()
    behind.merge(a.delta_since(behind.version()))  # the full state
    assert behind.value() == a.value() and behind.version() == a.version()
    fresh = Replica("fresh")
    fresh.merge(behind.delta_since())  # behind's log starts after the state it joined
    assert fresh.value() == a.value()
    # a peer that is only slightly behind still gets just the updates it lacks
    a.counter("c").increment()
    partial = a.delta_since(behind.version())
    behind.merge(partial)
    assert behind.value() == a.value() and len(partial) < 100


def test_stats_report_sizes() -> None:
    r = Replica("a")
    for i in range(10):
        r.list("l").append(i)
        r.map("m").list("k").append(i)
    for _ in range(4):
        r.list("l").delete(0)
        r.map("m").list("k").delete(0)
    r.checkpoint()
    stats = r.stats()
    assert stats["list_tombstones"] == 8
    assert stats["log_entries"] == r.version()[r.writer_id]
    assert stats["log_bytes"] > 0 and stats["checkpoints"] == 1
    assert stats["buffered_updates"] == 0 and stats["storage_bytes"] == 0
    assert "state_bytes" not in stats
    measured = r.stats(state_bytes=True)["state_bytes"]
    r.compact_log(r.version())  # now a peer that has nothing gets the full state
    assert measured == len(r.delta_since({})) > 0


def test_compact_log_ignores_what_it_has_not_seen() -> None:
    a = Replica("a")
    a.counter("c").increment()
    assert a.compact_log({a.writer_id: 99, "stranger": 5}) == 1
    assert a.version() == {a.writer_id: 1}
    a.counter("c").increment()
    b = Replica("b")
    b.merge(a.delta_since())
    assert b.counter("c").value == 2


def test_gossip_trims_logs_once_everyone_has_acknowledged() -> None:
    net = SimNetwork(4)
    for name in ("a", "b", "c"):
        net.add_node(name)
    for i in range(300):
        net.write("abc"[i % 3], lambda r, i=i: r.list("l").append(i))  # type: ignore[misc]
    assert net.run_until_converged(timeout=30)
    net.run_for(3)  # a few digest rounds: acknowledgements reach everyone
    for node in net.nodes.values():
        assert node.replica.stats()["log_entries"] < 30
    net.add_node("late")  # needs updates that are no longer logged: gets the state
    assert net.run_until_converged(timeout=30)
    assert net.replica("late").list("l").value == net.replica("a").list("l").value


def test_compact_storage_snapshots_the_log_and_restores(tmp_path: Path) -> None:
    folder = str(tmp_path / "a")
    r = Replica("a", path=folder)
    for i in range(2000):
        r.counter("c").increment()
        r.register("last").set(i)
    before = r.stats()["storage_bytes"]
    after = r.compact_storage()
    assert after < before / 20
    r.counter("c").increment()  # appends continue after the snapshot
    value, version = r.value(), r.version()
    r.close()
    again = Replica("a", path=folder)
    assert again.value() == value and again.version() == version
    peer = Replica("peer")
    peer.merge(again.delta_since())
    assert peer.value() == value
    again.close()


def test_a_durable_log_is_snapshotted_once_it_outgrows_the_state(tmp_path: Path) -> None:
    folder = str(tmp_path / "a")
    r = Replica("a", path=folder, snapshot_bytes=32 * 1024)
    sizes = []
    for i in range(6000):
        r.list("l").append(i)
        if i >= 10:
            r.list("l").delete(0)
        if i % 100 == 0:
            r.collect_garbage(r.version())  # alone, everything it has is stable
        sizes.append(r.stats()["storage_bytes"])
    # The log never outgrew the limit by more than one record, and was rewritten often.
    assert max(sizes) <= 32 * 1024 + 200
    assert sum(1 for a, b in itertools.pairwise(sizes) if b < a) >= 5
    value = r.value()
    r.close()
    again = Replica("a", path=folder)
    assert again.value() == value and again.version() == r.version()
    again.close()


def test_a_snapshot_that_fails_for_lack_of_disk_loses_nothing_and_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    folder = str(tmp_path / "a")
    r = Replica("a", path=folder, snapshot_bytes=16 * 1024)
    real_rewrite = Storage.rewrite

    def full_disk(self: Storage, states: list[bytes], membership: object = None) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Storage, "rewrite", full_disk)
    for _ in range(600):
        r.counter("c").increment()  # every call succeeds: the write itself was stored
    assert "could not snapshot" in caplog.text
    grown = r.stats()["storage_bytes"]
    assert grown > 16 * 1024
    monkeypatch.setattr(Storage, "rewrite", real_rewrite)
    for _ in range(3000):
        r.counter("c").increment()
    assert r.stats()["storage_bytes"] < 4 * grown  # retried after more growth, and done
    r.close()
    assert Replica("a", path=folder).counter("c").value == 3600


def test_snapshots_can_be_left_to_compact_storage(tmp_path: Path) -> None:
    r = Replica("a", path=str(tmp_path / "a"), snapshot_bytes=None)
    sizes = []
    for i in range(3000):
        r.register("last").set(i)
        sizes.append(r.stats()["storage_bytes"])
    assert sizes == sorted(sizes)  # never rewritten
    with pytest.raises(ValueError, match="snapshot_bytes"):
        Replica("b", snapshot_bytes=0)
