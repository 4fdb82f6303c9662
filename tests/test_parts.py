"""The replica's parts, each alone: update log, collector, checkpoint store, message
codec, storage replay records, and field handles restoring themselves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from crdtmem import DecodeError, Replica, StorageError, codec
from crdtmem.checkpoints import CheckpointStore
from crdtmem.collector import Collector
from crdtmem.crdt import Writer
from crdtmem.gcounter import GCounter
from crdtmem.messages import (
    LogEntry,
    StateMessage,
    Update,
    decode_message,
    state_message,
    updates_message,
)
from crdtmem.ormap import ORMap
from crdtmem.pncounter import PNCounter
from crdtmem.rga import RGA
from crdtmem.storage import MembershipRecord, StateRecord, Storage, UpdateRecord
from crdtmem.updatelog import UpdateLog


def log_entry(update: Update) -> LogEntry:
    """The update as its origin's log keeps it."""
    return (update.deps, update.name, update.tag, codec.pack_body(update.wire))


def update(origin: str, seq: int, deps: dict[str, int] | None = None, n: int = 1) -> Update:
    delta = GCounter.empty().increment_delta(Writer.fixed(origin), n)
    return Update(origin, seq, deps or {}, "c", GCounter.TAG, delta, delta.to_wire())


class Applier:
    """Records what the log hands over, as the replica would apply it."""

    def __init__(self) -> None:
        self.applied: list[tuple[str, int]] = []

    def __call__(self, update: Update, entry: LogEntry) -> None:
        assert entry == log_entry(update)
        self.applied.append((update.origin, update.seq))


# --- the update log ---------------------------------------------------------------------


def test_update_log_buffers_until_dependencies_arrive_then_delivers_in_order() -> None:
    log, apply = UpdateLog("me"), Applier()
    assert log.deliver([update("a", 2)], apply) == []
    assert log.deliver([update("b", 1, {"a": 1})], apply) == []
    assert log.buffered == 2
    delivered = log.deliver([update("a", 1)], apply)
    assert [(u.origin, u.seq) for u in delivered] == [("a", 1), ("a", 2), ("b", 1)]
    assert apply.applied == [("a", 1), ("a", 2), ("b", 1)]
    assert log.version == {"a": 2, "b": 1} and log.buffered == 0
    assert log.deliver([update("a", 1)], apply) == []  # a duplicate is ignored
    assert len(log) == 3


def test_update_log_records_nothing_when_applying_fails() -> None:
    log = UpdateLog("me")

    def failing(update: Update, entry: LogEntry) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError):
        log.deliver([update("a", 1)], failing)
    assert log.version == {} and len(log) == 0


def test_local_updates_share_their_dependencies_until_a_remote_one_arrives() -> None:
    log = UpdateLog("me")
    log.deliver([update("a", 1)], Applier())
    stored: list[tuple[str, int, LogEntry]] = []
    assert log.add_local("c", GCounter.TAG, b"x", None) == 1
    assert log.add_local("c", GCounter.TAG, b"y", lambda *record: stored.append(record)) == 2
    first, second = log.own_log
    assert first[0] is second[0] and first[0] == {"a": 1}
    assert stored == [("me", 2, second)]
    log.deliver([update("a", 2)], Applier())
    log.add_local("c", GCounter.TAG, b"z", None)
    assert log.own_log[-1][0] == {"a": 2} and log.version == {"a": 2, "me": 3}


def test_a_local_update_that_cannot_be_stored_is_not_recorded() -> None:
    log = UpdateLog("me")

    def full(origin: str, seq: int, entry: LogEntry) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError):
        log.add_local("c", GCounter.TAG, b"x", full)
    assert log.version == {} and log.own_log == []


def test_update_log_runs_and_trimming() -> None:
    log = UpdateLog("me")
    log.deliver([update("a", s) for s in (1, 2, 3)], Applier())
    found = log.runs_since({"a": 1}, budget=10**6)
    assert found is not None
    runs, covered = found
    assert [(o, first, len(entries)) for o, first, entries in runs] == [("a", 2, 2)]
    assert covered == {"a": 3}
    assert log.compact({"a": 2}) == 2
    assert log.runs_since({}, budget=10**6) is None  # a full state is needed
    assert [(o, f, len(e)) for o, f, e in log.runs_between({"a": 2}, {"a": 3})] == [("a", 3, 1)]
    with pytest.raises(ValueError, match="trimmed"):
        log.runs_between({}, {"a": 3})


def test_update_log_membership() -> None:
    log, apply = UpdateLog("me"), Applier()
    log.deliver([update("a", 1), update("a", 3)], apply)
    assert log.retirement_bar("a", 0) == 1  # the bar rises to what is applied
    log.retire("a", 1)
    assert log.buffered == 0  # update 3 is past the bar
    log.deliver([update("a", 2)], apply)
    assert log.refused_retired == 1
    with pytest.raises(ValueError, match="not retired"):
        log.forgettable("b")
    assert log.forgettable("a") == 1
    log.forget("a", 1)
    assert log.version == {} and log.state_vector() == {"a": 1}
    assert log.covers({"a": 1}) and log.forgettable("a") is None
    assert log.membership() == [("a", 1, True)]


