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
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar, final

from crdtmem import codec, jsonstate, views
from crdtmem.causality import dominates
from crdtmem.checkpoints import FOLDER as CHECKPOINT_FOLDER
from crdtmem.checkpoints import Checkpoint, CheckpointStore, View
from crdtmem.codec import detach
from crdtmem.collector import HOLDS_LISTS, Collector, holds_collected, list_sizes
from crdtmem.crdt import CRDT, Writer, crdt_type
from crdtmem.errors import DecodeError, ReplicaClosed, ReplicaLeft, StorageError, TypeMismatch
from crdtmem.fields import (
    CounterField,
    GCounterField,
    ListField,
    MapField,
    MVRegisterField,
    RegisterField,
    SetField,
    TextField,
    handle_class,
)
from crdtmem.hlc import HybridLogicalClock
from crdtmem.host import Path
from crdtmem.identity import is_writer_id, name_of, new_token, writer_id
from crdtmem.messages import (
    MAX_FIELD_NAME,
    STATE,
    UPDATES,
    LogEntry,
    StateMessage,
    Update,
    decode_message,
    state_message,
    updates_message,
)
from crdtmem.ormap import ORMap, visible
from crdtmem.rga import RGA
from crdtmem.storage import StateRecord, Storage, UpdateRecord
from crdtmem.updatelog import MAX_BUFFERED_UPDATES, Unstored, UpdateLog, check_version

__all__ = [
    "MAX_BUFFERED_UPDATES",
    "MAX_FIELD_NAME",
    "SNAPSHOT_GROWTH",
    "SNAPSHOT_MIN_BYTES",
    "STATE",
    "UPDATES",
    "ChangeEvent",
    "Replica",
    "check_field_name",
    "check_replica_id",
    "updates_message",
]

logger = logging.getLogger("crdtmem.replica")

# By default a durable log is rewritten as one snapshot of the state when it grows past
# this many bytes and past SNAPSHOT_GROWTH times its size after the last snapshot: disk
# use stays within a constant factor of the state, at an amortised constant cost per
# write.
SNAPSHOT_MIN_BYTES: Final = 8 * 1024 * 1024
SNAPSHOT_GROWTH: Final = 4
# While storing remote updates keeps failing (disk full), one warning per this many
# failed merges after the first: a node receiving a flood must not flood its log too.
UNPERSISTED_LOG_EVERY: Final = 1000

T = TypeVar("T")


