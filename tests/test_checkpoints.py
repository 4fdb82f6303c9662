"""Checkpoints, views of the past, restore, and their storage."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from crdtmem import Replica, files


def populate(r: Replica, tag: str) -> None:
    r.counter("votes").increment(3)
    r.register("summary").set(f"summary {tag}")
    r.set("sources").add(f"src-{tag}")
    r.list("findings").append(f"finding {tag}")
    r.text("draft").insert(0, f"draft {tag} ")
    r.map("board").counter("publish").increment()
    r.map("board").list("notes").append(tag)


def sync(a: Replica, b: Replica) -> None:
    b.merge(a.delta_since(b.version()))
    a.merge(b.delta_since(a.version()))


def test_at_a_checkpoint_shows_the_past_and_at_a_version_travels_through_the_log() -> None:
    r = Replica("a")
    populate(r, "one")
    first = r.checkpoint("after round one")
    middle = r.version()
    populate(r, "two")
    r.list("findings").delete(0)
    view = r.at(first)
    assert view.value() == {**view.value(), "votes": 3, "summary": "summary one"}
    assert view.version() == first.version == middle
    assert r.at(middle).value() == view.value()
    assert r.at({}).value() == {}
    assert r.at(r.version()).value() == r.value()
    halfway = {r.writer_id: middle[r.writer_id] + 2}
    assert r.at(halfway).version() == halfway
    assert [c.label for c in r.checkpoints()] == ["after round one"]


def test_at_rejects_versions_it_cannot_show() -> None:
    a, b = Replica("a"), Replica("b")
    a.counter("c").increment()
    b.merge(a.delta_since())
    b.counter("c").increment()  # depends on a's two updates
    with pytest.raises(ValueError, match="beyond"):
        b.at({a.writer_id: 5})
    with pytest.raises(ValueError, match="causally closed"):
        b.at({b.writer_id: 1})  # b's update without the a updates it depends on
    b.compact_log(b.version())
    with pytest.raises(ValueError, match="trimmed"):
        b.at({a.writer_id: 1})
    checkpoint = b.checkpoint()
    assert b.at(checkpoint).value() == {"c": 2}


def test_restore_brings_values_back_and_peers_converge_to_them() -> None:
    a, b = Replica("a"), Replica("b")
    populate(a, "one")
    sync(a, b)
    good = a.checkpoint("good")
    past = a.at(good).value()
    populate(b, "bad")  # another agent goes astray
    b.set("sources").discard("src-one")
    b.map("board").remove("notes")
    b.counter("later").increment(4)  # a field created after the checkpoint
    sync(a, b)
    assert a.value() != past
    skipped = a.restore(good)
    assert skipped == []
    expected = {**past, "later": 0}
    assert a.value() == expected
    sync(a, b)
    assert b.value() == expected and b.version() == a.version()


def test_restore_reports_what_cannot_go_back() -> None:
    a, b = Replica("a"), Replica("b")
    a.gcounter("g").increment(1)
    point = a.checkpoint()
    a.gcounter("g").increment(5)
    a.mvregister("m").set("x")
    b.mvregister("m").set("y")
    sync(a, b)
    mixed = a.checkpoint()
    a.mvregister("m").set("z")
    assert a.restore(point) == ["g", "m"]  # g cannot shrink; m is emptied to None
    assert a.restore(mixed) == ["m"]  # two concurrent values: one is kept
    assert a.mvregister("m").values == ["x"]


def test_only_the_last_n_are_kept() -> None:
    r = Replica("a", keep_checkpoints=3)
    made = []
    for i in range(5):
        r.counter("c").increment()
        made.append(r.checkpoint(f"c{i}"))
    assert [c.label for c in r.checkpoints()] == ["c2", "c3", "c4"]
    with pytest.raises(ValueError, match="no longer kept"):
        r.at(made[0])
    with pytest.raises(ValueError):
        Replica("b", keep_checkpoints=0)


def test_durable_checkpoints_survive_restart_and_damage_is_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "a"
    r = Replica("a", path=str(folder))
    populate(r, "one")
    first = r.checkpoint("one")
    populate(r, "two")
    second = r.checkpoint("two")
    r.close()
    files = sorted((folder / "checkpoints").glob("*.ckpt"))
    assert len(files) == 2
    damaged = bytearray(files[1].read_bytes())
    damaged[-3] ^= 0xFF
    files[1].write_bytes(bytes(damaged))
    again = Replica("a", path=str(folder))
    assert [c.number for c in again.checkpoints()] == [first.number]
    assert again.at(first).value()["summary"] == "summary one"
    assert second.number not in [c.number for c in again.checkpoints()]
    third = again.checkpoint()
    assert third.number == first.number + 1 or third.number > first.number
    again.close()


def test_a_checkpoint_file_rename_is_made_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_sync = files.sync_folder

    def sync_folder(folder: str) -> None:
        synced.append(folder)
        real_sync(folder)

    monkeypatch.setattr(files, "sync_folder", sync_folder)
    r = Replica("a", path=str(tmp_path / "a"))
    r.counter("c").increment()
    r.checkpoint("one")
    assert str(tmp_path / "a" / "checkpoints") in synced
    assert not [name for name in os.listdir(tmp_path / "a" / "checkpoints") if "tmp" in name]
    r.close()
