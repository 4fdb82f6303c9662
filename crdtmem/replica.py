"""The replica: named CRDT fields, causal delivery of updates, and sync without a network.

A replica is sans-IO: it never opens a socket, sleeps or starts a thread. Mutators apply
locally and record one *update* in a per-origin log; ``delta_since`` turns what a peer
lacks into bytes and ``merge`` applies bytes from any peer. Drivers (``transport``)
only move those bytes.

Each update carries its origin, a sequence number and the version vector its origin had
seen (its causal dependencies). ``merge`` applies an update only once everything it
depends on is applied, buffering it until then, so reads are causally consistent and
``version()`` never claims an update that was not applied (Almeida et al., 2018,
section 6: causal delta merging).

A two-replica loop, no network::

    >>> a, b = Replica("a"), Replica("b")
    >>> a.counter("votes").increment(); b.counter("votes").increment(2)
    >>> b.merge(a.delta_since(b.version())); a.merge(b.delta_since(a.version()))
    >>> a.value() == b.value() == {"votes": 3}
    True
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
import threading
import time
import zlib
from array import array
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar, final

from crdtmem import checkpoints as ckpt
from crdtmem import codec
from crdtmem.causality import check_vector, dominates
from crdtmem.codec import as_actor, as_int, as_list, as_str, detach
from crdtmem.crdt import CRDT, Writer, crdt_type
from crdtmem.errors import DecodeError, ReplicaClosed, TypeMismatch
from crdtmem.hlc import HybridLogicalClock
from crdtmem.ormap import ORMap, decode_fields, visible

logger = logging.getLogger("crdtmem.replica")

UPDATES: Final = 1
STATE: Final = 2

# Updates waiting for a causal gap to fill. Past this many, new early arrivals are
# dropped (not applied, not counted): anti-entropy will offer them again once the gap
# is filled, so the bound costs bandwidth, never correctness.
MAX_BUFFERED_UPDATES: Final = 100_000
# By default a durable log is rewritten as one snapshot of the state when it grows past
# this many bytes and past SNAPSHOT_GROWTH times its size after the last snapshot: disk
# use stays within a constant factor of the state, at an amortised constant cost per
# write.
SNAPSHOT_MIN_BYTES: Final = 8 * 1024 * 1024
SNAPSHOT_GROWTH: Final = 4
MAX_FIELD_NAME: Final = 256

Path = tuple[tuple[str, int], ...]
# One update in a per-origin log: (dependencies, field name, type tag, packed delta).
LogEntry = tuple[dict[str, int], str, int, bytes]
T = TypeVar("T")
Events = list["ChangeEvent"]


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One applied change: which top-level field, made by which replica, here or not.

    ``origin`` is the replica that made the update; for a full-state merge (which
    carries many replicas' updates at once) it is the replica that sent the state.
    """

    field: str
    origin: str
    local: bool


class _Interned:
    """Small numbers for list paths, so queues can hold them in integer arrays."""

    __slots__ = ("path_ids", "paths")

    def __init__(self) -> None:
        self.paths: builtins.list[Path] = []
        self.path_ids: dict[Path, int] = {}

    def path(self, path: Path) -> int:
        number = self.path_ids.get(path)
        if number is None:
            number = self.path_ids[path] = len(self.paths)
            self.paths.append(path)
        return number


class _Doomed:
    """Deleted list elements of one origin's deletes, in seq order, waiting for those to
    be stable: seqs and path numbers in integer arrays and the element ids (the list's
    own id tuples, shared) in a list, so a queue adds no object for the garbage
    collector to track (a queue of tuples cost a delete-heavy replay a tenth of its
    time in collections)."""

    __slots__ = ("ids", "paths", "seqs", "start")

    def __init__(self) -> None:
        self.seqs, self.paths = array("q"), array("q")
        self.ids: builtins.list[Any] = []
        self.start = 0

    def __len__(self) -> int:
        return len(self.seqs) - self.start

    def add(self, interned: _Interned, seq: int, path: Path, ids: builtins.list[Any]) -> None:
        number = interned.path(path)
        self.seqs.extend([seq] * len(ids))
        self.paths.extend([number] * len(ids))
        self.ids.extend(ids)

    def pop_upto(self, interned: _Interned, upto: int) -> builtins.list[tuple[Path, Any]]:
        """Remove and return the ``(path, element id)`` of deletes with seq <= ``upto``."""
        seqs, start = self.seqs, self.start
        end = start
        while end < len(seqs) and seqs[end] <= upto:
            end += 1
        paths = interned.paths
        popped = [(paths[self.paths[k]], self.ids[k]) for k in range(start, end)]
        self.start = end
        if end * 2 >= len(seqs):  # at most half is spent: copying the rest is amortised
            del self.seqs[:end], self.paths[:end], self.ids[:end]
            self.start = 0
        return popped


@dataclass(frozen=True, slots=True)
class _Update:
    origin: str
    seq: int
    deps: dict[str, int]
    name: str
    tag: int
    delta: CRDT
    wire: Any


def check_replica_id(replica_id: object) -> str:
    """A replica id: non-empty ``str`` of at most 64 characters, else ``ValueError``."""
    if type(replica_id) is not str or not 0 < len(replica_id) <= 64:
        raise ValueError(
            f"replica_id must be a non-empty str of at most 64 characters, got {replica_id!r}"
        )
    return replica_id


