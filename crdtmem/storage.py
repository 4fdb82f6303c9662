"""Durable replica state: an append-only log of checksummed records in one folder.

Why a log and not SQLite: every update is already a self-contained, immutable record
(the same bytes peers receive), so appending it is the whole write path; a torn tail
after ``kill -9`` is detected by length and CRC and cut off, and recovery is a replay.

Layout of ``path/``:

- ``MANIFEST``: msgpack ``{"format": 3, "replica_id": NAME, "incarnation": TOKEN | None,
  "predecessors": [writer ids], "boot_id": str | None, "durability": str, "clean": bool}``,
  written atomically (at open, and with ``clean`` true at a clean close).
- ``LOCK``: held with ``flock`` while the folder is open; it holds the holder's pid and
  host, for the message a second opener gets (:class:`~crdtmem.errors.StorageLocked`).
- ``log``: records ``[u32 length][u32 crc32][msgpack body]`` (big-endian), bodies
  ``[1, origin, seq, [deps, field, tag, packed delta]]`` for an applied update and
  ``[2, message]`` for a joined full state, ``[3, replica_id, bar, forgotten]`` for a
  retired replica (format 2).

Formats: 1, written before lists collected deleted elements; 2 adds markers of
collected elements inside stored states and records of retired replicas, which a
format-1 reader would reject; 3 adds incarnations (the manifest names the life whose
updates the log holds, see :mod:`crdtmem.identity`), a clean-close marker and the boot
it was opened in. Records are unchanged: a format 1 or 2 log's updates are those of the
legacy life, named by the bare replica name, and stored messages of wire format 1 still
replay.

Damage: a record whose length, CRC or body does not verify costs that record only.
Opening resynchronises past it (to the next offset where a whole record verifies), keeps
every record that verifies, reports what was lost, and rewrites the log without the
damage. The replica then cannot prove it holds every update it made, so it starts a new
incarnation (:attr:`Storage.intact`). Opening an older folder migrates it in place, one step
per format (``MIGRATIONS``), each step leaving a folder the next build can open even if
interrupted; a newer folder is refused.

Durability modes: ``"process"`` (default) hands every record to the kernel with
``os.write`` before the mutator returns, so it survives the process being killed at any
moment; ``"group"`` does the same and calls ``fsync`` once per ``GROUP_COMMIT_RECORDS``
records, so power loss costs at most that many of the latest writes; ``"fsync"`` calls
``fsync`` per record, so it survives power loss. The benchmark measures each.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final, final

from crdtmem import codec
from crdtmem.codec import as_actor, as_dict, as_int, as_list
from crdtmem.errors import DecodeError, StorageError, StorageLocked
from crdtmem.files import remove_quietly, sync_folder, write_atomically
from crdtmem.identity import is_writer_id, token_of
from crdtmem.messages import LogEntry, StateMessage, Update, decode_message, decode_stored_update

logger = logging.getLogger("crdtmem.storage")

STORAGE_FORMAT: Final = 3
UPDATE_RECORD: Final = 1
STATE_RECORD: Final = 2
MEMBERSHIP_RECORD: Final = 3
DURABILITY_MODES: Final = ("process", "group", "fsync")
# Records between fsyncs in "group" mode: what power loss may cost, traded for throughput.
GROUP_COMMIT_RECORDS: Final = 64
_FRAME = struct.Struct(">II")
# Where Linux says which boot this is: a log opened in another boot after an unclean
# close may have lost a tail that was only in the page cache.
BOOT_ID_FILE: Final = "/proc/sys/kernel/random/boot_id"


def boot_id() -> str | None:
    """This boot's id, or ``None`` where the system does not say."""
    try:
        with open(BOOT_ID_FILE, encoding="ascii") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


