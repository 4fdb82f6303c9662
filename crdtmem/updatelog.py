"""The update log: what a replica has applied, in what order it may apply more, and
which replicas have left.

Per origin it keeps the version (how many of its updates are applied), the log of
those updates still kept for peers (packed entries, starting at ``starts[origin]``),
and a buffer of updates that arrived before what they depend on. Delivery is causal:
an update is applied once its predecessor from the same origin and all of its
dependencies are (Almeida et al., 2018, section 6). Membership: a retired origin's
updates past its bar are refused; a forgotten one is dropped from versions and logs.

The log does not touch states or disk: :meth:`UpdateLog.deliver` hands each update
that may be applied to the replica's callback, then records it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Final, final

from crdtmem import codec
from crdtmem.causality import dominates, join_vectors
from crdtmem.messages import ENTRY_OVERHEAD, LogEntry, Run, Update

# Updates waiting for a causal gap to fill. Past this many, new early arrivals are
# dropped (not applied, not counted): anti-entropy will offer them again once the gap
# is filled, so the bound costs bandwidth, never correctness.
MAX_BUFFERED_UPDATES: Final = 100_000

# Applies one update to the replica's state (and storage) before the log records it.
Apply = Callable[[Update, LogEntry], None]
# Stores update ``seq`` of an origin durably: ``Storage.append_update``.
Store = Callable[[str, int, LogEntry], None]


def check_version(version: Mapping[str, int] | None) -> Mapping[str, int]:
    """A version argument: ``None`` (nothing) or str -> int in ``[0, MAX_SEQ]``.

    Raises:
        TypeError: not a mapping of str to int.
        ValueError: a negative count, or one past ``MAX_SEQ`` (no replica makes that
            many updates; a vector holding one could not be sent or answered).
    """
    if version is None:
        return {}
    if not isinstance(version, Mapping):
        raise TypeError(f"version must be a mapping of replica id to int, got {type(version)}")
    for actor, count in version.items():
        if type(actor) is not str or type(count) is not int:
            raise TypeError(f"version entries are str -> int, got {actor!r}: {count!r}")
        if count < 0:
            raise ValueError(f"version counts are non-negative, got {actor!r}: {count}")
        if count > codec.MAX_SEQ:
            raise ValueError(f"version counts are at most {codec.MAX_SEQ}, got {actor!r}: {count}")
    return version


@final
class UpdateLog:
    """Versions, per-origin logs, the causal buffer and membership of one replica."""

    __slots__ = (
        "_buffer",
        "_local_deps",
        "buffered",
        "dropped_early",
        "forgotten",
        "logs",
        "own",
        "own_log",
        "refused_retired",
        "retired",
        "starts",
        "version",
    )

    def __init__(self, own: str) -> None:
        self.own = own
        self.version: dict[str, int] = {}
        self.logs: dict[str, list[LogEntry]] = {}
        self.own_log = self.logs.setdefault(own, [])
        # The seq of the first entry each log still holds (1 when absent).
        self.starts: dict[str, int] = {}
        self._buffer: dict[str, dict[int, Update]] = {}
        self.buffered = 0
        # This replica's dependencies for its next update, kept while they stay the same
        # (every local update in a row shares one dict: the message codec sends it once).
        self._local_deps: dict[str, int] | None = {}
        # Replicas that left the group: the last of their updates accepted, and those
        # whose entries were then dropped from version vectors and logs.
        self.retired: dict[str, int] = {}
        self.forgotten: dict[str, int] = {}
        self.dropped_early = 0
        self.refused_retired = 0

    # --- local updates ------------------------------------------------------------------

    def add_local(self, name: str, tag: int, payload: bytes, store: Store | None) -> int:
        """Record this replica's next update (``payload``, a packed delta of field
        ``name``): first ``store`` it, if given, then count and log it. Returns its seq.

        One call per write, on the hot path. The caller applies the delta once this
        returns: joining a delta just made from the state cannot fail, storing can, and
        then nothing has changed.
        """
        own = self.own
        seq = self.version.get(own, 0) + 1
        deps = self._local_deps
        if deps is None:
            deps = self._local_deps = {k: v for k, v in self.version.items() if k != own}
        entry = (deps, name, tag, payload)
        if store is not None:
            store(own, seq, entry)
        self.version[own] = seq
        self.own_log.append(entry)
        return seq

    # --- causal delivery ------------------------------------------------------------------

    def covers(self, deps: Mapping[str, int]) -> bool:
        """Whether everything in ``deps`` is applied here (a forgotten replica's entries
        count as applied up to where it was retired)."""
        if dominates(self.version, deps):
            return True
        return bool(self.forgotten) and dominates(self.state_vector(), deps)

    def deliver(self, updates: Iterable[Update], apply: Apply) -> list[Update]:
        """Apply (through ``apply``) each update whose dependencies are met, then any
        buffered ones that became deliverable; buffer the rest. Returns the applied
        updates, in order."""
        applied: list[Update] = []
        for update in updates:
            self._offer(update, apply, applied)
        self.drain(apply, applied)
        return applied

    def drain(self, apply: Apply, applied: list[Update] | None = None) -> list[Update]:
        """Apply every buffered update that became deliverable."""
        applied = [] if applied is None else applied
        progress = True
        while progress and self.buffered:
            progress = False
            for origin in list(self._buffer):
                waiting = self._buffer[origin]
                count = self.version.get(origin, 0)
                for seq in [s for s in waiting if s <= count]:
                    del waiting[seq]
                    self.buffered -= 1
                while (update := waiting.get(count + 1)) and self.covers(update.deps):
                    del waiting[count + 1]
                    self.buffered -= 1
                    self._apply(update, apply, applied)
                    count += 1
                    progress = True
                if not waiting:
                    del self._buffer[origin]
        return applied

    def _offer(self, update: Update, apply: Apply, applied: list[Update]) -> None:
        origin = update.origin
        count = self.version.get(origin, 0)
        if update.seq <= count:
            return
        if self.retired and update.seq > self.retired.get(origin, update.seq):
            self.refused_retired += 1
            return
        if origin in self.forgotten:
            return  # all of it was applied before its entry was dropped
        if update.seq == count + 1 and self.covers(update.deps):
            self._apply(update, apply, applied)
            return
        waiting = self._buffer.setdefault(origin, {})
        if update.seq in waiting:
            return
        if self.buffered >= MAX_BUFFERED_UPDATES:
            self.dropped_early += 1
            return
        waiting[update.seq] = update
        self.buffered += 1

    def _apply(self, update: Update, apply: Apply, applied: list[Update]) -> None:
        entry = (update.deps, update.name, update.tag, codec.pack_body(update.wire))
        apply(update, entry)
        self.version[update.origin] = update.seq
        self.logs.setdefault(update.origin, []).append(entry)
        self._local_deps = None
        applied.append(update)

    # --- full states ----------------------------------------------------------------------

    def advance(self, vector: Mapping[str, int]) -> None:
        """Record that a joined state brought in everything in ``vector``."""
        for origin, count in vector.items():
            if origin in self.forgotten:
                continue
            if origin in self.retired:
                # The state may hold more of it than the retirement admits; joins are
                # idempotent, so the version claims no more than that.
                count = min(count, self.retired[origin])  # noqa: PLW2901
            if count > self.version.get(origin, 0):
                # The log cannot hold updates we only have as part of a state: it now
                # starts after them, and peers behind that point get a full state.
                self.version[origin] = count
                self.logs.setdefault(origin, []).clear()
                self.starts[origin] = count + 1
        self._local_deps = None

    def state_vector(self) -> dict[str, int]:
        """The version a full state of this replica holds: forgotten replicas' updates
        are part of it too."""
        return join_vectors(self.forgotten, self.version)

    # --- reading the log ------------------------------------------------------------------

    def runs_since(
        self, have: Mapping[str, int], budget: int
    ) -> tuple[list[Run], dict[str, int]] | None:
        """The logged updates ``have`` lacks, about ``budget`` bytes of them (at least
        one), and the version they bring ``have`` up to; ``None`` when a log no longer
        reaches back far enough (a full state is needed)."""
        covered = {k: v for k, v in have.items() if v}
        runs: list[Run] = []
        size = 0
        for origin, count in self.version.items():
            first = have.get(origin, 0) + 1
            if first > count:
                continue
            start = self.starts.get(origin, 1)
            if first < start:
                return None
            entries = self.logs[origin][first - start :]
            taken = 0
            for _deps, name, _tag, payload in entries:
                cost = len(payload) + len(name) + ENTRY_OVERHEAD
                if size + cost > budget and (taken or runs):
                    break
                size += cost
                taken += 1
            if taken:
                runs.append((origin, first, entries[:taken]))
                covered[origin] = first - 1 + taken
            if size >= budget:
                break
        return runs, covered

    def runs_between(self, start: Mapping[str, int], end: Mapping[str, int]) -> list[Run]:
        """The logged updates after ``start`` up to ``end``.

        Raises:
            ValueError: some of them were trimmed from the log.
        """
        runs: list[Run] = []
        for origin, count in end.items():
            first = start.get(origin, 0) + 1
            if first > count:
                continue
            log_start = self.starts.get(origin, 1)
            if first < log_start:
                raise ValueError(
                    f"updates {first}..{log_start - 1} of {origin!r} were trimmed from the "
                    "log: travel to a checkpoint instead"
                )
            runs.append(
                (origin, first, self.logs[origin][first - log_start : count - log_start + 1])
            )
        return runs

    def __len__(self) -> int:
        """How many updates the logs keep."""
        return sum(len(entries) for entries in self.logs.values())

    def payload_bytes(self) -> int:
        """The bytes of the updates the logs keep."""
        return sum(len(e[3]) for entries in self.logs.values() for e in entries)

    # --- trimming -------------------------------------------------------------------------

    def compact(self, stable: Mapping[str, int]) -> int:
        """Drop, per origin, the entries up to ``stable[origin]``; returns how many."""
        dropped = 0
        for origin, acknowledged in stable.items():
            entries = self.logs.get(origin)
            start = self.starts.get(origin, 1)
            upto = min(acknowledged, self.version.get(origin, 0))
            if entries is None or upto < start:
                continue
            count = upto - start + 1
            del entries[:count]
            self.starts[origin] = upto + 1
            dropped += count
        return dropped

    def clear(self) -> None:
        """Drop every entry (the state was stored as a snapshot instead)."""
        for origin, count in self.version.items():
            self.logs.setdefault(origin, []).clear()
            self.starts[origin] = count + 1

    # --- membership -----------------------------------------------------------------------

    def retirement_bar(self, replica_id: str, final: int) -> int:
        """The bar retiring ``replica_id`` at ``final`` sets: it only rises, to what is
        applied or a higher bar given before, and a forgotten replica's stays."""
        bar = max(final, self.version.get(replica_id, 0), self.retired.get(replica_id, 0))
        return self.forgotten.get(replica_id, bar)

    def retire(self, replica_id: str, bar: int) -> None:
        """Accept no update of ``replica_id`` past ``bar``; drop those buffered."""
        self.retired[replica_id] = bar
        waiting = self._buffer.get(replica_id, {})
        for seq in [s for s in waiting if s > bar]:
            del waiting[seq]
            self.buffered -= 1

    def forgettable(self, replica_id: str) -> int | None:
        """The bar of ``replica_id`` if it may be forgotten now, ``None`` if it already is.

        Raises:
            ValueError: it is not retired, or updates up to its bar are missing.
        """
        bar = self.retired.get(replica_id)
        if bar is None:
            raise ValueError(f"replica {replica_id!r} is not retired")
        if replica_id in self.forgotten:
            return None
        if self.version.get(replica_id, 0) < bar:
            raise ValueError(
                f"replica {replica_id!r} is retired at {bar} but only "
                f"{self.version.get(replica_id, 0)} of its updates are applied here"
            )
        return bar

    def forget(self, replica_id: str, bar: int) -> None:
        """Drop retired ``replica_id`` from the version, the logs and the buffer."""
        self.forgotten[replica_id] = bar
        self.version.pop(replica_id, None)
        self.logs.pop(replica_id, None)
        self.starts.pop(replica_id, None)
        self.buffered -= len(self._buffer.pop(replica_id, {}))
        self._local_deps = None

    def membership(self) -> list[tuple[str, int, bool]]:
        """``(replica_id, bar, forgotten)`` of each retired replica, sorted."""
        return [(r, bar, r in self.forgotten) for r, bar in sorted(self.retired.items())]