@final
@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One applied change: which top-level field, made by which replica, here or not.

    ``origin`` is the replica (its name, ``replica_id``, whichever of its lives wrote)
    that made the update; for a full-state merge (which carries many replicas' updates
    at once) it is the replica that sent the state.
    """

    field: str
    origin: str
    local: bool


def check_replica_id(replica_id: object) -> str:
    """A replica id: non-empty ``str`` of at most 64 characters, else ``ValueError``."""
    if type(replica_id) is not str or not 0 < len(replica_id) <= 64:
        raise ValueError(
            f"replica_id must be a non-empty str of at most 64 characters, got {replica_id!r}"
        )
    return replica_id


def check_field_name(name: object) -> str:
    """A field name: a ``str`` (else ``TypeError``) of 1 to ``MAX_FIELD_NAME``
    characters (else ``ValueError``)."""
    if type(name) is not str:
        raise TypeError(f"field names are str, got {type(name).__name__}")
    if not 0 < len(name) <= MAX_FIELD_NAME:
        raise ValueError(f"field names have 1 to {MAX_FIELD_NAME} characters")
    return name


@final
class Replica:
    """One agent's replica of the shared memory.

    A façade over small parts, all guarded by one lock (an agent thread and a gossip
    thread share a replica): the fields themselves (by name, then type tag), the
    :class:`~crdtmem.updatelog.UpdateLog` (versions, logs, causal delivery, membership),
    the :class:`~crdtmem.collector.Collector` of deleted list elements, the
    :class:`~crdtmem.checkpoints.CheckpointStore` and the durable
    :class:`~crdtmem.storage.Storage`. Bytes in and out go through
    :mod:`crdtmem.messages`.

    Each life of a replica writes under its own *writer id* (:attr:`writer_id`,
    ``NAME~TOKEN``, see :mod:`crdtmem.identity`), so that a restart or a second process
    under the same name never mints an update id twice: an in-memory replica starts a new
    life at every construction; a durable one keeps its life while its log is intact and
    starts a new one when it cannot prove it holds every update it made (a damaged log,
    or an unclean close followed by a reboot without ``durability="fsync"``).

    Args:
        replica_id: the agent's name, 1 to 64 characters, stable across restarts.
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
        rng: where incarnation tokens come from; inject a seeded ``random.Random`` in
            simulations. Defaults to ``random.SystemRandom()``.

    Raises:
        crdtmem.StorageLocked: ``path`` is held by another process or open replica.
        crdtmem.StorageError: ``path`` holds a corrupt manifest, a log without its
            manifest, or a newer storage format.
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
        rng: random.Random | None = None,
    ) -> None:
        self.replica_id: Final = check_replica_id(replica_id)
        if snapshot_bytes is not None and (type(snapshot_bytes) is not int or snapshot_bytes < 1):
            raise ValueError("snapshot_bytes must be a positive int or None")
        self._rng = rng if rng is not None else random.SystemRandom()
        self._lock = threading.RLock()
        self._clock = clock
        storage = None if path is None else Storage.open(path, self.replica_id, durability)
        try:
            self._start(storage, clock, path, keep_checkpoints, snapshot_bytes)
        except BaseException:
            if storage is not None:
                storage.close()
            raise

    def _start(
        self,
        storage: Storage | None,
        clock: Callable[[], float],
        path: str | None,
        keep_checkpoints: int,
        snapshot_bytes: int | None,
    ) -> None:
        """Choose this life's writer id, then build the parts and replay ``storage``."""
        self._predecessors: builtins.list[str] = []
        if storage is None:
            token: str | None = new_token(self._rng)
        elif storage.intact:
            # (a log with no record: no life wrote here, a new one may start)
            token = new_token(self._rng) if storage.fresh else storage.incarnation
            self._predecessors = builtins.list(storage.predecessors)
        else:
            token = new_token(self._rng)
            old = writer_id(self.replica_id, storage.incarnation)
            logger.warning(
                "%s: the log cannot prove it holds every update of %s; continuing as %s "
                "(peers give back what they hold of the old life's updates)",
                storage.folder,
                old,
                writer_id(self.replica_id, token),
            )
            storage.start_incarnation(token, old)
            self._predecessors = builtins.list(storage.predecessors)
        self._writer_id = writer_id(self.replica_id, token)
        self._writer = Writer(self._writer_id, HybridLogicalClock(clock))
        self._fields: dict[str, dict[int, CRDT]] = {}
        self._updates = UpdateLog(self._writer_id)
        self._collector = Collector()
        # Bound once: the write path calls them on every update.
        self._add_local = self._updates.add_local
        self._doom = self._collector.add_update
        self._subscribers: builtins.list[tuple[Callable[[ChangeEvent], None], str | None]] = []
        self._rejected_messages = 0
        self._false_claims = 0
        self._unpersisted = 0
        # Merges in a row whose updates could not be stored (for rate-limited logging).
        self._store_failures = 0
        folder = None if path is None else os.path.join(path, CHECKPOINT_FOLDER)
        self._checkpoints = CheckpointStore(folder, keep_checkpoints)
        self._snapshot_bytes = snapshot_bytes
        self._snapshot_at = self._next_snapshot(0)
        self._storage: Storage | None = None
        self._closed = False
        self._left = False
        self._type_clashes = 0
        self._clashed: builtins.set[str] = set()
        if storage is not None:
            self._replay(storage)
            if storage.intact:
                # (the manifest now says open: a kill from here on is an unclean close)
                storage.start_incarnation(token, None)
            self._storage = storage
            self._snapshot_at = self._next_snapshot(storage.size())
        self._lost = (0, 0) if storage is None else (storage.lost_bytes, storage.damaged_regions)

    def __repr__(self) -> str:
        return f"Replica({self.replica_id!r}, writer={self.writer_id!r}, version={self.version()})"

    # --- fields ---------------------------------------------------------------------

    def gcounter(self, name: str) -> GCounterField:
        """The grow-only counter ``name`` (created on first use)."""
        return GCounterField.declare(self, (), name)

    def counter(self, name: str) -> CounterField:
        """The PN-counter ``name``."""
        return CounterField.declare(self, (), name)

    def register(self, name: str) -> RegisterField:
        """The LWW-register ``name``."""
        return RegisterField.declare(self, (), name)

    def mvregister(self, name: str) -> MVRegisterField:
        """The multi-value register ``name``."""
        return MVRegisterField.declare(self, (), name)

    def set(self, name: str) -> SetField:
        """The add-wins OR-set ``name``."""
        return SetField.declare(self, (), name)

    def list(self, name: str) -> ListField:
        """The RGA list ``name``."""
        return ListField.declare(self, (), name)

    def map(self, name: str) -> MapField:
        """The OR-map ``name`` of nested fields."""
        return MapField.declare(self, (), name)

    def text(self, name: str) -> TextField:
        """The collaborative text ``name``."""
        return TextField.declare(self, (), name)

    # --- the field host (crdtmem.host.FieldHost): what handles call --------------------

    @property
    def writer(self) -> Writer:
        """This life's writer id and the clock its LWW timestamps come from."""
        return self._writer

    @property
    def writer_id(self) -> str:
        """The writer id of this life of the replica: what :meth:`version`, update
        origins and dots name (``NAME~TOKEN``, or the bare name for the legacy life of a
        folder from before incarnations); ``replica_id`` stays the name."""
        return self._writer_id

    def predecessors(self) -> builtins.list[str]:
        """The writer ids of this durable replica's earlier lives that it superseded
        because it could not prove its log held all their updates (oldest first; empty
        in memory). Their updates that survived, here or at peers, stay as any other
        writer's; gossip may retire them (bar 0: whatever the group holds) once it
        is safe, so they leave version vectors."""
        with self._lock:
            return builtins.list(self._predecessors)

    def declare_field(self, parent: Path, name: str, kind: type[CRDT]) -> Path:
        """Resolve a field (``TypeMismatch`` if it exists with another type); for field
        handles, which application code gets from :meth:`counter` and friends. The
        field is created by its first mutation, not here."""
        check_field_name(name)
        path = (*parent, (name, kind.TAG))
        with self._lock:
            entries = self._entries_at(parent, name)
            if entries and kind.TAG not in entries:
                other = crdt_type(min(entries)).KIND
                raise TypeMismatch(
                    f"field {'.'.join(p for p, _ in path)!r} is a {other}, not a {kind.KIND}"
                )
        # Nothing is written here: a field comes to exist at its first mutation, so an
        # agent that only reads a field it expected never gossips an empty one.
        return path

    def read_field(self, path: Path, read: Callable[[Any], T]) -> T:
        """``read(state)`` of the field at ``path`` (its empty state if it has none
        here), under the lock; for field handles."""
        with self._lock:
            state = self._state_at(path)
            if state is None:
                state = crdt_type(path[-1][1]).empty()
            return read(state)

    def update_field(self, path: Path, mutate: Callable[[Any], CRDT]) -> None:
        """Apply ``mutate(leaf_state) -> delta`` as one update of this replica; for
        field handles.

        Nothing changes until the delta exists and is stored, so a mutator that raises
        (bad value, index out of range, disk full) leaves the replica as it was.
        """
        with self._lock:
            if self._closed or self._left:
                self._check_writable()
            name, tag = path[0]
            entries = self._fields.get(name)
            top = None if entries is None else entries.get(tag)
            fresh = top is None
            if top is None:
                top = crdt_type(tag).empty()
            delta = mutate(top) if len(path) == 1 else self._nested_delta(top, path, mutate)
            # Encoded now, once: a packed entry is one bytes object, where a retained
            # delta would be a graph of containers for the garbage collector to rescan.
            payload = codec.pack_body(delta.to_wire())
            if len(payload) > codec.SMALLEST_LIMIT:
                codec.check_replicable(payload)
            if fresh and entries:
                self._note_clash(name, entries.keys() | {tag})
            storage = self._storage
            # Stored, then counted and logged: a failure to store changes nothing.
            seq = self._add_local(
                name, tag, payload, None if storage is None else storage.append_update
            )
            if fresh:
                self._fields.setdefault(name, {})[tag] = top
            top.absorb(delta)
            # Only a list, or a map's remove, can delete list elements: a write to a
            # counter or register inside a map has nothing to queue for collection.
            if path[-1][1] in HOLDS_LISTS:
                self._doom((name, tag), delta, self._writer_id, seq)
            if storage is not None and storage.size() > self._snapshot_at:
                self._snapshot_storage(storage)
            subscribed = bool(self._subscribers)
        if subscribed:
            self._dispatch([ChangeEvent(name, self.replica_id, True)])

    def _nested_delta(self, top: CRDT, path: Path, mutate: Callable[[Any], CRDT]) -> CRDT:
        """Wrap the leaf's delta in one map delta per level, each re-adding its key."""
        containers: builtins.list[ORMap] = []
        state: CRDT = top
        for key, key_tag in path[1:]:
            if not isinstance(state, ORMap):  # (paths come from declare_field: maps)
                raise TypeMismatch(f"{'.'.join(p for p, _ in path)!r} is not inside a map")
            containers.append(state)
            nested = state.field(key, key_tag)
            # `is None`, not `or`: an existing but empty list or set is falsy, and a fresh
            # one in its place would reuse element ids the real one already holds.
            state = nested if nested is not None else crdt_type(key_tag).empty()
        delta = mutate(state)
        for container, (key, _) in zip(reversed(containers), reversed(path[1:]), strict=True):
            delta = container.update_delta(self._writer, key, delta)
        return delta

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

    # --- reads ----------------------------------------------------------------------------

    def value(self) -> dict[str, Any]:
        """Every field's plain value, by name."""
        with self._lock:
            return {
                name: detach(visible(self._fields[name]).value()) for name in sorted(self._fields)
            }

    def version(self) -> dict[str, int]:
        """For each writer id, how many of its updates this replica has applied.

        Keys are writer ids: ``NAME~TOKEN`` (a replica name, ``~``, 8 lowercase hex
        digits: one life of that replica), or a bare ``NAME`` for the one life of a
        durable folder written before incarnations (storage format 2 and older)."""
        with self._lock:
            return dict(sorted(self._updates.version.items()))

    def stats(self, *, state_bytes: bool = False) -> dict[str, int]:
        """Sizes and counters for monitoring.

        Cheap by default; ``state_bytes=True`` adds the size of the encoded state, which
        costs one encoding of the whole state.

        Keys: ``fields``; ``log_entries`` and ``log_bytes`` (updates kept for peers);
        ``buffered_updates`` (waiting for their dependencies); ``list_tombstones``
        (deleted list elements still held), ``list_collected`` (collected, ever),
        ``list_marker_ids`` (ids markers keep for them) and ``awaiting_stability``
        (deletes queued until causally stable); ``storage_bytes``; ``checkpoints``;
        ``storage_lost_bytes`` and ``storage_damaged_regions`` (what the last open of a
        durable log found damaged and cut out); counters ``rejected_messages``,
        ``dropped_early_updates``, ``refused_retired_updates``, ``type_clashes`` (fields
        that replicas created with different types, each counted when a second type
        arrives). Against misbehaving peers: ``buffered_bytes`` (bytes of the buffered
        updates, bounded by ``crdtmem.updatelog.MAX_BUFFERED_BYTES``); counters
        ``refused_origins`` (updates and state entries of new writer ids refused past
        ``crdtmem.updatelog.MAX_ORIGINS``), ``false_claims`` (states refused for claiming
        more of this replica's own updates than it made, and updates of its own writer
        id that it never made, dropped), ``reapplied_updates`` (updates applied
        although the version counted them, because only a joined state claimed them;
        list updates only above what may have been collected), ``unpersisted_updates``
        (received updates, or states, not applied because they could not be stored).
        """
        with self._lock:
            updates = self._updates
            extra = {"state_bytes": len(self._state_message())} if state_bytes else {}
            return {
                "fields": len(self._fields),
                "log_entries": len(updates),
                "log_bytes": updates.payload_bytes(),
                "buffered_updates": updates.buffered,
                "buffered_bytes": updates.buffered_bytes,
                **list_sizes(self._fields),
                "awaiting_stability": len(self._collector),
                "storage_bytes": self._storage.size() if self._storage is not None else 0,
                "checkpoints": len(self._checkpoints),
                "rejected_messages": self._rejected_messages,
                "dropped_early_updates": updates.dropped_early,
                "refused_retired_updates": updates.refused_retired,
                "type_clashes": self._type_clashes,
                "refused_origins": updates.refused_origins,
                "false_claims": self._false_claims + updates.false_claims,
                "reapplied_updates": updates.reapplied,
                "unpersisted_updates": self._unpersisted,
                "storage_lost_bytes": self._lost[0],
                "storage_damaged_regions": self._lost[1],
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
        stable = check_version(stable)
        with self._lock:
            return self._updates.compact(stable)

    def collect_garbage(self, stable: Mapping[str, int]) -> int:
        """Collect the deleted list elements whose deletes are causally stable; returns
        how many were collected.

        ``stable`` must be a version such that every replica of the group has applied
        it and every update made before its origin applied it is applied here: then no
        update still to come refers to those elements. Gossip computes it
        (:meth:`crdtmem.gossip.GossipNode.causally_stable`); passing more than that can
        make a late insert unplaceable. Collection is invisible to reads and to peers.
        """
        stable = check_version(stable)
        collected = 0
        with self._lock:
            self._updates.collected_upto(stable)
            ready = self._collector.pop_stable(stable, self._updates.forgotten)
            for path, ids in ready.items():
                state = self._state_at(path)
                if isinstance(state, RGA):
                    collected += state.collect(ids)
        return collected

    def _next_snapshot(self, size_now: int) -> float:
        if self._snapshot_bytes is None:
            return float("inf")
        return max(self._snapshot_bytes, SNAPSHOT_GROWTH * size_now)

    def _snapshot_storage(self, storage: Storage) -> None:
        """Rewrite the durable log as a snapshot, after a write that already succeeded:
        a failure (disk full) is logged and retried after more growth, never raised."""
        try:
            storage.rewrite([self._state_message()], self._updates.membership())
        except OSError as exc:
            logger.warning("could not snapshot %s: %s", storage.log_path, exc)
        self._snapshot_at = self._next_snapshot(storage.size())

    def compact_storage(self) -> int:
        """Rewrite the durable log as one snapshot of the current state (atomically), so
        disk use follows the state, not the history. Returns the bytes it now takes."""
        with self._lock:
            if self._storage is None:
                return 0
            self._storage.rewrite([self._state_message()], self._updates.membership())
            self._snapshot_at = self._next_snapshot(self._storage.size())
            self._updates.clear()
            return self._storage.size()

    # --- membership -------------------------------------------------------------------

    def retire(self, replica_id: str, final: int) -> int:
        """Accept no update of writer ``replica_id`` past ``final`` (a replica life that
        left the group, or was superseded). The bar only rises: to what is already
        applied, or a higher ``final`` given before. Returns the bar in force. Durable
        replicas store it.

        ``replica_id`` is a writer id, as :meth:`version` names them (``NAME~TOKEN``);
        a bare name retires the legacy life of a folder from before incarnations only,
        not the other lives of that name.

        Gossip calls this (:meth:`crdtmem.gossip.GossipNode.retire`) and spreads it.
        """
        if type(replica_id) is not str or not is_writer_id(replica_id):
            raise ValueError(f"not a writer id: {replica_id!r}")
        if replica_id == self.writer_id:
            raise ValueError("a replica cannot retire itself")
        if type(final) is not int:
            raise TypeError(f"final is an int, got {type(final).__name__}")
        if final < 0:
            raise ValueError(f"final is non-negative, got {final}")
        with self._lock:
            self._check_open()
            bar = self._updates.retirement_bar(replica_id, final)
            if self._storage is not None and self._updates.retired.get(replica_id) != bar:
                self._storage.append_membership(replica_id, bar, False)
            self._updates.retire(replica_id, bar)
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
            bar = self._updates.forgettable(replica_id)
            if bar is None:
                return
            if self._storage is not None:
                self._storage.append_membership(replica_id, bar, True)
            self._updates.forget(replica_id, bar)

    def retired(self) -> dict[str, tuple[int, bool]]:
        """Retired replicas: the last update accepted of each, and whether its entry was
        dropped from version vectors (:meth:`forget`)."""
        with self._lock:
            return {r: (bar, gone) for r, bar, gone in self._updates.membership()}

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
        have = check_version(version)
        budget = max_bytes if max_bytes is not None else codec.MAX_MESSAGE_BYTES
        with self._lock:
            found = self._updates.runs_since(have, budget)
            if found is None:
                return self._state_message(), dict(self._updates.version)
            runs, covered = found
            return updates_message(runs), covered

    def _state_message(self) -> bytes:
        return state_message(self.replica_id, self._updates.state_vector(), self._fields)

    def merge(self, message: bytes) -> None:
        """Apply a message from any replica's :meth:`delta_since`.

        Idempotent and order-independent. A malformed message raises
        :class:`~crdtmem.DecodeError` and leaves the replica exactly as it was; so
        does a full state that claims more of this replica's own updates than it made
        (a lie: counted in ``stats()["false_claims"]``).

        Raises:
            crdtmem.StorageError: a durable replica could not store what it received
                (disk full): what was stored before is applied, the rest is not (the
                version says so, so peers send it again), and the log is left valid.
                Counted in ``stats()["unpersisted_updates"]``; the next merge tries
                again, with no operator action.
        """
        self._merge(message, trusted=False)

    def _merge(self, message: bytes, *, trusted: bool) -> None:
        """:meth:`merge`; ``trusted``: the message is this replica's own past state (a
        checkpoint), whose claims about its writer id are not checked."""
        try:
            decoded = decode_message(message)
        except DecodeError:
            with self._lock:
                self._rejected_messages += 1
            raise
        events: builtins.list[ChangeEvent] = []
        applied: builtins.list[Update] = []
        failure: OSError | None = None
        with self._lock:
            self._check_open()
            storage = self._storage
            updates = self._updates
            updates.trusting = trusted
            try:
                if isinstance(decoded, StateMessage):
                    if not trusted and updates.false_claim(decoded.vector):
                        self._false_claims += 1
                        raise DecodeError(
                            f"a state from {decoded.sender!r} claims "
                            f"{decoded.vector[self._writer_id]} updates of this replica's "
                            f"writer id {self._writer_id!r}, which made "
                            f"{updates.version.get(self._writer_id, 0)}: refused whole"
                        )
                    if updates.brings_news(decoded.vector):
                        if storage is not None:
                            try:
                                storage.append_state(bytes(message))
                            except OSError as exc:
                                raise Unstored(exc, 1) from exc
                        self._join_state(decoded, events)
                    updates.drain(self._apply, applied)
                else:
                    updates.deliver(decoded, self._apply, applied)
            except Unstored as exc:
                failure = exc.cause
                self._unpersisted += exc.unstored
                self._store_failures += 1
                if self._store_failures % UNPERSISTED_LOG_EVERY == 1:
                    logger.warning(
                        "replica %r: could not store received updates (%s); %d not applied "
                        "so far (stats()['unpersisted_updates']), peers send them again; "
                        "this is said once per %d failed merges",
                        self.replica_id,
                        exc.cause,
                        self._unpersisted,
                        UNPERSISTED_LOG_EVERY,
                    )
            else:
                if self._store_failures:
                    logger.warning(
                        "replica %r: storing received updates works again after %d failed merges",
                        self.replica_id,
                        self._store_failures,
                    )
                    self._store_failures = 0
                if storage is not None and storage.size() > self._snapshot_at:
                    self._snapshot_storage(storage)
            finally:
                updates.trusting = False
            if self._subscribers:
                events += [ChangeEvent(u.name, name_of(u.origin), False) for u in applied]
        if events:
            self._dispatch(events)
        if failure is not None:
            raise StorageError(
                f"replica {self.replica_id!r} could not store what it received: {failure}; "
                "the rest is not applied (peers send it again)"
            ) from failure

    def _apply(self, update: Update, entry: LogEntry) -> None:
        """Store and join one remote (or replayed) update; the update log records it."""
        if self._storage is not None:
            self._storage.append_update(update.origin, update.seq, entry)
        entries = self._fields.setdefault(update.name, {})
        state = entries.get(update.tag)
        if state is None:
            if entries:
                self._note_clash(update.name, entries.keys() | {update.tag})
            state = entries[update.tag] = crdt_type(update.tag).empty()
        state.absorb(update.delta)
        if update.tag in HOLDS_LISTS:
            self._doom((update.name, update.tag), update.delta, update.origin, update.seq)

    def _join_state(self, state: StateMessage, events: builtins.list[ChangeEvent]) -> None:
        if not self._updates.brings_news(state.vector):
            return
        joined: builtins.list[tuple[Path, CRDT]] = []
        collected = False
        for name, incoming in state.fields.items():
            entries = self._fields.setdefault(name, {})
            for tag, joining in incoming.items():
                if tag in HOLDS_LISTS and not collected:
                    collected = holds_collected(joining)
                current = entries.get(tag)
                if current is None:
                    if entries:
                        self._note_clash(name, entries.keys() | {tag})
                    entries[tag] = current = joining
                else:
                    current.absorb(joining)
                if tag in HOLDS_LISTS:
                    joined.append((((name, tag),), current))
            if self._subscribers:
                events.append(ChangeEvent(name, name_of(state.sender), False))
        self._updates.advance(state.vector)
        if collected:
            # (what the sender collected was stable there, so within this vector)
            self._updates.collected_upto(state.vector)
        self._collector.add_joined(dict(self._updates.version), joined)

    def _replay(self, storage: Storage) -> None:
        """Apply the stored records to this fresh replica (not storing them again: the
        storage is attached only afterwards)."""
        self._updates.trusting = True
        try:
            self._replay_records(storage)
        finally:
            self._updates.trusting = False

    def _replay_records(self, storage: Storage) -> None:
        for record in storage.replay():
            if isinstance(record, UpdateRecord):
                self._updates.deliver([record.update], self._apply)
            elif isinstance(record, StateRecord):
                self._join_state(record.state, [])
                self._updates.drain(self._apply)
            else:
                self._updates.retire(record.replica_id, record.bar)
                if record.forgotten:
                    # (after a snapshot, whose version no longer names it: no check to make)
                    self._updates.forget(record.replica_id, record.bar)

    # --- checkpoints and time travel -----------------------------------------------------

    def checkpoint(self, label: str | None = None) -> Checkpoint:
        """Snapshot the current state (checksummed; on disk and verified for a durable
        replica). Only the last ``keep_checkpoints`` are kept."""
        if label is not None and type(label) is not str:
            raise TypeError("checkpoint labels are str")
        with self._lock:
            state = self._state_message()
            version = dict(self._updates.version)
            return self._checkpoints.add(label, version, float(self._clock()), state)

    def checkpoints(self) -> builtins.list[Checkpoint]:
        """The kept checkpoints, oldest first, with their versions and times."""
        with self._lock:
            return self._checkpoints.checkpoints()

    def at(self, target: Checkpoint | Mapping[str, int]) -> View:
        """A read-only view of the past: at a checkpoint, or at a version vector (reached
        from the newest checkpoint it includes plus the logged updates after it).

        Raises:
            ValueError: the checkpoint is no longer kept; the version is not one this
                replica has passed through (it is beyond what is applied, or not causally
                closed), or the updates it needs were trimmed from the log.
        """
        with self._lock:
            if isinstance(target, Checkpoint):
                return View(self._past(self._checkpoints.state(target)))
            wanted = {k: v for k, v in check_version(target).items() if v}
            if not dominates(self._updates.version, wanted):
                raise ValueError(f"version {wanted} is beyond what this replica has applied")
            base = self._checkpoints.base_for(wanted)
            runs = self._updates.runs_between(base.version if base is not None else {}, wanted)
            state = self._checkpoints.state(base) if base is not None else None
        view = View(self._past(state, updates_message(runs)))
        if view.version() != wanted:
            raise ValueError(
                f"version {wanted} is not causally closed: it has updates "
                "without what they depend on"
            )
        return view

    def _past(self, state: bytes | None, updates: bytes | None = None) -> Replica:
        """A new in-memory replica holding ``state`` and then ``updates`` (a stored
        checkpoint's state may be in an older wire format)."""
        # (a view never writes: its writer id needs no randomness of its own)
        past = Replica(self.replica_id, clock=self._clock, rng=random.Random(0))
        if state is not None:
            past._merge(codec.stored(state), trusted=True)
        if updates is not None:
            past._merge(updates, trusted=True)
        return past

    def restore(self, checkpoint: Checkpoint) -> builtins.list[str]:
        """Bring every field's value back to what it was at ``checkpoint`` by making new
        updates (peers converge to them like to any update). Fields created since are
        emptied. Returns the fields that could not be restored exactly: grow-only
        counters that grew, and multi-value registers that held several values."""
        with self._lock:
            past = self._past(self._checkpoints.state(checkpoint))._fields
            now = {name: min(entries) for name, entries in self._fields.items()}
        # Each handle restores itself by ordinary mutations, each under the lock:
        # subscribers see them as they happen.
        skipped: builtins.list[str] = []
        for name in sorted(set(now) | set(past)):
            entries = past.get(name)
            tag = min(entries) if entries else now[name]
            handle = handle_class(tag).declare(self, (), name)
            skipped += handle.restore_to(visible(entries) if entries else None)
        return skipped

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
            subscribers = builtins.list(self._subscribers)
        for event in events:
            for callback, field in subscribers:
                if field is None or field == event.field:
                    try:
                        callback(event)
                    except Exception:
                        logger.exception("subscriber %r failed on %r", callback, event)

    # --- lifecycle --------------------------------------------------------------------

    def close(self) -> None:
        """Flush and close durable storage. A durable replica refuses writes and merges
        once closed (they could no longer be made durable); reads still work. No-op for
        an in-memory replica."""
        with self._lock:
            if self._storage is not None:
                storage, self._storage = self._storage, None
                self._closed = True
                # (closed even if flushing fails, e.g. on a full disk: the folder is
                # released, and reads as killed rather than closed, which is safe)
                storage.close()

    def _note_clash(self, name: str, tags: Iterable[int]) -> None:
        """Two replicas created field ``name`` with different types. Both states are
        kept (neither side's writes are lost); ``value()`` shows the lowest tag's, and a
        handle of the other type still reads and writes its own. Said once per field."""
        self._type_clashes += 1
        if name not in self._clashed:
            self._clashed.add(name)
            kinds = ", ".join(crdt_type(tag).KIND for tag in sorted(tags))
            logger.warning(
                "replica %r: field %r was created with different types by different "
                "replicas (%s); value() shows the %s, read the others through r.%s(%r)",
                self.replica_id,
                name,
                kinds,
                crdt_type(min(tags)).KIND,
                "/r.".join(crdt_type(tag).KIND for tag in sorted(tags)[1:]),
                name,
            )

    def mark_left(self) -> None:
        """Refuse every later write with :class:`~crdtmem.ReplicaLeft`: the group has
        retired this replica (its gossip left), so peers would refuse its updates.
        Gossip calls this when it leaves; reads and merges still work."""
        with self._lock:
            self._left = True

    def _check_writable(self) -> None:
        self._check_open()
        if self._left:
            raise ReplicaLeft(
                f"replica {self.replica_id!r} left the group: every peer refuses its "
                "updates now; an agent that wants back starts a new Replica"
            )

    def _check_open(self) -> None:
        if self._closed:
            raise ReplicaClosed(
                f"replica {self.replica_id!r} was closed: its writes could not be stored; "
                "open it again with Replica(id, path=...)"
            )

    # --- JSON and views for prompts (crdtmem.jsonstate, crdtmem.views) ---------------------

    def to_json(self, fields: Iterable[str] | None = None) -> dict[str, Any]:
        """The state (only the named ``fields``, if given) as a JSON-ready document, the
        same for the same state: sets as sorted lists, ``bytes`` as ``{"$bytes": ...}``,
        each field with its type (:mod:`crdtmem.jsonstate`)."""
        with self._lock:
            states = {name: visible(entries) for name, entries in self._fields.items()}
            return jsonstate.export_state(states, fields)

    def from_json(self, document: Mapping[str, Any]) -> builtins.list[str]:
        """Write a :meth:`to_json` document into this replica as local writes; returns
        the fields it could not set exactly (:func:`crdtmem.jsonstate.import_state`)."""
        return jsonstate.import_state(self, document)

    def view(
        self,
        fields: Sequence[str] | None = None,
        *,
        role: str | None = None,
        roles: Mapping[str, Sequence[str]] | None = None,
        budget: int = views.DEFAULT_BUDGET,
        count_tokens: Callable[[str], int] | None = None,
        score: Callable[[Any], float] | None = None,
        summarise: Callable[[str, int], str] | None = None,
        render: str = "text",
    ) -> views.PromptView:
        """The part of the state an agent should see, within ``budget`` tokens, newest
        first, rendered as prompt text or JSON (:mod:`crdtmem.views`; docs/api.md)."""
        with self._lock:
            names = views.select_fields(self._fields, fields, role, roles)
            states = {name: visible(self._fields[name]) for name in names}
            items = views.snapshot(states, names, budget if score is None else None)
        return views.project(
            items,
            budget=budget,
            count_tokens=count_tokens,
            score=score,
            summarise=summarise,
            render=render,
        )