def check_field_name(name: object) -> str:
    if type(name) is not str:
        raise TypeError(f"field names are str, got {type(name).__name__}")
    if not 0 < len(name) <= MAX_FIELD_NAME:
        raise ValueError(f"field names have 1 to {MAX_FIELD_NAME} characters")
    return name


@final
class Replica:
    """One agent's replica of the shared memory.

    Args:
        replica_id: unique in the deployment, 1 to 64 characters, stable across restarts.
        path: folder for durable state (see ``crdtmem.storage``), created with any
            missing parent folders; ``None`` keeps it in memory.
        clock: seconds since the epoch, for LWW timestamps; inject a virtual clock in
            simulations. Defaults to ``time.time``.
        durability: with ``path``, ``"process"`` (survive ``kill -9``, the default),
            ``"group"`` (also fsync every 64 updates: power loss costs at most those) or
            ``"fsync"`` (survive power loss, at the cost of one fsync per update).
        keep_checkpoints: how many checkpoints to keep (the oldest go first).
        snapshot_bytes: with ``path``, rewrite the log as one snapshot of the state
            once it passes this many bytes and ``SNAPSHOT_GROWTH`` times its size after
            the last snapshot, so disk use follows the state; ``None``: only
            :meth:`compact_storage` does.
    """

    def __init__(
        self,
        replica_id: str,
        *,
        path: str | None = None,
        clock: Callable[[], float] = time.time,
        durability: str = "process",
        keep_checkpoints: int = 10,
        snapshot_bytes: int | None = SNAPSHOT_MIN_BYTES,
    ) -> None:
        self.replica_id: Final = check_replica_id(replica_id)
        self._lock = threading.RLock()
        self._writer = Writer(self.replica_id, HybridLogicalClock(clock))
        self._fields: dict[str, dict[int, CRDT]] = {}
        self._version: dict[str, int] = {}
        self._log: dict[str, list[LogEntry]] = {}
        self._own_log = self._log.setdefault(self.replica_id, [])
        self._log_start: dict[str, int] = {}
        self._buffer: dict[str, dict[int, _Update]] = {}
        self._buffered = 0
        self._local_deps: dict[str, int] | None = {}
        # Deleted list elements waiting to be collected: by the origin of the delete, in
        # its seq order; for joined states, (the version that must be stable, path, ids).
        self._doomed: dict[str, _Doomed] = {}
        self._interned = _Interned()
        self._doomed_joins: builtins.list[tuple[dict[str, int], Path, builtins.list[Any]]] = []
        self._subscribers: list[tuple[Callable[[ChangeEvent], None], str | None]] = []
        self._stats = {
            "rejected_messages": 0,
            "dropped_early_updates": 0,
            "refused_retired_updates": 0,
        }
        # Replicas that left the group: the last of their updates accepted, and those
        # whose entries were then dropped from version vectors and logs.
        self._retired: dict[str, int] = {}
        self._forgotten: dict[str, int] = {}
        if keep_checkpoints < 1:
            raise ValueError("keep_checkpoints must be at least 1")
        self._clock = clock
        self._keep_checkpoints = keep_checkpoints
        self._history: builtins.list[ckpt.Stored] = []
        self._checkpoint_folder: str | None = None
        self._storage: Storage | None = None
        if snapshot_bytes is not None and (type(snapshot_bytes) is not int or snapshot_bytes < 1):
            raise ValueError("snapshot_bytes must be a positive int or None")
        self._snapshot_bytes = snapshot_bytes
        self._snapshot_at = self._next_snapshot(0)
        self._closed = False
        if path is not None:
            self._checkpoint_folder = os.path.join(path, ckpt.FOLDER)
            storage = Storage.open(path, self.replica_id, durability)
            try:
                storage.restore_into(self)
            except BaseException:
                storage.close()
                raise
            self._storage = storage
            self._snapshot_at = self._next_snapshot(storage.size())
            self._history = ckpt.load_folder(self._checkpoint_folder)

    def __repr__(self) -> str:
        return f"Replica({self.replica_id!r}, version={self.version()})"

    # --- fields ---------------------------------------------------------------------

    def gcounter(self, name: str) -> GCounterField:
        """The grow-only counter ``name`` (created on first use)."""
        return GCounterField(self, self._declare((), name, GCounter))

    def counter(self, name: str) -> CounterField:
        """The PN-counter ``name``."""
        return CounterField(self, self._declare((), name, PNCounter))

    def register(self, name: str) -> RegisterField:
        """The LWW-register ``name``."""
        return RegisterField(self, self._declare((), name, LWWRegister))

    def mvregister(self, name: str) -> MVRegisterField:
        """The multi-value register ``name``."""
        return MVRegisterField(self, self._declare((), name, MVRegister))

    def set(self, name: str) -> SetField:
        """The add-wins OR-set ``name``."""
        return SetField(self, self._declare((), name, ORSet))

    def list(self, name: str) -> ListField:
        """The RGA list ``name``."""
        return ListField(self, self._declare((), name, RGA))

    def map(self, name: str) -> MapField:
        """The OR-map ``name`` of nested fields."""
        return MapField(self, self._declare((), name, ORMap))

    def text(self, name: str) -> TextField:
        """The collaborative text ``name``."""
        return TextField(self, self._declare((), name, TextCRDT))

    def _declare(self, parent: Path, name: str, kind: type[CRDT]) -> Path:
        """Resolve (and on first use, create as a replicated update) a field."""
        check_field_name(name)
        path = (*parent, (name, kind.TAG))
        with self._lock:
            entries = self._entries_at(parent, name)
            if entries is not None and kind.TAG in entries:
                return path
            if entries:
                other = crdt_type(min(entries)).KIND
                raise TypeMismatch(
                    f"field {'.'.join(p for p, _ in path)!r} is a {other}, not a {kind.KIND}"
                )
            self._local_update(path, lambda state: type(state).empty())
        return path

    def _entries_at(self, parent: Path, name: str) -> dict[int, CRDT] | None:
        if not parent:
            return self._fields.get(name)
        container = self._state_at(parent)
        if not isinstance(container, ORMap):
            return None
        return container.fields.get(name)

    def _state_at(self, path: Path) -> CRDT | None:
        (name, tag), rest = path[0], path[1:]
        state = self._fields.get(name, {}).get(tag)
        for key, key_tag in rest:
            if not isinstance(state, ORMap):
                return None
            state = state.field(key, key_tag)
        return state

    # --- local updates ----------------------------------------------------------------

    def _read(self, path: Path, read: Callable[[Any], T]) -> T:
        with self._lock:
            state = self._state_at(path)
            if state is None:
                state = crdt_type(path[-1][1]).empty()
            return read(state)

    def _local_update(self, path: Path, mutate: Callable[[Any], CRDT]) -> None:
        """Apply ``mutate(leaf_state) -> delta`` as one update of this replica.

        Nothing changes until the delta exists and is stored, so a mutator that raises
        (bad value, index out of range, disk full) leaves the replica as it was.
        """
        with self._lock:
            self._check_open()
            name, tag = path[0]
            entries = self._fields.get(name)
            top = None if entries is None else entries.get(tag)
            fresh = top is None
            if top is None:
                top = crdt_type(tag).empty()
            delta = mutate(top) if len(path) == 1 else self._nested_delta(top, path, mutate)
            origin = self.replica_id
            version = self._version
            seq = version.get(origin, 0) + 1
            deps = self._local_deps
            if deps is None:
                deps = self._local_deps = {k: v for k, v in version.items() if k != origin}
            # Encoded now, once: a packed entry is one bytes object, where a retained
            # delta would be a graph of containers for the garbage collector to rescan.
            entry = (deps, name, tag, codec.pack_body(delta.to_wire()))
            if self._storage is not None:
                self._storage.append_update(origin, seq, entry)
            if fresh:
                self._fields.setdefault(name, {})[tag] = top
            top.absorb(delta)
            version[origin] = seq
            self._own_log.append(entry)
            if tag in _HOLDS_LISTS:
                self._doom((name, tag), delta, origin, seq)
            if self._storage is not None and self._storage.size() > self._snapshot_at:
                self._snapshot_storage()
            subscribed = bool(self._subscribers)
        if subscribed:
            self._dispatch([ChangeEvent(name, origin, True)])

    def _nested_delta(self, top: CRDT, path: Path, mutate: Callable[[Any], CRDT]) -> CRDT:
        """Wrap the leaf's delta in one map delta per level, each re-adding its key."""
        containers: list[ORMap] = []
        state: CRDT = top
        for key, key_tag in path[1:]:
            assert isinstance(state, ORMap)
            containers.append(state)
            nested = state.field(key, key_tag)
            # `is None`, not `or`: an existing but empty list or set is falsy, and a fresh
            # one in its place would reuse element ids the real one already holds.
            state = nested if nested is not None else crdt_type(key_tag).empty()
        delta = mutate(state)
        for container, (key, _) in zip(reversed(containers), reversed(path[1:]), strict=True):
            delta = container.update_delta(self._writer, key, delta)
        return delta

    # --- reads ----------------------------------------------------------------------------

    def value(self) -> dict[str, Any]:
        """Every field's plain value, by name."""
        with self._lock:
            return {
                name: detach(visible(self._fields[name]).value()) for name in sorted(self._fields)
            }

    def version(self) -> dict[str, int]:
        """For each replica id, how many of its updates this replica has applied."""
        with self._lock:
            return dict(sorted(self._version.items()))

    def stats(self, *, state_bytes: bool = False) -> dict[str, int]:
        """Sizes and counters for monitoring.

        Cheap by default; ``state_bytes=True`` adds the size of the encoded state, which
        costs one encoding of the whole state.

        Keys: ``fields``; ``log_entries`` and ``log_bytes`` (updates kept for peers);
        ``buffered_updates`` (waiting for their dependencies); ``list_tombstones``
        (deleted list elements still held), ``list_collected`` (collected, ever),
        ``list_marker_ids`` (ids markers keep for them) and ``awaiting_stability``
        (deletes queued until causally stable); ``storage_bytes``; ``checkpoints``;
        counters ``rejected_messages``, ``dropped_early_updates``,
        ``refused_retired_updates``.
        """
        with self._lock:
            extra = {"state_bytes": len(self._state_message())} if state_bytes else {}
            return {
                "fields": len(self._fields),
                "log_entries": sum(len(entries) for entries in self._log.values()),
                "log_bytes": sum(len(e[3]) for entries in self._log.values() for e in entries),
                "buffered_updates": self._buffered,
                "list_tombstones": sum(_tombstones(e) for e in self._fields.values()),
                "list_marker_ids": sum(_markers(e) for e in self._fields.values()),
                "list_collected": sum(_collected(e) for e in self._fields.values()),
                "awaiting_stability": sum(map(len, self._doomed.values()))
                + sum(len(e[2]) for e in self._doomed_joins),
                "storage_bytes": self._storage.size() if self._storage is not None else 0,
                "checkpoints": len(self._history),
                **self._stats,
                **extra,
            }

    # --- compaction ---------------------------------------------------------------------

    def compact_log(self, stable: Mapping[str, int]) -> int:
        """Drop log entries that every peer is known to have: for each origin, those up
        to ``stable[origin]``. Returns how many were dropped.

        Always safe: a peer that turns out to be further behind is sent the full state
        instead of the missing updates. Gossip calls this with what all its peers have
        acknowledged.
        """
        dropped = 0
        with self._lock:
            for origin, acknowledged in _check_version_arg(stable).items():
                entries = self._log.get(origin)
                start = self._log_start.get(origin, 1)
                upto = min(acknowledged, self._version.get(origin, 0))
                if entries is None or upto < start:
                    continue
                count = upto - start + 1
                del entries[:count]
                self._log_start[origin] = upto + 1
                dropped += count
        return dropped

    def _doom(self, top: tuple[str, int], delta: CRDT, origin: str, seq: int) -> None:
        queue = self._doomed.get(origin)
        if queue is None:
            queue = self._doomed[origin] = _Doomed()
        if isinstance(delta, RGA) and not delta.index:
            # A local delta (the hot path): an insert's orphan, or a delete's pending ids.
            ids = [i for i, n in delta.orphans.items() if n.deleted] if delta.orphans else []
            if delta.pending or ids:
                queue.add(self._interned, seq, (top,), [*delta.pending, *ids])
            return
        for path, ids in _deleted_elements(delta, (top,)):
            queue.add(self._interned, seq, path, ids)

    def collect_garbage(self, stable: Mapping[str, int]) -> int:
        """Collect the deleted list elements whose deletes are causally stable; returns
        how many were collected.

        ``stable`` must be a version such that every replica of the group has applied
        it and every update made before its origin applied it is applied here: then no
        update still to come refers to those elements. Gossip computes it
        (:meth:`crdtmem.gossip.GossipNode.causally_stable`); passing more than that can
        make a late insert unplaceable. Collection is invisible to reads and to peers.
        """
        stable = _check_version_arg(stable)
        collected = 0
        with self._lock:
            ready: dict[Path, builtins.list[Any]] = {}
            for origin, queue in self._doomed.items():
                # (a forgotten replica's deletes were all stable when it was forgotten)
                upto = stable.get(origin, self._forgotten.get(origin, 0))
                for path, node_id in queue.pop_upto(self._interned, upto):
                    ready.setdefault(path, []).append(node_id)
            waiting: builtins.list[tuple[dict[str, int], Path, builtins.list[Any]]] = []
            for entry in self._doomed_joins:
                if dominates(stable, entry[0]):
                    ready.setdefault(entry[1], []).extend(entry[2])
                else:
                    waiting.append(entry)
            self._doomed_joins = waiting
            for path, ids in ready.items():
                state = self._state_at(path)
                if isinstance(state, RGA):
                    collected += state.collect(ids)
        return collected

    def _next_snapshot(self, size_now: int) -> float:
        if self._snapshot_bytes is None:
            return float("inf")
        return max(self._snapshot_bytes, SNAPSHOT_GROWTH * size_now)

    def _snapshot_storage(self) -> None:
        """Rewrite the durable log as a snapshot, after a write that already succeeded:
        a failure (disk full) is logged and retried after more growth, never raised."""
        assert self._storage is not None
        try:
            self._storage.rewrite([self._state_message()], self._membership_records())
        except OSError as exc:
            logger.warning("could not snapshot %s: %s", self._storage.log_path, exc)
        self._snapshot_at = self._next_snapshot(self._storage.size())

    def compact_storage(self) -> int:
        """Rewrite the durable log as one snapshot of the current state (atomically), so
        disk use follows the state, not the history. Returns the bytes it now takes."""
        with self._lock:
            if self._storage is None:
                return 0
            self._storage.rewrite([self._state_message()], self._membership_records())
            self._snapshot_at = self._next_snapshot(self._storage.size())
            for origin, count in self._version.items():
                self._log.setdefault(origin, []).clear()
                self._log_start[origin] = count + 1
            return self._storage.size()

    # --- membership -------------------------------------------------------------------

    def retire(self, replica_id: str, final: int) -> int:
        """Accept no update of ``replica_id`` past ``final`` (a replica that left the
        group). The bar only rises: to what is already applied, or a higher ``final``
        given before. Returns the bar in force. Durable replicas store it.

        Gossip calls this (:meth:`crdtmem.gossip.GossipNode.retire`) and spreads it.
        """
        replica_id = check_replica_id(replica_id)
        if replica_id == self.replica_id:
            raise ValueError("a replica cannot retire itself")
        if type(final) is not int:
            raise TypeError(f"final is an int, got {type(final).__name__}")
        if final < 0:
            raise ValueError(f"final is non-negative, got {final}")
        with self._lock:
            self._check_open()
            bar = max(final, self._version.get(replica_id, 0), self._retired.get(replica_id, 0))
            if self._forgotten.get(replica_id, bar) != bar:
                bar = self._forgotten[replica_id]
            if self._retired.get(replica_id) != bar:
                if self._storage is not None:
                    self._storage.append_membership(replica_id, bar, False)
                self._retired[replica_id] = bar
            waiting = self._buffer.get(replica_id, {})
            for seq in [s for s in waiting if s > bar]:
                del waiting[seq]
                self._buffered -= 1
            return bar

    def forget(self, replica_id: str) -> None:
        """Drop a retired replica's entry from the version vector, its log and its
        buffered updates, so no frame or update carries it again.

        Only once it is retired and everything up to its bar is applied here; gossip
        also waits until every member has applied it and agrees on the bar, since a
        peer that still lacked some of it could no longer get it from here.

        Raises:
            ValueError: it is not retired, or updates up to its bar are missing.
        """
        with self._lock:
            self._check_open()
            bar = self._retired.get(replica_id)
            if bar is None:
                raise ValueError(f"replica {replica_id!r} is not retired")
            if replica_id in self._forgotten:
                return
            if self._version.get(replica_id, 0) < bar:
                raise ValueError(
                    f"replica {replica_id!r} is retired at {bar} but only "
                    f"{self._version.get(replica_id, 0)} of its updates are applied here"
                )
            if self._storage is not None:
                self._storage.append_membership(replica_id, bar, True)
            self._drop(replica_id, bar)

    def _drop(self, replica_id: str, bar: int) -> None:
        self._forgotten[replica_id] = bar
        self._version.pop(replica_id, None)
        self._log.pop(replica_id, None)
        self._log_start.pop(replica_id, None)
        self._buffered -= len(self._buffer.pop(replica_id, {}))
        self._local_deps = None

    def retired(self) -> dict[str, tuple[int, bool]]:
        """Retired replicas: the last update accepted of each, and whether its entry was
        dropped from version vectors (:meth:`forget`)."""
        with self._lock:
            return {r: (bar, r in self._forgotten) for r, bar in sorted(self._retired.items())}

    def _restore_membership(self, replica_id: object, bar: object, forget: object) -> None:
        actor = as_actor(replica_id, "retired replica")
        self._retired[actor] = as_int(bar, "retired bar", lo=0)
        if forget is True:
            # (after a snapshot, whose version no longer names it: no check to make)
            self._drop(actor, self._retired[actor])

    def _membership_records(self) -> builtins.list[tuple[str, int, bool]]:
        return [(r, bar, r in self._forgotten) for r, bar in sorted(self._retired.items())]

    # --- sync -------------------------------------------------------------------------

    def delta_since(self, version: Mapping[str, int] | None = None) -> bytes:
        """One message holding every update that ``version`` does not cover.

        Costs time in proportion to what is missing: updates come from per-origin logs.
        Where a log no longer reaches back far enough, the message is the full state.
        """
        return self.delta_chunk(version)[0]

    def delta_chunk(
        self, version: Mapping[str, int] | None = None, max_bytes: int | None = None
    ) -> tuple[bytes, dict[str, int]]:
        """Like :meth:`delta_since`, but at most about ``max_bytes`` of updates (always at
        least one), and the version the message brings a peer at ``version`` up to.

        Drivers send large syncs as a series of such chunks; a receiver buffers any
        update whose dependencies are in a later chunk. A full-state message cannot be
        split (its version vector covers all of it) and comes whole.
        """
        have = _check_version_arg(version)
        budget = max_bytes if max_bytes is not None else codec.MAX_MESSAGE_BYTES
        with self._lock:
            covered = {k: v for k, v in have.items() if v}
            runs: builtins.list[tuple[str, int, builtins.list[LogEntry]]] = []
            size = 0
            for origin, count in self._version.items():
                first = have.get(origin, 0) + 1
                if first > count:
                    continue
                start = self._log_start.get(origin, 1)
                if first < start:
                    return self._state_message(), dict(self._version)
                entries = self._log[origin][first - start :]
                taken = 0
                for _deps, name, _tag, payload in entries:
                    cost = len(payload) + len(name) + _ENTRY_OVERHEAD
                    if size + cost > budget and (taken or runs):
                        break
                    size += cost
                    taken += 1
                if taken:
                    runs.append((origin, first, entries[:taken]))
                    covered[origin] = first - 1 + taken
                if size >= budget:
                    break
            return updates_message(runs), covered

    def _state_message(self) -> bytes:
        fields = [
            [name, [[tag, entries[tag].to_wire()] for tag in sorted(entries)]]
            for name, entries in sorted(self._fields.items())
        ]
        # A state holds forgotten replicas' updates too: its vector says so.
        vector = {**self._forgotten, **self._version}
        return codec.pack([STATE, self.replica_id, dict(sorted(vector.items())), fields])

    def merge(self, message: bytes) -> None:
        """Apply a message from any replica's :meth:`delta_since`.

        Idempotent and order-independent. A malformed message raises
        :class:`~crdtmem.DecodeError` and leaves the replica exactly as it was.
        """
        try:
            obj = codec.unpack(message)
            kind, *body = as_list(obj, "message")
            if kind == UPDATES and len(body) == 1:
                updates = _decode_updates(body[0])
            elif kind == STATE and len(body) == 3:
                sender, vector, states = _decode_state(body)
            else:
                raise DecodeError(f"unknown message kind {kind!r} or wrong length")
        except DecodeError:
            with self._lock:
                self._stats["rejected_messages"] += 1
            raise
        events: Events = []
        with self._lock:
            self._check_open()
            if kind == UPDATES:
                for update in updates:
                    self._offer(update, events)
            else:
                if self._storage is not None and not self._covers(vector):
                    self._storage.append_state(bytes(message))
                self._join_state(sender, vector, states, events)
            self._drain(events)
            if self._storage is not None and self._storage.size() > self._snapshot_at:
                self._snapshot_storage()
        if events:
            self._dispatch(events)

    def _covers(self, deps: Mapping[str, int]) -> bool:
        """Whether everything in ``deps`` is applied here (a forgotten replica's entries
        count as applied up to where it was retired)."""
        if dominates(self._version, deps):
            return True
        if not self._forgotten:
            return False
        version, forgotten = self._version, self._forgotten
        return all(c <= version.get(o, 0) or c <= forgotten.get(o, -1) for o, c in deps.items())

    def _offer(self, update: _Update, events: Events) -> None:
        origin = update.origin
        applied = self._version.get(origin, 0)
        if update.seq <= applied:
            return
        if self._retired and update.seq > self._retired.get(origin, update.seq):
            self._stats["refused_retired_updates"] += 1
            return
        if origin in self._forgotten:
            return  # all of it was applied before its entry was dropped
        if update.seq == applied + 1 and self._covers(update.deps):
            self._apply(update, events)
            return
        waiting = self._buffer.setdefault(update.origin, {})
        if update.seq in waiting:
            return
        if self._buffered >= MAX_BUFFERED_UPDATES:
            self._stats["dropped_early_updates"] += 1
            return
        waiting[update.seq] = update
        self._buffered += 1

    def _drain(self, events: Events) -> None:
        progress = True
        while progress and self._buffered:
            progress = False
            for origin in list(self._buffer):
                waiting = self._buffer[origin]
                applied = self._version.get(origin, 0)
                for seq in [s for s in waiting if s <= applied]:
                    del waiting[seq]
                    self._buffered -= 1
                while (update := waiting.get(applied + 1)) and self._covers(update.deps):
                    del waiting[applied + 1]
                    self._buffered -= 1
                    self._apply(update, events)
                    applied += 1
                    progress = True
                if not waiting:
                    del self._buffer[origin]

    def _apply(self, update: _Update, events: Events) -> None:
        entry = (update.deps, update.name, update.tag, codec.pack_body(update.wire))
        if self._storage is not None:
            self._storage.append_update(update.origin, update.seq, entry)
        entries = self._fields.setdefault(update.name, {})
        state = entries.get(update.tag)
        if state is None:
            state = entries[update.tag] = crdt_type(update.tag).empty()
        state.absorb(update.delta)
        self._version[update.origin] = update.seq
        if update.tag in _HOLDS_LISTS:
            self._doom((update.name, update.tag), update.delta, update.origin, update.seq)
        self._log.setdefault(update.origin, []).append(entry)
        self._local_deps = None
        if self._subscribers:
            events.append(ChangeEvent(update.name, update.origin, False))

    def _join_state(
        self,
        sender: str,
        vector: dict[str, int],
        states: dict[str, dict[int, CRDT]],
        events: Events,
    ) -> None:
        if self._covers(vector):
            return
        joined: builtins.list[tuple[tuple[str, int], CRDT]] = []
        for name, incoming in states.items():
            entries = self._fields.setdefault(name, {})
            for tag, state in incoming.items():
                current = entries.get(tag)
                if current is None:
                    entries[tag] = current = state
                else:
                    current.absorb(state)
                if tag in _HOLDS_LISTS:
                    joined.append(((name, tag), current))
            if self._subscribers:
                events.append(ChangeEvent(name, sender, False))
        for origin, count in vector.items():
            if origin in self._forgotten:
                continue
            if origin in self._retired:
                # The state may hold more of it than the retirement admits; joins are
                # idempotent, so the version claims no more than that.
                count = min(count, self._retired[origin])  # noqa: PLW2901
            if count > self._version.get(origin, 0):
                # The log cannot hold updates we only have as part of a state: it now
                # starts after them, and peers behind that point get a full state.
                self._version[origin] = count
                self._log.setdefault(origin, []).clear()
                self._log_start[origin] = count + 1
        self._local_deps = None
        # A list's deletes, once joined with a state, may be any of the updates either
        # side had: they are stable once all of those are.
        merged = dict(self._version)
        for top, state in joined:
            for path, ids in _deleted_elements(state, (top,)):
                self._doomed_joins.append((merged, path, ids))

    # --- restore (durable replicas) ----------------------------------------------------

    def _restore_update(self, origin: object, seq: object, entry: builtins.list[Any]) -> None:
        deps, name, tag, payload = entry
        wire = codec.unpack_body(codec.as_bytes(payload, "stored update"))
        for update in _decode_updates([[origin, seq, [[deps, name, tag, wire]]]]):
            self._offer(update, [])
        self._drain([])

    def _restore_state(self, message: object) -> None:
        kind, *body = as_list(codec.unpack(codec.as_bytes(message, "stored state")), "state")
        if kind != STATE or len(body) != 3:
            raise DecodeError("stored state record does not hold a state message")
        sender, vector, states = _decode_state(body)
        self._join_state(sender, vector, states, [])
        self._drain([])

    # --- checkpoints and time travel -----------------------------------------------------

    def checkpoint(self, label: str | None = None) -> ckpt.Checkpoint:
        """Snapshot the current state (checksummed; on disk and verified for a durable
        replica). Only the last ``keep_checkpoints`` are kept."""
        if label is not None and type(label) is not str:
            raise TypeError("checkpoint labels are str")
        with self._lock:
            state = self._state_message()
            number = self._history[-1].checkpoint.number + 1 if self._history else 1
            made = ckpt.Checkpoint(
                number,
                label,
                dict(self._version),
                float(self._clock()),
                len(state),
                zlib.crc32(state),
            )
            folder = self._checkpoint_folder
            if folder is not None:
                ckpt.write_file(folder, made, state)
            self._history.append(ckpt.Stored(made, None if folder else state))
            while len(self._history) > self._keep_checkpoints:
                dropped = self._history.pop(0)
                if folder is not None:
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(os.path.join(folder, f"{dropped.checkpoint.number:010d}.ckpt"))
            return made

    def checkpoints(self) -> builtins.list[ckpt.Checkpoint]:
        """The kept checkpoints, oldest first, with their versions and times."""
        with self._lock:
            return [stored.checkpoint for stored in self._history]

    def at(self, target: ckpt.Checkpoint | Mapping[str, int]) -> ckpt.View:
        """A read-only view of the past: at a checkpoint, or at a version vector (reached
        from the newest checkpoint it includes plus the logged updates after it).

        Raises:
            ValueError: the checkpoint is no longer kept; the version is not one this
                replica has passed through (it is beyond what is applied, or not causally
                closed), or the updates it needs were trimmed from the log.
        """
        with self._lock:
            if isinstance(target, ckpt.Checkpoint):
                stored = next(
                    (s for s in self._history if s.checkpoint.number == target.number), None
                )
                if stored is None:
                    raise ValueError(f"checkpoint {target.number} is no longer kept")
                return self._view(ckpt.read_state(self._checkpoint_folder, stored), {})
            wanted = {k: v for k, v in _check_version_arg(target).items() if v}
            if not dominates(self._version, wanted):
                raise ValueError(f"version {wanted} is beyond what this replica has applied")
            base = ckpt.base_for(self._history, wanted)
            start = base.checkpoint.version if base is not None else {}
            runs: builtins.list[tuple[str, int, builtins.list[LogEntry]]] = []
            for origin, count in wanted.items():
                first = start.get(origin, 0) + 1
                if first > count:
                    continue
                log_start = self._log_start.get(origin, 1)
                if first < log_start:
                    raise ValueError(
                        f"updates {first}..{log_start - 1} of {origin!r} were trimmed from the "
                        "log: travel to a checkpoint instead"
                    )
                runs.append(
                    (origin, first, self._log[origin][first - log_start : count - log_start + 1])
                )
            state = ckpt.read_state(self._checkpoint_folder, base) if base else None
        view = self._view(state, wanted, updates_message(runs))
        if view.version() != wanted:
            raise ValueError(
                f"version {wanted} is not causally closed: it has updates "
                "without what they depend on"
            )
        return view

    def _view(
        self, state: bytes | None, wanted: Mapping[str, int], updates: bytes | None = None
    ) -> ckpt.View:
        past = Replica(self.replica_id, clock=self._clock)
        if state is not None:
            past.merge(state)
        if updates is not None:
            past.merge(updates)
        return ckpt.View(past)

    def restore(self, checkpoint: ckpt.Checkpoint) -> builtins.list[str]:
        """Bring every field's value back to what it was at ``checkpoint`` by making new
        updates (peers converge to them like to any update). Fields created since are
        emptied. Returns the fields that could not be restored exactly: grow-only
        counters that grew, and multi-value registers that held several values."""
        view = self.at(checkpoint)
        # Ordinary mutations, each under the lock: subscribers see them as they happen.
        return ckpt.restore_fields(self, view._replica._fields)

    def _fields_snapshot(self) -> dict[str, dict[int, CRDT]]:
        with self._lock:
            return {name: dict(entries) for name, entries in self._fields.items()}

    # --- subscriptions ----------------------------------------------------------------

    def subscribe(
        self, callback: Callable[[ChangeEvent], None], field: str | None = None
    ) -> Callable[[], None]:
        """Call ``callback(event)`` after each change (of ``field`` only, when given).

        Callbacks run in the thread that made the change (an agent thread for local
        changes, the gossip thread for remote ones), after the replica's lock is released,
        so they may read or write the replica. A callback that raises is logged and the
        others still run. Returns a function that unsubscribes.
        """
        if not callable(callback):
            raise TypeError("callback must be callable")
        subscription = (callback, field)
        with self._lock:
            self._subscribers.append(subscription)

        def unsubscribe() -> None:
            with self._lock:
                if subscription in self._subscribers:
                    self._subscribers.remove(subscription)

        return unsubscribe

    def _dispatch(self, events: Iterable[ChangeEvent]) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for event in events:
            for callback, field in subscribers:
                if field is None or field == event.field:
                    try:
                        callback(event)
                    except Exception:
                        logger.exception("subscriber %r failed on %r", callback, event)

    def close(self) -> None:
        """Flush and close durable storage. A durable replica refuses writes and merges
        once closed (they could no longer be made durable); reads still work. No-op for
        an in-memory replica."""
        with self._lock:
            if self._storage is not None:
                self._storage.close()
                self._storage = None
                self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise ReplicaClosed(
                f"replica {self.replica_id!r} was closed: its writes could not be stored; "
                "open it again with Replica(id, path=...)"
            )


