"""The checkpoint store: snapshots of a replica's state, kept, named, trimmed and loaded.

A checkpoint is the replica's full state at one version, with a label and a time (from
the replica's own clock), checksummed; a durable replica keeps its checkpoints as files
(written beside the log, flushed, renamed with the folder synced, read back and
verified), an in-memory one in memory. Only the newest ``keep`` are kept.

``Replica.at(checkpoint)`` or ``Replica.at(version)`` is a read-only :class:`View` of the
past: a version is reached from the newest checkpoint it includes plus the logged updates
after it. ``Replica.restore(checkpoint)`` brings the *values* back by making new updates
(a CRDT cannot un-send what peers have): peers that merge them converge to the restored
values, and concurrent updates made elsewhere still merge in on top, as any update does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, final

from crdtmem import codec
from crdtmem.causality import dominates
from crdtmem.codec import as_dict, as_int, as_list
from crdtmem.errors import DecodeError
from crdtmem.files import write_atomically

logger = logging.getLogger("crdtmem.checkpoints")

_FRAME = struct.Struct(">II")
FOLDER: Final = "checkpoints"


@final
@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One snapshot: ``number`` increases with each checkpoint of a replica."""

    number: int
    label: str | None
    version: dict[str, int] = field(hash=False)
    created: float
    size: int
    checksum: int


class Readable(Protocol):
    """What a :class:`View` shows: a replica, in practice."""

    def value(self) -> dict[str, Any]: ...

    def version(self) -> dict[str, int]: ...


@final
class View:
    """A read-only replica of the past (see :meth:`Replica.at`)."""

    __slots__ = ("_past",)

    def __init__(self, past: Readable) -> None:
        self._past = past

    def value(self) -> dict[str, Any]:
        """Every field's plain value, as it was."""
        return self._past.value()

    def version(self) -> dict[str, int]:
        """The version the view shows."""
        return self._past.version()

    def __getitem__(self, name: str) -> Any:
        return self.value()[name]

    def __contains__(self, name: object) -> bool:
        return name in self.value()


def encode(checkpoint: Checkpoint, state: bytes) -> bytes:
    """A checkpoint file: ``[u32 length][u32 crc32][msgpack [number, label, version,
    created, state]]``."""
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
    number, label, version, created, state = as_list(codec.unpack_stored(body), "checkpoint", 5)
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
    # (a checkpoint written under wire format 1 holds a format-1 state message)
    return checkpoint, codec.stored(state)


@final
class CheckpointStore:
    """The kept checkpoints of one replica, oldest first: in ``folder`` when it is
    given (loaded from it on creation), else in memory."""

    __slots__ = ("_folder", "_in_memory", "_keep", "_kept")

    def __init__(self, folder: str | None, keep: int) -> None:
        if keep < 1:
            raise ValueError("keep_checkpoints must be at least 1")
        self._folder = folder
        self._keep = keep
        self._kept: list[Checkpoint] = _load_folder(folder) if folder is not None else []
        self._in_memory: dict[int, bytes] = {}

    def add(
        self, label: str | None, version: dict[str, int], created: float, state: bytes
    ) -> Checkpoint:
        """Keep ``state`` (at ``version``) as the next checkpoint and drop the oldest
        past ``keep``."""
        number = self._kept[-1].number + 1 if self._kept else 1
        made = Checkpoint(number, label, version, created, len(state), zlib.crc32(state))
        if self._folder is not None:
            _write_file(self._folder, made, state)
        else:
            self._in_memory[number] = state
        self._kept.append(made)
        while len(self._kept) > self._keep:
            dropped = self._kept.pop(0).number
            if self._folder is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(_file_name(self._folder, dropped))
            self._in_memory.pop(dropped, None)
        return made

    def checkpoints(self) -> list[Checkpoint]:
        """The kept checkpoints, oldest first."""
        return list(self._kept)

    def __len__(self) -> int:
        return len(self._kept)

    def state(self, checkpoint: Checkpoint) -> bytes:
        """The state message kept for ``checkpoint``.

        Raises:
            ValueError: it is no longer kept.
        """
        if not any(kept.number == checkpoint.number for kept in self._kept):
            raise ValueError(f"checkpoint {checkpoint.number} is no longer kept")
        if self._folder is None:
            return self._in_memory[checkpoint.number]
        path = _file_name(self._folder, checkpoint.number)
        with open(path, "rb") as handle:
            return decode(handle.read(), path)[1]

    def base_for(self, target: Mapping[str, int]) -> Checkpoint | None:
        """The newest kept checkpoint whose version ``target`` includes."""
        for kept in reversed(self._kept):
            if dominates(target, kept.version):
                return kept
        return None


def _file_name(folder: str, number: int) -> str:
    return os.path.join(folder, f"{number:010d}.ckpt")


def _write_file(folder: str, checkpoint: Checkpoint, state: bytes) -> None:
    """Write a checkpoint file atomically and read it back: a checkpoint that cannot be
    read back is an error now, not when it is needed."""
    os.makedirs(folder, exist_ok=True)
    target = _file_name(folder, checkpoint.number)
    write_atomically(target, encode(checkpoint, state))
    with open(target, "rb") as handle:
        if decode(handle.read(), target)[1] != state:
            raise OSError(f"{target}: checkpoint read back differs from what was written")


def _load_folder(folder: str) -> list[Checkpoint]:
    """The readable checkpoints in ``folder``, oldest first; damaged ones are skipped
    with a warning naming the file."""
    if not os.path.isdir(folder):
        return []
    kept: list[Checkpoint] = []
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
        kept.append(checkpoint)
    return kept
