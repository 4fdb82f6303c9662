"""Checkpoints and time travel: snapshots of a replica, views of its past, and restore.

A checkpoint is the replica's full state at one version, with a label and a time (from
the replica's own clock), checksummed; a durable replica keeps its checkpoints as files
(written beside the log, flushed, read back and verified), an in-memory one in memory.

``Replica.at(checkpoint)`` or ``Replica.at(version)`` is a read-only :class:`View` of the
past: a version is reached from the newest checkpoint it includes plus the logged updates
after it. ``Replica.restore(checkpoint)`` brings the *values* back by making new updates
(a CRDT cannot un-send what peers have): peers that merge them converge to the restored
values, and concurrent updates made elsewhere still merge in on top, as any update does.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from crdtmem import codec
from crdtmem.causality import dominates
from crdtmem.codec import as_dict, as_int, as_list
from crdtmem.errors import DecodeError
from crdtmem.files import write_atomically

if TYPE_CHECKING:
    from crdtmem.fields import MapField
    from crdtmem.replica import Replica

logger = logging.getLogger("crdtmem.checkpoints")

_FRAME = struct.Struct(">II")
FOLDER: Final = "checkpoints"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One snapshot: ``number`` increases with each checkpoint of a replica."""

    number: int
    label: str | None
    version: dict[str, int] = field(hash=False)
    created: float
    size: int
    checksum: int


@dataclass(slots=True)
class Stored:
    checkpoint: Checkpoint
    state: bytes | None  # None: on disk, read when needed


class View:
    """A read-only replica of the past (see :meth:`Replica.at`)."""

    def __init__(self, replica: Replica) -> None:
        self._replica = replica

    def value(self) -> dict[str, Any]:
        """Every field's plain value, as it was."""
        return self._replica.value()

    def version(self) -> dict[str, int]:
        """The version the view shows."""
        return self._replica.version()

    def __getitem__(self, name: str) -> Any:
        return self.value()[name]

    def __contains__(self, name: object) -> bool:
        return name in self.value()


def encode(checkpoint: Checkpoint, state: bytes) -> bytes:
    meta = [checkpoint.number, checkpoint.label, checkpoint.version, checkpoint.created, state]
    body = codec.pack(meta)
    return _FRAME.pack(len(body), zlib.crc32(body)) + body


def decode(data: bytes, where: str) -> tuple[Checkpoint, bytes]:
    """Parse a checkpoint file; ``DecodeError`` naming ``where`` if it is damaged."""
    if len(data) < _FRAME.size:
        raise DecodeError(f"{where}: truncated checkpoint")
    length, crc = _FRAME.unpack_from(data)
    body = data[_FRAME.size :]
    if len(body) != length or zlib.crc32(body) != crc:
        raise DecodeError(f"{where}: checkpoint checksum or length does not match")
    number, label, version, created, state = as_list(codec.unpack(body), "checkpoint", 5)
    if label is not None and type(label) is not str:
        raise DecodeError(f"{where}: checkpoint label is not a str")
    checkpoint = Checkpoint(
        as_int(number, "checkpoint number"),
        label,
        {k: as_int(v, "checkpoint version") for k, v in as_dict(version, "version").items()},
        float(created) if type(created) in (int, float) else 0.0,
        len(state) if isinstance(state, bytes) else 0,
        zlib.crc32(codec.as_bytes(state, "checkpoint state")),
    )
    return checkpoint, state


def write_file(folder: str, checkpoint: Checkpoint, state: bytes) -> None:
    """Write, flush, and read back a checkpoint file: a checkpoint that cannot be read
    back is an error now, not when it is needed."""
    os.makedirs(folder, exist_ok=True)
    target = os.path.join(folder, f"{checkpoint.number:010d}.ckpt")
    write_atomically(target, encode(checkpoint, state))
    with open(target, "rb") as handle:
        if decode(handle.read(), target)[1] != state:
            raise OSError(f"{target}: checkpoint read back differs from what was written")


def load_folder(folder: str) -> list[Stored]:
    """The readable checkpoints in ``folder``, oldest first; damaged ones are skipped
    with a warning naming the file."""
    if not os.path.isdir(folder):
        return []
    stored: list[Stored] = []
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".ckpt"):
            continue
        path = os.path.join(folder, name)
        try:
            with open(path, "rb") as handle:
                checkpoint, _ = decode(handle.read(), path)
        except DecodeError as exc:
            logger.warning("skipping damaged checkpoint: %s", exc)
            continue
        stored.append(Stored(checkpoint, None))
    return stored


def read_state(folder: str | None, stored: Stored) -> bytes:
    if stored.state is not None:
        return stored.state
    assert folder is not None
    path = os.path.join(folder, f"{stored.checkpoint.number:010d}.ckpt")
    with open(path, "rb") as handle:
        return decode(handle.read(), path)[1]


def base_for(history: list[Stored], target: dict[str, int]) -> Stored | None:
    """The newest checkpoint whose version ``target`` includes."""
    for stored in reversed(history):
        if dominates(target, stored.checkpoint.version):
            return stored
    return None


# --- restore ---------------------------------------------------------------------------


def restore_fields(replica: Replica, past: dict[str, dict[int, Any]]) -> list[str]:
    """Make ``replica``'s fields hold the values in ``past`` (name -> tag -> state), by
    ordinary mutations. Returns what could not be restored exactly, by path."""
    from crdtmem.ormap import visible

    skipped: list[str] = []
    now = replica._fields_snapshot()
    for name in sorted(set(now) | set(past)):
        entries = past.get(name) or {}
        tag = min(entries) if entries else min(now[name])
        state = visible(entries) if entries else None
        _restore_field(replica, None, name, tag, state, skipped=skipped)
    return skipped


def _restore_field(
    replica: Replica,
    parent: MapField | None,
    name: str,
    tag: int,
    state: Any,
    *,
    skipped: list[str],
) -> None:
    from crdtmem.registry import TYPES

    kind = TYPES[tag].KIND
    owner: Any = parent if parent is not None else replica
    handle = getattr(owner, "list" if kind == "list" else kind)(name)
    target = state.value() if state is not None else TYPES[tag].empty().value()
    current = handle.value if kind != "mvregister" else handle.values
    if current == target:
        return
    if kind == "gcounter":
        skipped.append(name)  # a grow-only counter cannot go back
    elif kind == "counter":
        handle.increment(target - current)
    elif kind == "register":
        handle.set(target)
    elif kind == "mvregister":
        handle.set(target[0] if target else None)
        if len(target) != 1:
            # Concurrent values cannot be recreated (one is kept), nor can the register
            # be emptied (it holds None).
            skipped.append(name)
    elif kind == "set":
        for element in sorted(target - current, key=codec.value_key):
            handle.add(element)
        for element in sorted(current - target, key=codec.value_key):
            handle.discard(element)
    elif kind == "list":
        for _ in range(len(current)):
            handle.delete(0)
        for item in target:
            handle.append(item)
    elif kind == "text":
        if current:
            handle.delete(0, len(current))
        if target:
            handle.insert(0, target)
    else:  # a map: remove keys that were not there, restore the others
        past_fields = state.fields if state is not None else {}
        present = set(target)
        for key in sorted(set(current) - present):
            handle.remove(key)
        for key in sorted(present):
            entries = past_fields[key]
            key_tag = min(entries)
            _restore_field(replica, handle, key, key_tag, entries[key_tag], skipped=skipped)