# --- message encoding -----------------------------------------------------------------


def _deleted_elements(delta: CRDT, path: Path) -> Iterable[tuple[Path, builtins.list[Any]]]:
    """The list elements a delta deletes, by the path of their list."""
    if isinstance(delta, RGA):
        ids = delta.deleted_ids()
        if ids:
            yield path, ids
    elif isinstance(delta, ORMap):
        for key, by_tag in delta.fields.items():
            for tag, nested in by_tag.items():
                if tag in _HOLDS_LISTS:
                    yield from _deleted_elements(nested, (*path, (key, tag)))


def _tombstones(entries: dict[int, CRDT]) -> int:
    return _sum_lists(entries, RGA.tombstones)


def _markers(entries: dict[int, CRDT]) -> int:
    return _sum_lists(entries, RGA.marker_ids)


def _collected(entries: dict[int, CRDT]) -> int:
    return _sum_lists(entries, lambda state: state.collected)


def _sum_lists(entries: dict[int, CRDT], measure: Callable[[RGA], int]) -> int:
    total = 0
    for state in entries.values():
        if isinstance(state, RGA):
            total += measure(state)
        elif isinstance(state, ORMap):
            total += sum(_sum_lists(nested, measure) for nested in state.fields.values())
    return total


def _array_header(length: int) -> bytes:
    if length < 16:
        return bytes([0x90 | length])
    if length < 1 << 16:
        return b"\xdc" + length.to_bytes(2, "big")
    return b"\xdd" + length.to_bytes(4, "big")