@final
class Storage:
    """The append-only log behind a durable replica."""

    def __init__(
        self, folder: str, fd: int, durability: str, lock_fd: int = -1, boot: str | None = None
    ) -> None:
        self.folder = folder
        self.log_path = os.path.join(folder, "log")
        self.manifest_path = os.path.join(folder, "MANIFEST")
        self._fd = fd
        self._lock_fd = lock_fd
        self._durability = durability
        self._boot = boot
        self._fsync_every = {"process": 0, "group": GROUP_COMMIT_RECORDS, "fsync": 1}[durability]
        self._unsynced = 0
        self._size = os.fstat(fd).st_size
        # Where the log must be cut back to when a failed append could not cut its
        # partial record at once: done before the next append (or close).
        self._torn_at: int | None = None
        # What the last open found (see :meth:`open`).
        self.lost_bytes = 0
        self.damaged_regions = 0
        self.recovered_bytes_dropped = 0  # (the old name of lost_bytes)
        self.intact = True
        self.incarnation: str | None = None
        self.predecessors: list[str] = []
        self._records: list[list[Any]] | None = None
        self._verified_size = -1
        self._replica_id = ""
        self._started = False
        # Whether the log holds no record (a new folder, or one never written to): no
        # life wrote anything here, so any life may start.
        self.fresh = True

    @classmethod
    def open(
        cls, folder: str, replica_id: str, durability: str = "process", *, boot: str | None = None
    ) -> Storage:
        """Open the store at ``folder`` for ``replica_id``, creating the folder (and any
        missing parent folders) if needed, lock it, and verify its log.

        Afterwards :attr:`incarnation` is the stored life's token (``None``: the legacy
        bare-name life, or a new folder), :attr:`fresh` whether the log holds no record
        at all, :attr:`intact` whether the log proves it holds every update that life
        made, and :attr:`lost_bytes` / :attr:`damaged_regions` what verification cut out.
        The caller then keeps the life or starts a new one (:meth:`start_incarnation`)
        before writing.

        Raises:
            ValueError: the folder belongs to another replica id, or a bad ``durability``.
            StorageLocked: another process (or another open replica) holds the folder.
            StorageError: the manifest is corrupt, missing beside a non-empty log, or
                from a newer crdtmem.
        """
        if durability not in DURABILITY_MODES:
            raise ValueError(f"durability must be one of {DURABILITY_MODES}, got {durability!r}")
        os.makedirs(folder, exist_ok=True)
        lock_fd = _lock(folder)
        try:
            return cls._open_locked(folder, replica_id, durability, lock_fd, boot or boot_id())
        except BaseException:
            os.close(lock_fd)
            raise

    @classmethod
    def _open_locked(
        cls, folder: str, replica_id: str, durability: str, lock_fd: int, boot: str | None
    ) -> Storage:
        manifest = os.path.join(folder, "MANIFEST")
        log_path = os.path.join(folder, "log")
        meta: dict[str, Any] | None = None
        if os.path.exists(manifest):
            stored_format = _check_manifest(manifest, replica_id)
            for step in range(stored_format, STORAGE_FORMAT):
                MIGRATIONS[step](folder, replica_id)
                logger.info("%s: migrated storage format %d to %d", folder, step, step + 1)
            meta = _read_manifest(manifest)
        elif os.path.exists(log_path) and os.path.getsize(log_path) > 0:
            raise StorageError(
                f"{manifest} is missing beside a non-empty log: the folder's owner is "
                "unknown, so it is not opened (another replica must not take over its "
                "log). Restore the MANIFEST from a backup, or move the folder aside and "
                "start afresh (peers give back what they hold)"
            )
        fd = os.open(log_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        storage = cls(folder, fd, durability, lock_fd, boot)
        storage._replica_id = replica_id
        try:
            storage._verify()
            storage.fresh = not storage._records
            if meta is None:
                # (at once: a log must never exist without the manifest naming its owner)
                storage._write_manifest(clean=False)
            else:
                storage.incarnation = _token(meta)
                storage.predecessors = _predecessors(meta)
                if storage.damaged_regions:
                    storage.intact = False
                elif not meta.get("clean", True) and meta.get("durability") != "fsync":
                    # Killed, not closed: safe if the same boot (the page cache kept every
                    # write), possibly lossy after a reboot or where boot ids are unknown.
                    stored_boot = meta.get("boot_id")
                    if boot is None or stored_boot is None or stored_boot != boot:
                        storage.intact = False
                        logger.warning(
                            "%s: not closed cleanly and the machine rebooted since (or its "
                            "boot id is unknown): the log may have lost a tail",
                            folder,
                        )
        except BaseException:
            storage.close()
            raise
        return storage

    def start_incarnation(self, token: str | None, predecessor: str | None) -> None:
        """Record (durably, before any write of it) the life ``token`` whose updates the
        log holds from now on, with ``predecessor`` (the writer id of the previous life,
        if it wrote anything) added to :attr:`predecessors`; marks the folder open."""
        if predecessor is not None and predecessor not in self.predecessors:
            self.predecessors.append(predecessor)
        self.incarnation = token
        self._started = True
        self._write_manifest(clean=False)

    def _write_manifest(self, *, clean: bool) -> None:
        name = self._replica_id
        write_atomically(
            self.manifest_path,
            codec.pack(
                {
                    "format": STORAGE_FORMAT,
                    "replica_id": name,
                    "incarnation": self.incarnation,
                    "predecessors": list(self.predecessors),
                    "boot_id": self._boot,
                    "durability": self._durability,
                    "clean": clean,
                }
            ),
        )

    # --- writing -------------------------------------------------------------------------

    def _append(self, body: object) -> None:
        payload = codec.pack_body(body)
        record = _FRAME.pack(len(payload), zlib.crc32(payload)) + payload
        if self._torn_at is not None:
            os.ftruncate(self._fd, self._torn_at)
            self._torn_at = None
        size = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            written = os.write(self._fd, record)
            while written < len(record):
                # A short write (the disk filled up mid-record): the next one says why.
                more = os.write(self._fd, memoryview(record)[written:])
                if more <= 0:
                    raise OSError(
                        f"short write to {self.log_path}: {written} of {len(record)} bytes"
                    )
                written += more
            self._size = size + written
            if self._fsync_every:
                self._unsynced += 1
                if self._unsynced >= self._fsync_every:
                    os.fsync(self._fd)
                    self._unsynced = 0
        except OSError:
            # Leave no torn record behind: the next append must follow a whole one (a
            # disk full mid-record leaves part of it; cutting back frees, never takes,
            # space, and if even that fails it is retried before the next append).
            try:
                os.ftruncate(self._fd, size)
            except OSError:
                self._torn_at = size
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
        bodies: list[list[Any]] = [[STATE_RECORD, message] for message in states]
        bodies += [[MEMBERSHIP_RECORD, *record] for record in membership or ()]
        chunks = []
        for body in bodies:
            payload = codec.pack_body(body)
            chunks.append(_FRAME.pack(len(payload), zlib.crc32(payload)) + payload)
        self._replace_log(chunks, ".compacting")

    def _replace_log(self, chunks: list[bytes], suffix: str) -> None:
        """Make ``chunks`` the whole log, atomically: written beside it, flushed to disk,
        renamed over it and the folder synced, so a crash at any moment leaves the old
        log or the new one; then reopened for appending."""
        temporary = self.log_path + suffix
        try:
            with open(temporary, "wb") as handle:
                for chunk in chunks:
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError:
            remove_quietly(temporary)  # (a disk full must not keep a half-written copy)
            raise
        os.replace(temporary, self.log_path)
        self._torn_at = None
        sync_folder(self.folder)
        fd = os.open(self.log_path, os.O_RDWR | os.O_APPEND)
        os.close(self._fd)
        self._fd = fd
        self._size = os.fstat(fd).st_size

    def close(self) -> None:
        """Flush the log, mark the folder cleanly closed (when it was opened for a life:
        :meth:`start_incarnation`) and release the lock."""
        try:
            if self._fd >= 0:
                try:
                    if self._torn_at is not None:
                        os.ftruncate(self._fd, self._torn_at)
                    os.fsync(self._fd)  # (the clean mark must not outlive the records)
                    if self._started:
                        self._write_manifest(clean=True)
                finally:
                    os.close(self._fd)
                    self._fd = -1
        finally:
            # (released even when the clean mark cannot be written, e.g. on a full
            # disk: the folder then reads as killed, not closed, which is safe)
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1

    # --- reading -------------------------------------------------------------------------

    def _verify(self) -> None:
        """Read the log, keep every record that verifies, and rewrite it without the
        damage (atomically) if there was any, so it is reported once."""
        with open(self.log_path, "rb") as handle:
            data = handle.read()
        records, kept, regions = _scan(data)
        self._records = records
        self._verified_size = len(data)
        lost = len(data) - sum(end - start for start, end in kept)
        if not regions:
            return
        self.lost_bytes = self.recovered_bytes_dropped = lost
        self.damaged_regions = len(regions)
        logger.warning(
            "%s: %d damaged region(s) (%s), %d bytes lost; keeping the %d records that "
            "verify and rewriting the log without the damage",
            self.log_path,
            len(regions),
            ", ".join(f"bytes {start}-{end}" for start, end in regions),
            lost,
            len(records),
        )
        self._replace_log([data[start:end] for start, end in kept], ".repairing")
        self._verified_size = self._size

    def records(self) -> Iterator[list[Any]]:
        """Every record that verifies, in order (damage was cut out at :meth:`open`)."""
        records, self._records = self._records, None
        if records is None or self._size != self._verified_size:
            with open(self.log_path, "rb") as handle:
                records = _scan(handle.read())[0]
        yield from records

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


def _record_at(data: bytes, offset: int) -> tuple[list[Any], int] | None:
    """The record at ``offset`` and where it ends, if a whole one verifies there."""
    header = data[offset : offset + _FRAME.size]
    if len(header) < _FRAME.size:
        return None
    length, crc = _FRAME.unpack(header)
    end = offset + _FRAME.size + length
    if end > len(data):
        return None
    body = data[offset + _FRAME.size : end]
    if zlib.crc32(body) != crc:
        return None
    try:
        record = as_list(codec.unpack_body(body), "stored record")
        if not record or type(record[0]) is not int:
            return None
    except DecodeError:
        return None
    return list(record), end  # (a list already: storage decodes arrays as lists)


def _scan(data: bytes) -> tuple[list[list[Any]], list[tuple[int, int]], list[tuple[int, int]]]:
    """The records of ``data`` that verify, the byte ranges they occupy, and the damaged
    ranges between them. Past damage, every later offset is tried: a record is found
    again where its length, CRC (1 in 2**32 by chance) and body all verify."""
    records: list[list[Any]] = []
    kept: list[tuple[int, int]] = []
    damaged: list[tuple[int, int]] = []
    offset = 0
    bad_from: int | None = None
    while offset < len(data):
        found = _record_at(data, offset)
        if found is None:
            if bad_from is None:
                bad_from = offset
            offset += 1
            continue
        if bad_from is not None:
            damaged.append((bad_from, offset))
            bad_from = None
        record, end = found
        records.append(record)
        kept.append((offset, end))
        offset = end
    if bad_from is not None:
        damaged.append((bad_from, len(data)))
    return records, kept, damaged


def _lock(folder: str) -> int:
    """Take the folder's lock (held until the returned descriptor is closed; the kernel
    drops it when the process dies, so a killed holder's lock is simply taken over)."""
    path = os.path.join(folder, "LOCK")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").split()
        finally:
            os.close(fd)
        pid = holder[0] if holder else "?"
        host = holder[1] if len(holder) > 1 else "?"
        raise StorageLocked(
            f"{folder} is in use by process {pid} on {host} (it holds {path}); one "
            "process (one open Replica) per folder: close the other one, or give this "
            "replica another path",
            path=folder,
            pid=int(pid) if pid.isdigit() else None,
        ) from None
    except OSError:
        os.close(fd)
        raise
    if os.fstat(fd).st_size:
        logger.info("%s: taking over a lock file left by a process that is gone", path)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
    return fd


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
        state = decode_message(codec.stored(codec.as_bytes(record[1], "stored state")))
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


def _migrate_2_to_3(folder: str, replica_id: str) -> None:
    """Format 2 logs hold the updates of the one life there was, under the bare name:
    they stay as they are and the manifest names that legacy life (``incarnation``
    ``None``). Atomic, like every step: an interrupted migration leaves format 2."""
    write_atomically(
        os.path.join(folder, "MANIFEST"),
        codec.pack(
            {
                "format": 3,
                "replica_id": replica_id,
                "incarnation": None,
                "predecessors": [],
                "boot_id": None,
                "durability": "process",
                # (older builds left no marker: trusted as before, damage is still found)
                "clean": True,
            }
        ),
    )


# Step ``n`` turns a folder of format ``n`` into format ``n + 1``.
MIGRATIONS: Final[dict[int, Callable[[str, str], None]]] = {
    1: _migrate_1_to_2,
    2: _migrate_2_to_3,
}


def _read_manifest(manifest: str) -> dict[str, Any]:
    try:
        with open(manifest, "rb") as handle:
            return as_dict(codec.unpack_stored(handle.read()), "manifest")
    except DecodeError as exc:
        raise StorageError(f"{manifest} is corrupt (it does not decode: {exc})") from exc


def _token(meta: dict[str, Any]) -> str | None:
    token = meta.get("incarnation")
    if token is not None and (type(token) is not str or token_of("x~" + token) != token):
        raise StorageError(f"corrupt manifest: incarnation {token!r} is not a token")
    return token


def _predecessors(meta: dict[str, Any]) -> list[str]:
    found = meta.get("predecessors", [])
    if type(found) is not list or not all(type(w) is str and is_writer_id(w) for w in found):
        raise StorageError(f"corrupt manifest: predecessors {found!r}")
    return list(found)


def _check_manifest(manifest: str, replica_id: str) -> int:
    meta = _read_manifest(manifest)
    try:
        stored_format = as_int(meta.get("format"), "manifest format")
    except DecodeError as exc:
        raise StorageError(f"{manifest} is corrupt: {exc}") from exc
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
