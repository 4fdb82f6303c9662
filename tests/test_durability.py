"""Durable replicas: restore after restart, after kill -9, after a torn tail; full disk."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from crdtmem import Replica, StorageError
from crdtmem.storage import Storage


def test_reopen_restores_state_and_version(tmp_path: Path) -> None:
    folder = str(tmp_path / "a")
    r = Replica("a", path=folder)
    r.counter("c").increment(3)
    r.list("l").append("x")
    r.text("t").insert(0, "héllo")
    peer = Replica("b")
    peer.set("s").add(1)
    r.merge(peer.delta_since())
    value, version = r.value(), r.version()
    r.close()
    again = Replica("a", path=folder)
    assert again.value() == value and again.version() == version
    again.list("l").append("y")  # no dot or sequence number is reused
    fresh = Replica("c")
    fresh.merge(again.delta_since())
    assert fresh.list("l").value == ["x", "y"]
    again.close()


def test_a_closed_durable_replica_refuses_writes_but_reads(tmp_path: Path) -> None:
    from crdtmem import ReplicaClosed

    r = Replica("a", path=str(tmp_path / "a"))
    r.counter("c").increment()
    peer = Replica("b")
    peer.counter("c").increment()
    r.close()
    with pytest.raises(ReplicaClosed):
        r.counter("c").increment()
    with pytest.raises(ReplicaClosed):
        r.merge(peer.delta_since())
    assert r.counter("c").value == 1 and r.value() == {"c": 1}
    r.close()  # idempotent


def test_other_replica_id_is_refused(tmp_path: Path) -> None:
    folder = str(tmp_path / "a")
    Replica("a", path=folder).close()
    with pytest.raises(ValueError, match="holds replica 'a'"):
        Replica("b", path=folder)


def test_missing_parent_folders_are_created(tmp_path: Path) -> None:
    folder = str(tmp_path / "state" / "nested" / "a")
    r = Replica("a", path=folder)
    r.counter("c").increment(2)
    r.close()
    assert Replica("a", path=folder).value() == {"c": 2}


def test_negative_versions_are_value_errors_and_other_types_type_errors() -> None:
    r = Replica("a")
    for call in (r.delta_since, r.compact_log, r.collect_garbage, r.at):
        with pytest.raises(ValueError, match="non-negative"):
            call({"b": -1})
        with pytest.raises(TypeError):
            call({"b": 1.5})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="non-negative"):
        r.retire("b", -1)
    with pytest.raises(TypeError):
        r.retire("b", "1")  # type: ignore[arg-type]


def test_newer_format_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    from crdtmem import codec

    folder = tmp_path / "a"
    folder.mkdir()
    (folder / "MANIFEST").write_bytes(codec.pack({"format": 99, "replica_id": "a"}))
    with pytest.raises(StorageError, match="newer crdtmem"):
        Replica("a", path=str(folder))


def test_full_state_merge_survives_restart(tmp_path: Path) -> None:
    source = Replica("src")
    source.counter("c").increment(5)
    source.compact_log({"src": 2})  # the log lacks updates 1-2: forces the full-state path
    r = Replica("a", path=str(tmp_path / "a"))
    r.merge(source.delta_since())
    assert r.counter("c").value == 5
    r.close()
    assert Replica("a", path=str(tmp_path / "a")).counter("c").value == 5


@pytest.mark.parametrize("cut", [1, 5, 9])
def test_torn_tail_keeps_every_whole_record(tmp_path: Path, cut: int) -> None:
    folder = str(tmp_path / "a")
    r = Replica("a", path=folder)
    for i in range(10):
        r.list("l").append(i)
    r.close()
    log = Path(folder) / "log"
    data = log.read_bytes()
    log.write_bytes(data[:-cut])
    again = Replica("a", path=folder)
    assert again.list("l").value == list(range(9))  # the last append was torn off
    again.list("l").append("after")  # appends continue after the cut, readable again
    again.close()
    assert Replica("a", path=folder).list("l").value == [*range(9), "after"]


def test_flipped_byte_is_detected(tmp_path: Path) -> None:
    folder = str(tmp_path / "a")
    r = Replica("a", path=folder)
    for _ in range(10):
        r.counter("c").increment()
    r.close()
    log = Path(folder) / "log"
    data = bytearray(log.read_bytes())
    data[len(data) // 2] ^= 0xFF
    log.write_bytes(bytes(data))
    again = Replica("a", path=folder)
    # Only the damaged record is lost: those before it apply, those after it wait for
    # it (a peer may hold it); never a wrong value. A new life: the log cannot prove
    # it holds every update of the old one.
    old = r.writer_id
    assert again.writer_id != old and again.predecessors() == [old]
    assert 0 <= again.counter("c").value < 10
    assert again.version()[old] == again.counter("c").value
    assert again.stats()["buffered_updates"] == 10 - again.version()[old] - 1
    assert again.stats()["storage_damaged_regions"] == 1
    assert again.stats()["storage_lost_bytes"] > 0
    again.close()


def test_full_disk_fails_the_call_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = Replica("a", path=str(tmp_path / "a"))
    r.list("l").append("kept")
    before = (r.value(), r.version())
    real_write = os.write

    def full_disk(fd: int, data: Any) -> int:
        real_write(fd, bytes(data)[:3])  # a partial write, then the error
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("crdtmem.storage.os.write", full_disk)
    with pytest.raises(OSError) as info:
        r.list("l").append("lost")
    assert info.value.errno == errno.ENOSPC
    assert (r.value(), r.version()) == before
    monkeypatch.setattr("crdtmem.storage.os.write", real_write)
    r.list("l").append("after")
    r.close()
    assert Replica("a", path=str(tmp_path / "a")).list("l").value == ["kept", "after"]


WRITER = textwrap.dedent(
    """
    import sys
    from crdtmem import Replica
    r = Replica("w", path=sys.argv[1])
    start = max(r.list("acked").value, default=0)
    i = start
    while True:
        i += 1
        r.list("acked").append(i)
        r.counter("c").increment()
        print(i, flush=True)
    """
)


def test_every_acknowledged_write_survives_kill_9(tmp_path: Path) -> None:
    folder = str(tmp_path / "w")
    acknowledged: list[int] = []
    for round_ in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, folder], stdout=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout is not None
            deadline = time.monotonic() + 30
            got = 0
            while got < 50 + 17 * round_ and time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line:
                    break
                acknowledged.append(int(line))
                got += 1
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            if proc.stdout is not None:
                proc.stdout.close()
        restored = Replica("w", path=folder)
        values = restored.list("acked").value
        assert set(acknowledged) <= set(values), "an acknowledged write was lost"
        assert len(values) == len(set(values)), "a write was duplicated"
        restored.close()
    assert len(acknowledged) >= 250


@pytest.mark.parametrize("mode", ["process", "group", "fsync"])
def test_every_durability_mode_restores(tmp_path: Path, mode: str) -> None:
    folder = str(tmp_path / mode)
    r = Replica("a", path=folder, durability=mode)
    for i in range(100):
        r.list("l").append(i)
    r.close()
    assert Replica("a", path=folder).list("l").value == list(range(100))


def test_storage_rejects_unknown_durability(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Storage.open(str(tmp_path / "x"), "a", durability="maybe")


def test_retired_and_forgotten_replicas_stay_so_across_restarts(tmp_path: Path) -> None:
    folder = str(tmp_path / "a")
    other = Replica("gone")
    other.counter("c").increment(5)
    a = Replica("a", path=folder)
    a.merge(other.delta_since())
    with pytest.raises(ValueError, match="not retired"):
        a.forget(other.writer_id)
    assert a.retire(other.writer_id, 0) == 1  # the bar rises to what is applied (1 update)
    with pytest.raises(ValueError, match="retire itself"):
        a.retire(a.writer_id, 3)
    a.forget(other.writer_id)
    assert other.writer_id not in a.version() and a.counter("c").value == 5
    other.counter("c").increment()
    a.merge(other.delta_since())  # past its bar: refused, counted
    assert a.counter("c").value == 5 and a.stats()["refused_retired_updates"] == 1
    a.close()
    for snapshot in (False, True):
        again = Replica("a", path=folder)
        assert again.retired() == {other.writer_id: (1, True)}
        assert other.writer_id not in again.version()
        assert again.counter("c").value == 5
        again.merge(other.delta_since())
        assert again.counter("c").value == 5
        if not snapshot:
            again.compact_storage()
        again.close()


def test_forget_needs_everything_up_to_the_bar(tmp_path: Path) -> None:
    a = Replica("a")
    a.retire("gone", 3)
    with pytest.raises(ValueError, match="only 0 of its updates"):
        a.forget("gone")
