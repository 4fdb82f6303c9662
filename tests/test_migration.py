"""Stored format versions: old folders are migrated on open, newer ones refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from crdtmem import Replica, StorageError, codec
from crdtmem.storage import STORAGE_FORMAT

FIXTURE = Path(__file__).parent / "fixtures" / "storage-v1"


def _manifest(folder: Path) -> dict[str, object]:
    meta = codec.unpack_stored((folder / "MANIFEST").read_bytes())
    assert isinstance(meta, dict)
    return meta


def test_a_format_1_folder_opens_with_everything_and_is_migrated(tmp_path: Path) -> None:
    folder = tmp_path / "writer"
    shutil.copytree(FIXTURE, folder)
    expected = json.loads((FIXTURE.parent / "storage-v1.expected.json").read_text())
    assert _manifest(folder)["format"] == 1
    r = Replica("writer", path=str(folder))
    value = r.value()
    value["tags"] = sorted(value["tags"])
    assert value == expected["value"] and r.version() == expected["version"]
    manifest = _manifest(folder)
    assert manifest["format"] == STORAGE_FORMAT and manifest["replica_id"] == "writer"
    # The legacy life goes on under the bare name: its records need no migration.
    assert manifest["incarnation"] is None and r.writer_id == "writer"
    # Its checkpoint came along, and time travel to it works.
    (before,) = r.checkpoints()
    assert before.label == "before-peer" and r.at(before)["steps"] == 7
    # It keeps working as a format-2 folder: writes, collection, snapshot, reopen.
    r.list("notes").delete(0)
    assert r.collect_garbage(r.version()) > 0
    r.compact_storage()
    r.close()
    again = Replica("writer", path=str(folder))
    assert again.list("notes").value == expected["value"]["notes"][1:]
    assert again.stats()["list_tombstones"] == 0
    again.close()


def test_a_folder_from_a_newer_format_is_refused_naming_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "r"
    Replica("r", path=str(folder)).close()
    (folder / "MANIFEST").write_bytes(codec.pack({"format": STORAGE_FORMAT + 1, "replica_id": "r"}))
    with pytest.raises(StorageError, match=r"MANIFEST.*newer crdtmem"):
        Replica("r", path=str(folder))


def test_a_folder_of_an_impossible_format_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "r"
    Replica("r", path=str(folder)).close()
    (folder / "MANIFEST").write_bytes(codec.pack({"format": 0, "replica_id": "r"}))
    with pytest.raises(StorageError, match="unknown storage format 0"):
        Replica("r", path=str(folder))


FIXTURE_V2 = Path(__file__).parent / "fixtures" / "storage-v2"


def test_a_format_2_folder_opens_with_everything(tmp_path: Path) -> None:
    folder = tmp_path / "writer"
    shutil.copytree(FIXTURE_V2, folder)
    expected = json.loads((FIXTURE_V2.parent / "storage-v2.expected.json").read_text())
    assert _manifest(folder)["format"] == 2
    r = Replica("writer", path=str(folder))
    value = r.value()
    value["tags"] = sorted(value["tags"])
    assert value == expected["value"]
    assert {k: v for k, v in r.version().items() if v} == expected["version"]
    assert r.retired() == {"gone": (0, False)}
    (before,) = r.checkpoints()
    assert r.at(before)["steps"] == 7
    r.close()
