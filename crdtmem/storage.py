"""Durable replica state: an append-only log of checksummed records in one folder.

Why a log and not SQLite: every update is already a self-contained, immutable record
(the same bytes peers receive), so appending it is the whole write path; a torn tail
after ``kill -9`` is detected by length and CRC and cut off, and recovery is a replay.

Layout of ``path/``:

- ``MANIFEST``: msgpack ``{"format": 2, "replica_id": ...}``, written atomically.
- ``log``: records ``[u32 length][u32 crc32][msgpack body]`` (big-endian), bodies
  ``[1, origin, seq, [deps, field, tag, packed delta]]`` for an applied update and
  ``[2, message]`` for a joined full state, ``[3, replica_id, bar, forgotten]`` for a
  retired replica (format 2).

Formats: 1, written before lists collected deleted elements; 2 adds markers of
collected elements inside stored states and records of retired replicas, which a
format-1 reader would reject. Opening an older folder migrates it in place, one step
per format (``MIGRATIONS``), each step leaving a folder the next build can open even if
interrupted; a newer folder is refused.

Durability modes: ``"process"`` (default) hands every record to the kernel with
``os.write`` before the mutator returns, so it survives the process being killed at any
moment; ``"group"`` does the same and calls ``fsync`` once per ``GROUP_COMMIT_RECORDS``
records, so power loss costs at most that many of the latest writes; ``"fsync"`` calls
``fsync`` per record, so it survives power loss. The benchmark measures each.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final, final

from crdtmem import codec
from crdtmem.codec import as_actor, as_dict, as_int, as_list
from crdtmem.errors import DecodeError, StorageError
from crdtmem.files import sync_folder, write_atomically
from crdtmem.messages import LogEntry, StateMessage, Update, decode_message, decode_stored_update

logger = logging.getLogger("crdtmem.storage")

STORAGE_FORMAT: Final = 2
UPDATE_RECORD: Final = 1
STATE_RECORD: Final = 2
MEMBERSHIP_RECORD: Final = 3
DURABILITY_MODES: Final = ("process", "group", "fsync")
# Records between fsyncs in "group" mode: what power loss may cost, traded for throughput.
GROUP_COMMIT_RECORDS: Final = 64
_FRAME = struct.Struct(">II")


@final
class Storage:
    """The append-only log behind a durable replica."""

    def __init__(self, folder: str, fd: int, durability: str) -> None:
        self.folder = folder
        self.log_path = os.path.join(folder, "log")
        self._fd = fd
        self._fsync_every = {"process": 0, "group": GROUP_COMMIT_RECORDS, "fsync": 1}[durability]
        self._unsynced = 0
        self.recovered_bytes_dropped = 0
        self._size = os.fstat(fd).st_size

    @classmethod
    def open(cls, folder: str, replica_id: str, durability: str = "process") -> Storage:
        """Open the store at ``folder`` for ``replica_id``, creating the folder (and any
        missing parent folders) if needed.

        Raises:
            ValueError: the folder belongs to another replica id, or a bad ``durability``.
            StorageError: the manifest is unreadable or from a newer crdtmem.
        """
        if durability not in DURABILITY_MODES:
            raise ValueError(f"durability must be one of {DURABILITY_MODES}, got {durability!r}")
        os.makedirs(folder, exist_ok=True)
        manifest = os.path.join(folder, "MANIFEST")
        if os.path.exists(manifest):
            stored_format = _check_manifest(manifest, replica_id)
            for step in range(stored_format, STORAGE_FORMAT):
                MIGRATIONS[step](folder, replica_id)
                logger.info("%s: migrated storage format %d to %d", folder, step, step + 1)
        else:
            write_atomically(
                manifest, codec.pack({"format": STORAGE_FORMAT, "replica_id": replica_id})
            )
        fd = os.open(os.path.join(folder, "log"), os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        return cls(folder, fd, durability)

    # --- writing -------------------------------------------------------------------------

    def _append(self, body: object) -> None:
        payload = codec.pack_body(body)
        record = _FRAME.pack(len(payload), zlib.crc32(payload)) + payload
        size = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            written = os.write(self._fd, record)
            if written != len(record):
                raise OSError(f"short write to {self.log_path}: {written} of {len(record)} bytes")
            self._size = size + written
            if self._fsync_every:
                self._unsynced += 1
                if self._unsynced >= self._fsync_every:
                    os.fsync(self._fd)
                    self._unsynced = 0
        except OSError:
            # Leave no torn record behind: the next append must follow a whole one.
            os.ftruncate(self._fd, size)
            raise

    def append_update(self, origin: str, seq: int, entry: LogEntry) -> None:
        """Store one update (local or remote) before it is applied or sent."""
        deps, name, tag, payload = entry
        self._append([UPDATE_RECORD, origin, seq, [dict(sorted(deps.items())), name, tag, payload]])

    def append_state(self, message: bytes) -> None:
        """Store a full-state message before it is joined."""
        self._append([STATE_RECORD, message])

    def append_membership(self, replica_id: str, bar: int, forgotten: bool) -> None:
        """Store that ``replica_id`` was retired at ``bar`` (and forgotten)."""
        self._append([MEMBERSHIP_RECORD, replica_id, bar, forgotten])

    def size(self) -> int:
        """Bytes in the log file."""
        return self._size if self._fd >= 0 else 0

    def rewrite(
        self, states: list[bytes], membership: list[tuple[str, int, bool]] | None = None
    ) -> None:
        """Replace the log, atomically, by one state record per message in ``states``
        and the ``(replica_id, bar, forgotten)`` records of retired replicas.

        The new log is written beside the old one, flushed to disk, renamed over it and
        the folder synced, so a crash at any moment leaves the old log or the new one.
        """
        temporary = self.log_path + ".compacting"
        with open(temporary, "wb") as handle:
            bodies: list[list[Any]] = [[STATE_RECORD, message] for message in states]
            bodies += [[MEMBERSHIP_RECORD, *record] for record in membership or ()]
            for body in bodies:
                payload = codec.pack_body(body)
                handle.write(_FRAME.pack(len(payload), zlib.crc32(payload)) + payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.log_path)
        sync_folder(self.folder)
        fd = os.open(self.log_path, os.O_RDWR | os.O_APPEND)
        os.close(self._fd)
        self._fd = fd
        self._size = os.fstat(fd).st_size

    def close(self) -> None:
        if self._fd >= 0:
            if self._unsynced:
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1

    # --- reading -------------------------------------------------------------------------

    def records(self) -> Iterator[list[Any]]:
        """Every valid record; a damaged tail is cut off (and logged) on the way."""
        with open(self.log_path, "rb") as handle:
            data = handle.read()
        offset = 0
        while offset < len(data):
            header = data[offset : offset + _FRAME.size]
            if len(header) < _FRAME.size:
                break
            length, crc = _FRAME.unpack(header)
            body = data[offset + _FRAME.size : offset + _FRAME.size + length]
            if len(body) < length or zlib.crc32(body) != crc:
                break
            try:
                record = as_list(codec.unpack_body(body), "stored record")
            except DecodeError:
                break
            yield record
            offset += _FRAME.size + length
        if offset < len(data):
            self.recovered_bytes_dropped = len(data) - offset
            logger.warning(
                "%s: damaged or torn record at byte %d; keeping the %d valid bytes before it "
                "and dropping %d bytes",
                self.log_path,
                offset,
                offset,
                len(data) - offset,
            )
            os.ftruncate(self._fd, offset)
            self._size = offset

    def replay(self) -> Iterator[Record]:
        """Every stored record, decoded, in the order it was written.

        Raises:
            StorageError: a whole (checksummed) record holds invalid data.
        """
        for record in self.records():
            try:
                decoded = _decode_record(record)
            except DecodeError as exc:
                raise StorageError(f"{self.log_path}: stored record is invalid: {exc}") from exc
            yield decoded


@final
@dataclass(frozen=True, slots=True)
class UpdateRecord:
    """An update that was applied (local or remote)."""

    update: Update


@final
@dataclass(frozen=True, slots=True)
class StateRecord:
    """A full state that was joined."""

    state: StateMessage


@final
@dataclass(frozen=True, slots=True)
class MembershipRecord:
    """A replica retired at ``bar`` (and, if ``forgotten``, dropped from versions)."""

    replica_id: str
    bar: int
    forgotten: bool


Record = UpdateRecord | StateRecord | MembershipRecord


def _decode_record(record: list[Any]) -> Record:
    kind = record[0]
    if kind == UPDATE_RECORD and len(record) == 4:
        return UpdateRecord(decode_stored_update(record[1], record[2], record[3]))
    if kind == STATE_RECORD and len(record) == 2:
        state = decode_message(codec.as_bytes(record[1], "stored state"))
        if not isinstance(state, StateMessage):
            raise DecodeError("stored state record does not hold a state message")
        return StateRecord(state)
    if kind == MEMBERSHIP_RECORD and len(record) == 4:
        replica_id = as_actor(record[1], "retired replica")
        # (only ``True`` forgets: a record written by a future version may say more)
        return MembershipRecord(
            replica_id, as_int(record[2], "retired bar", lo=0), record[3] is True
        )
    raise DecodeError(f"unknown record kind {kind!r}")


def _migrate_1_to_2(folder: str, replica_id: str) -> None:
    """Format 1 records are valid format 2 records (2 only adds list markers inside
    stored states and a record kind for retired replicas), so the log and checkpoints
    stay as they are and only the manifest changes, atomically: an interrupted
    migration leaves a format 1 folder."""
    write_atomically(
        os.path.join(folder, "MANIFEST"), codec.pack({"format": 2, "replica_id": replica_id})
    )


# Step ``n`` turns a folder of format ``n`` into format ``n + 1``.
MIGRATIONS: Final[dict[int, Callable[[str, str], None]]] = {1: _migrate_1_to_2}


def _check_manifest(manifest: str, replica_id: str) -> int:
    try:
        with open(manifest, "rb") as handle:
            meta = as_dict(codec.unpack(handle.read()), "manifest")
        stored_format = as_int(meta.get("format"), "manifest format")
    except DecodeError as exc:
        raise StorageError(f"{manifest}: unreadable manifest: {exc}") from exc
    if stored_format > STORAGE_FORMAT:
        raise StorageError(
            f"{manifest}: written by a newer crdtmem (storage format {stored_format}, this "
            f"build reads up to {STORAGE_FORMAT}); upgrade crdtmem to open it"
        )
    if stored_format < 1:
        raise StorageError(f"{manifest}: unknown storage format {stored_format}")
    if meta.get("replica_id") != replica_id:
        raise ValueError(
            f"{os.path.dirname(manifest)} holds replica {meta.get('replica_id')!r}, "
            f"not {replica_id!r}"
        )
    return stored_format