def test_a_joined_state_advances_the_version_and_restarts_the_log() -> None:
    log = UpdateLog("me")
    log.deliver([update("a", 1)], Applier())
    log.advance({"a": 5, "b": 2})
    assert log.version == {"a": 5, "b": 2} and len(log) == 0
    assert log.starts == {"a": 6, "b": 3}


# --- the collector ----------------------------------------------------------------------


def test_collector_hands_back_deletes_once_stable() -> None:
    writer = Writer.fixed("a")
    state = RGA.empty()
    state.absorb(state.insert_delta(writer, 0, "x"))
    delete = state.delete_delta(writer, 0)
    state.absorb(delete)
    collector = Collector()
    collector.add_update(("l", RGA.TAG), delete, "a", 2)
    assert len(collector) == 1
    assert collector.pop_stable({"a": 1}, {}) == {}
    ready = collector.pop_stable({"a": 2}, {})
    assert list(ready) == [(("l", RGA.TAG),)]
    assert state.collect(ready[(("l", RGA.TAG),)]) == 1
    assert len(collector) == 0


def test_collector_waits_for_the_whole_version_of_a_joined_state() -> None:
    writer = Writer.fixed("a")
    state = RGA.empty()
    state.absorb(state.insert_delta(writer, 0, "x"))
    state.absorb(state.delete_delta(writer, 0))
    collector = Collector()
    collector.add_joined({"a": 2, "b": 1}, [((("l", RGA.TAG),), state)])
    assert collector.pop_stable({"a": 2}, {}) == {}
    assert len(collector.pop_stable({"a": 2, "b": 1}, {})[(("l", RGA.TAG),)]) == 1


# --- the checkpoint store -----------------------------------------------------------------


def test_checkpoint_store_in_memory_keeps_the_newest() -> None:
    store = CheckpointStore(None, keep=2)
    made = [store.add(f"c{i}", {"a": i}, float(i), f"state {i}".encode()) for i in (1, 2, 3)]
    assert [c.number for c in store.checkpoints()] == [2, 3] and len(store) == 2
    assert store.state(made[2]) == b"state 3"
    with pytest.raises(ValueError, match="no longer kept"):
        store.state(made[0])
    assert store.base_for({"a": 2}) == made[1]
    assert store.base_for({"a": 1}) is None
    with pytest.raises(ValueError):
        CheckpointStore(None, keep=0)


def test_checkpoint_store_in_a_folder_trims_files_and_loads_them(tmp_path: Path) -> None:
    folder = str(tmp_path / "checkpoints")
    store = CheckpointStore(folder, keep=2)
    for i in (1, 2, 3):
        store.add(None, {"a": i}, 0.0, b"s%d" % i)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "0000000002.ckpt",
        "0000000003.ckpt",
    ]
    again = CheckpointStore(folder, keep=2)
    assert again.checkpoints() == store.checkpoints()
    assert again.state(again.checkpoints()[-1]) == b"s3"


# --- the message codec --------------------------------------------------------------------


def test_messages_round_trip() -> None:
    one, two = update("a", 1), update("a", 2)
    decoded = decode_message(updates_message([("a", 1, [log_entry(one), log_entry(two)])]))
    assert decoded == [one, two]
    fields: dict[str, dict[int, Any]] = {"c": {GCounter.TAG: one.delta}}
    state = decode_message(state_message("a", {"a": 1}, fields))
    assert isinstance(state, StateMessage)
    assert (state.sender, state.vector, state.fields) == ("a", {"a": 1}, fields)
    with pytest.raises(DecodeError):
        decode_message(codec.pack([3, "what"]))


# --- storage replay -----------------------------------------------------------------------


def test_storage_replays_typed_records(tmp_path: Path) -> None:
    storage = Storage.open(str(tmp_path / "s"), "me")
    one = update("a", 1)
    storage.append_update("a", 1, log_entry(one))
    storage.append_state(state_message("a", {"a": 1}, {}))
    storage.append_membership("a", 1, True)
    records = list(storage.replay())
    assert records == [
        UpdateRecord(one),
        StateRecord(StateMessage("a", {"a": 1}, {})),
        MembershipRecord("a", 1, True),
    ]
    storage.close()


def test_storage_replay_refuses_an_invalid_record(tmp_path: Path) -> None:
    storage = Storage.open(str(tmp_path / "s"), "me")
    storage.append_state(codec.pack([1, []]))  # an updates message where a state belongs
    with pytest.raises(StorageError, match="does not hold a state"):
        list(storage.replay())
    storage.close()


# --- handles restore themselves -----------------------------------------------------------


def test_each_handle_restores_itself_and_reports_what_it_cannot() -> None:
    r = Replica("a")
    counter = r.counter("c")
    counter.increment(5)
    past = PNCounter.empty()
    past.absorb(past.increment_delta(Writer.fixed("a"), 2))
    assert counter.restore_to(past) == [] and counter.value == 2
    grown = r.gcounter("g")
    grown.increment(3)
    assert grown.restore_to(None) == ["g"] and grown.value == 3
    board = r.map("m")
    board.counter("k").increment()
    board.list("l").append("x")
    assert board.restore_to(ORMap.empty()) == [] and board.keys() == []