_ENTRY_HEADER: Final = _array_header(4)
# Bytes an entry costs besides its payload and name: headers, tag, a dependency vector.
_ENTRY_OVERHEAD: Final = 48


def updates_message(runs: list[tuple[str, int, list[LogEntry]]]) -> bytes:
    """``[UPDATES, [[origin, first_seq, [[deps | nil, name, tag, payload], ...]], ...]]``.

    Spliced together from the log's pre-packed payloads rather than re-packed: msgpack
    concatenates, so an array header followed by its packed items is the packed array.
    Dependencies are sent once per run while they stay the same (nil after the first).
    """
    pack = codec.pack_body
    parts = [codec.HEADER, _array_header(2), pack(UPDATES), _array_header(len(runs))]
    for origin, first, entries in runs:
        parts += [_array_header(3), pack(origin), pack(first), _array_header(len(entries))]
        previous: dict[str, int] | None = None
        for deps, name, tag, payload in entries:
            same = previous is not None and (deps is previous or deps == previous)
            parts += [
                _ENTRY_HEADER,
                pack(None if same else dict(sorted(deps.items()))),
                pack(name),
                pack(tag),
                payload,
            ]
            previous = deps
    return b"".join(parts)


def _check_version_arg(version: Mapping[str, int] | None) -> Mapping[str, int]:
    if version is None:
        return {}
    if not isinstance(version, Mapping):
        raise TypeError(f"version must be a mapping of replica id to int, got {type(version)}")
    for actor, count in version.items():
        if type(actor) is not str or type(count) is not int:
            raise TypeError(f"version entries are str -> int, got {actor!r}: {count!r}")
        if count < 0:
            raise ValueError(f"version counts are non-negative, got {actor!r}: {count}")
    return version


