"""Durable file operations shared by the log and the checkpoints: a file replaced
atomically, and a rename made durable by syncing its folder."""

from __future__ import annotations

import contextlib
import os


def write_atomically(target: str, data: bytes) -> None:
    """Replace ``target`` by ``data``: written beside it, flushed to disk, renamed over it
    and the folder synced, so a crash at any moment leaves the old file or the new one."""
    temporary = target + ".tmp"
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError:
        remove_quietly(temporary)  # (a disk full must not keep a half-written copy)
        raise
    os.replace(temporary, target)
    sync_folder(os.path.dirname(target) or ".")


def sync_folder(folder: str) -> None:
    """Make a rename (or a new file) in ``folder`` durable: without this, power loss may
    undo a rename that ``os.replace`` already reported."""
    folder_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(folder_fd)
    finally:
        os.close(folder_fd)


def remove_quietly(path: str) -> None:
    """Remove ``path`` if it exists; a failure to is ignored (it is only a leftover)."""
    with contextlib.suppress(OSError):
        os.remove(path)
