"""The exception hierarchy: one root, with leaves that also inherit the matching builtin."""

from __future__ import annotations


class CrdtmemError(Exception):
    """Root of every error crdtmem raises on purpose."""


class DecodeError(CrdtmemError, ValueError):
    """A message or stored record is not well-formed crdtmem data.

    Raised before anything is changed: the replica that was asked to merge it is left
    exactly as it was.
    """


class TypeMismatch(CrdtmemError, TypeError):
    """A field already exists under this name with another CRDT type."""


class UnsupportedValue(CrdtmemError, TypeError):
    """A value that crdtmem cannot store exactly as given (see ``crdtmem.codec.check_value``)."""


class ValueOutOfRange(UnsupportedValue, ValueError):
    """An int outside the 64-bit range the wire format carries exactly."""


class ValueTooLarge(UnsupportedValue, ValueError):
    """A write whose update no peer would accept: a string or bytes value over the
    wire format's blob limit, a container over its length limit, or an update over its
    size limit (``crdtmem.codec``). Refused at the call, before anything changes."""


class ReplicaLeft(CrdtmemError, RuntimeError):
    """The replica left the group (``leave()``): every peer now refuses its updates, so
    it accepts no more writes. Reads still work; an agent that wants back starts a new
    replica."""


class ReplicaClosed(CrdtmemError, RuntimeError):
    """A durable replica was closed: it accepts no more writes or merges."""


class StorageError(CrdtmemError, OSError):
    """Stored state cannot be used (wrong replica, newer format, unreadable manifest or
    an invalid record)."""


class StorageLocked(StorageError):
    """The storage folder is held by another process (or another open replica).

    ``path`` is the folder, ``pid`` the holder's process id when it could be read.
    """

    def __init__(self, message: str, *, path: str, pid: int | None) -> None:
        super().__init__(message)
        self.path = path
        self.pid = pid