def _decode_updates(obj: object) -> list[_Update]:
    updates: list[_Update] = []
    for run in as_list(obj, "updates"):
        origin_obj, first_obj, entries_obj = as_list(run, "update run", 3)
        origin = as_actor(origin_obj, "update origin")
        seq = as_int(first_obj, "first sequence number", lo=1)
        deps: dict[str, int] | None = None
        for entry in as_list(entries_obj, "update entries"):
            deps_obj, name_obj, tag_obj, payload = as_list(entry, "update", 4)
            if deps_obj is not None:
                deps = check_vector(deps_obj, "update dependencies")
                if origin in deps:
                    raise DecodeError("update dependencies name the update's own origin")
            elif deps is None:
                raise DecodeError("the first update of a run must carry its dependencies")
            name = as_str(name_obj, "field name")
            if not 0 < len(name) <= MAX_FIELD_NAME:
                raise DecodeError(f"field name must have 1 to {MAX_FIELD_NAME} characters")
            kind = crdt_type(as_int(tag_obj, "type tag"))
            delta = kind.from_wire(payload)
            updates.append(_Update(origin, seq, deps, name, kind.TAG, delta, payload))
            seq += 1
    return updates


def _decode_state(body: list[Any]) -> tuple[str, dict[str, int], dict[str, dict[int, CRDT]]]:
    sender_obj, vector_obj, fields_obj = body
    sender = as_actor(sender_obj, "state sender")
    vector = check_vector(vector_obj, "state version")
    return sender, vector, decode_fields(fields_obj, "state field")


from crdtmem.fields import (  # noqa: E402  (the handles refer back to Replica)
    CounterField,
    GCounterField,
    ListField,
    MapField,
    MVRegisterField,
    RegisterField,
    SetField,
    TextField,
)
from crdtmem.gcounter import GCounter  # noqa: E402
from crdtmem.lwwregister import LWWRegister  # noqa: E402
from crdtmem.mvregister import MVRegister  # noqa: E402
from crdtmem.orset import ORSet  # noqa: E402
from crdtmem.pncounter import PNCounter  # noqa: E402
from crdtmem.rga import RGA  # noqa: E402
from crdtmem.storage import Storage  # noqa: E402
from crdtmem.text import TextCRDT  # noqa: E402

_HOLDS_LISTS: Final = frozenset({RGA.TAG, ORMap.TAG})
