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

import heapq
from collections.abc import Callable, Iterable, Mapping
from typing import Final, final

from crdtmem import codec
from crdtmem.causality import join_vectors
from crdtmem.collector import holds_list
from crdtmem.errors import DecodeError
from crdtmem.messages import ENTRY_OVERHEAD, LogEntry, Run, Update, decode_stored_update

# Updates waiting for a causal gap to fill. Past this many, new early arrivals are
# dropped (not applied, counted in ``dropped_early``): anti-entropy will offer them again
# once the gap is filled, so the bound costs bandwidth, never correctness.
MAX_BUFFERED_UPDATES: Final = 100_000
# Bytes of early updates held, each counted as a sender's chunk budget counts it (packed
# payload + field name + ENTRY_OVERHEAD; the buffer keeps only those packed bytes). An
# honest sync makes a receiver buffer at most about one flush of one peer whose
# dependencies are in a later chunk: gossip sends up to 16 chunks of 1 MiB per flush
# (MAX_CHUNKS_PER_FLUSH x DEFAULT_CHUNK_BYTES), so 64 MiB lets four peers catch a node
# up at once, and is all that never-deliverable updates can ever hold.
MAX_BUFFERED_BYTES: Final = 64 * 1024 * 1024
# One origin's early updates: a whole flush of one peer may be one origin's run, so a
# quarter of the total; no origin (made up or not) takes more. An origin with nothing
# buffered may always hold one update (of at most codec.MAX_UPDATE_BYTES) if the total
# allows it, so a single large early update is not refused for being large.
MAX_BUFFERED_BYTES_PER_ORIGIN: Final = 16 * 1024 * 1024
# Origins (writer ids) admitted to the version vector. Every digest and full state
# carries the whole vector, so made-up origins would cost every node bandwidth and time
# for good (20,000 of them: idle gossip 2.6 MB/s). Past the bound, updates and state
# entries of new origins are refused (counted in ``refused_origins``) until retiring and
# forgetting some frees room; this replica's own writer id is always admitted, and
# admitted origins are never affected. 4096 writer ids: far more agents (and lives of
# them) than one group of gossiping replicas is built for, at about 300 KB a digest.
MAX_ORIGINS: Final = 4096
# Stale entries tolerated in the index of blocked updates before it is rebuilt (plus
# one per live entry): rebuilding costs one pass over the blocked updates, amortised.
_STALE_SLACK: Final = 1024

# Applies one update to the replica's state (and storage) before the log records it.
Apply = Callable[[Update, LogEntry], None]
# Stores update ``seq`` of an origin durably: ``Storage.append_update``.
Store = Callable[[str, int, LogEntry], None]


class Unstored(OSError):
    """Applying (storing) an update failed with ``cause``: it and the ``unstored`` - 1
    updates offered after it were not applied; everything before them was, and the log
    records exactly that."""

    def __init__(self, cause: OSError, unstored: int) -> None:
        super().__init__(cause.errno, str(cause))
        self.cause = cause
        self.unstored = unstored


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
        "_blocked",
        "_buffer",
        "_changed",
        "_local_deps",
        "_origin_bytes",
        "_overtaken",
        "_stale",
        "_waits",
        "buffered",
        "buffered_bytes",
        "dropped_early",
        "false_claims",
        "forgotten",
        "list_floor",
        "logs",
        "own",
        "own_log",
        "reapplied",
        "refused_origins",
        "refused_retired",
        "retired",
        "starts",
        "trusting",
        "unverified",
        "version",
    )

    def __init__(self, own: str) -> None:
        self.own = own
        self.version: dict[str, int] = {}
        self.logs: dict[str, list[LogEntry]] = {}
        self.own_log = self.logs.setdefault(own, [])
        # The seq of the first entry each log still holds (1 when absent).
        self.starts: dict[str, int] = {}
        # Early updates by origin and seq, kept packed (a log entry, and its size): the
        # bytes bound then is what they hold, and they are decoded again when delivered.
        self._buffer: dict[str, dict[int, tuple[LogEntry, int]]] = {}
        self._origin_bytes: dict[str, int] = {}
        self.buffered = 0
        self.buffered_bytes = 0
        # The head of an origin's buffer (the update right after its version) that waits
        # for a dependency: origin -> (dependency origin, count needed); and per
        # dependency origin a heap of (count needed, waiting origin), so that applying
        # an update wakes only what waited for it. Heap entries whose ``_waits`` entry
        # changed since are stale and skipped (``_stale`` counts them).
        self._waits: dict[str, tuple[str, int]] = {}
        self._blocked: dict[str, list[tuple[int, str]]] = {}
        self._stale = 0
        # Origins whose version (or forgotten bar) rose since the last drain (an
        # insertion-ordered set), and buffered updates a joined state overtook.
        self._changed: dict[str, None] = {}
        self._overtaken: list[tuple[str, int, LogEntry]] = []
        # This replica's dependencies for its next update, kept while they stay the same
        # (every local update in a row shares one dict: the message codec sends it once).
        self._local_deps: dict[str, int] | None = {}
        # Per origin, the seqs ``(lo, hi]`` the version counts only because a joined
        # state claimed them: updates arriving in that range are applied again, not
        # dropped as duplicates, since the claim may have been a lie (joins are
        # idempotent, so an honest claim costs a re-application only). One interval
        # per origin (the hull of every such range), shrinking from either end as
        # those updates arrive. Updates holding list content are applied again only
        # past ``list_floor``: the highest seq, per origin, at or below which list
        # elements may have been collected (``collector.holds_list``), since applying
        # an insert again would bring a collected element back. Collection here at a
        # causally stable version raises it to that version (an element inserted by
        # update seq of an origin is collected only once its delete is stable, which
        # needs stable[origin] >= seq); joining a state that holds collected elements
        # raises it to that state's version (its sender's stable version was below).
        self.unverified: dict[str, tuple[int, int]] = {}
        self.list_floor: dict[str, int] = {}
        # Replicas that left the group: the last of their updates accepted, and those
        # whose entries were then dropped from version vectors and logs.
        self.retired: dict[str, int] = {}
        self.forgotten: dict[str, int] = {}
        self.dropped_early = 0
        self.refused_retired = 0
        self.refused_origins = 0
        self.reapplied = 0
        self.false_claims = 0  # updates of this replica's own writer id it never made
        # While replaying its own storage (or building a view of its past), updates of
        # this replica's own writer id come from itself and are taken.
        self.trusting = False

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
        if self._blocked.get(own):
            self._changed[own] = None
        return seq

    # --- admission ------------------------------------------------------------------------

    def _room(self) -> bool:
        """Whether a new origin may enter the version vector (see ``MAX_ORIGINS``)."""
        return len(self.version) < MAX_ORIGINS

    def _admitted(self, origin: str, count: int) -> None:
        """``origin`` enters the version vector. If that fills the table, updates that
        wait for origins not admitted will never get them here: they wait no more."""
        self.version[origin] = count
        if len(self.version) < MAX_ORIGINS:
            return
        for actor in [a for a in self._blocked if a not in self.version]:
            if actor in self.forgotten:
                continue
            for needed, waiter in self._blocked.pop(actor):
                if self._waits.get(waiter) == (actor, needed):
                    del self._waits[waiter]
                    self._changed[waiter] = None
                else:
                    self._stale -= 1

    def _missing(self, deps: Mapping[str, int]) -> tuple[str, int] | None:
        """A dependency not applied here yet, or ``None`` when all are. A forgotten
        replica's updates count as applied up to its bar; those of an origin this
        replica refuses (``MAX_ORIGINS`` reached) will never be applied here, so they
        do not hold anything back."""
        version = self.version
        for actor, count in deps.items():
            have = version.get(actor)
            if have is None:
                have = self.forgotten.get(actor)
                if have is None:
                    if count and self._room():
                        return actor, count
                    continue
            if have < count:
                return actor, count
        return None

    def covers(self, deps: Mapping[str, int]) -> bool:
        """Whether everything in ``deps`` is applied here (a forgotten replica's entries
        count as applied up to where it was retired, a refused origin's as never to
        come)."""
        return self._missing(deps) is None

    # --- causal delivery ------------------------------------------------------------------

    def deliver(
        self, updates: Iterable[Update], apply: Apply, applied: list[Update] | None = None
    ) -> list[Update]:
        """Apply (through ``apply``) each update whose dependencies are met, then any
        buffered ones that became deliverable; buffer the rest. Returns the applied
        updates, in order (``applied``, when given, is appended to).

        Raises:
            Unstored: ``apply`` raised ``OSError`` (storage failed): delivery stopped
                at that update; the ones before it are applied and recorded.
        """
        applied = [] if applied is None else applied
        updates = list(updates)
        for index, update in enumerate(updates):
            try:
                self._offer(update, apply, applied)
            except OSError as exc:
                raise Unstored(exc, len(updates) - index) from exc
        self.drain(apply, applied)
        return applied

    def drain(self, apply: Apply, applied: list[Update] | None = None) -> list[Update]:
        """Apply every buffered update that became deliverable.

        Costs time in proportion to what changed: only buffers of origins whose
        version rose, and heads that waited for one of those, are looked at.

        Raises:
            Unstored: ``apply`` raised ``OSError``; the update stays buffered, to be
                tried at a later drain.
        """
        applied = [] if applied is None else applied
        try:
            while self._overtaken:
                origin, seq, entry = self._overtaken[-1]
                update = self._decode(origin, seq, entry)
                if update is not None and self._reapplies(update):
                    self._reapply(update, entry, apply, applied)  # (kept if this fails)
                self._overtaken.pop()
            changed = self._changed
            while changed:
                origin = next(iter(changed))
                self._try_head(origin, apply, applied)
                del changed[origin]  # (after: a failure leaves it to retry)
                heap = self._blocked.get(origin)
                if heap is None:
                    continue
                have = self.version.get(origin, self.forgotten.get(origin, 0))
                while heap and heap[0][0] <= have:
                    count, waiter = heap[0]
                    if self._waits.get(waiter) == (origin, count):
                        del self._waits[waiter]
                        heapq.heappop(heap)
                        changed[waiter] = None  # its head is tried in turn
                    else:
                        heapq.heappop(heap)
                        self._stale -= 1
                if not heap:
                    del self._blocked[origin]
        except OSError as exc:
            raise Unstored(exc, 1) from exc
        return applied

    def _try_head(self, origin: str, apply: Apply, applied: list[Update]) -> None:
        """Apply the buffered updates of ``origin`` that follow its version, while their
        dependencies are met; index the first one that waits by what it waits for."""
        waiting = self._buffer.get(origin)
        while waiting:
            seq = self.version.get(origin, 0) + 1
            item = waiting.get(seq)
            if item is None:
                return
            entry = item[0]
            missing = self._missing(entry[0])
            if missing is not None:
                self._block(origin, *missing)
                return
            if origin not in self.version and not self._room():
                self.refused_origins += len(waiting)
                self._drop_buffer(origin)
                return
            self._unbuffer(origin, seq)
            update = self._decode(origin, seq, entry)
            if update is None:
                continue
            try:
                self._record(update, entry, apply, applied)
            except OSError:
                self._keep(origin, seq, entry, item[1])  # (tried again at a later drain)
                raise
            waiting = self._buffer.get(origin)

    def _decode(self, origin: str, seq: int, entry: LogEntry) -> Update | None:
        """A buffered (packed) update, decoded again: it decoded when it arrived."""
        deps, name, tag, payload = entry
        try:
            return decode_stored_update(origin, seq, [deps, name, tag, payload])
        except DecodeError:
            return None

    def _offer(self, update: Update, apply: Apply, applied: list[Update]) -> None:
        origin = update.origin
        seq = update.seq
        count = self.version.get(origin, 0)
        if seq <= count:
            if self._reapplies(update):
                self._reapply(update, None, apply, applied)
            return
        if self.retired and seq > self.retired.get(origin, seq):
            self.refused_retired += 1
            return
        if origin == self.own and not self.trusting:
            # This replica makes all of its updates: one it has not made is forged.
            self.false_claims += 1
            return
        if not count and origin not in self.version:
            if origin in self.forgotten:
                return  # all of it was applied before its entry was dropped
            if origin != self.own and not self._room():
                self.refused_origins += 1
                return
        missing: tuple[str, int] | None = None
        if seq == count + 1:
            missing = self._missing(update.deps)
            if missing is None:
                self._record(update, None, apply, applied)
                if self._buffer.get(origin) or self._blocked.get(origin):
                    self._changed[origin] = None
                return
        waiting = self._buffer.get(origin)
        if waiting is not None and seq in waiting:
            return
        entry = _entry(update)
        size = len(entry[3]) + len(entry[1]) + ENTRY_OVERHEAD
        held = self._origin_bytes.get(origin, 0)
        if (
            self.buffered >= MAX_BUFFERED_UPDATES
            or self.buffered_bytes + size > MAX_BUFFERED_BYTES
            or (held and held + size > MAX_BUFFERED_BYTES_PER_ORIGIN)
        ):
            # The newest is dropped: what is held stays deliverable as it was, and this
            # one comes again by anti-entropy once it can be applied.
            self.dropped_early += 1
            return
        self._keep(origin, seq, entry, size)
        if missing is not None:
            self._block(origin, *missing)

    def _keep(self, origin: str, seq: int, entry: LogEntry, size: int) -> None:
        self._buffer.setdefault(origin, {})[seq] = (entry, size)
        self._origin_bytes[origin] = self._origin_bytes.get(origin, 0) + size
        self.buffered += 1
        self.buffered_bytes += size

    def _unbuffer(self, origin: str, seq: int) -> None:
        waiting = self._buffer[origin]
        _, size = waiting.pop(seq)
        self.buffered -= 1
        self.buffered_bytes -= size
        left = self._origin_bytes[origin] - size
        if waiting:
            self._origin_bytes[origin] = left
        else:
            del self._buffer[origin]
            del self._origin_bytes[origin]
            if self._waits.pop(origin, None) is not None:
                self._stale += 1

    def _drop_buffer(self, origin: str) -> None:
        """Drop every buffered update of ``origin``."""
        waiting = self._buffer.pop(origin, {})
        self.buffered -= len(waiting)
        self.buffered_bytes -= self._origin_bytes.pop(origin, 0)
        if self._waits.pop(origin, None) is not None:
            self._stale += 1

    def _block(self, origin: str, actor: str, count: int) -> None:
        """Index ``origin``'s buffered head as waiting for update ``count`` of ``actor``."""
        if self._waits.get(origin) == (actor, count):
            return
        if self._waits.get(origin) is not None:
            self._stale += 1
        self._waits[origin] = (actor, count)
        heapq.heappush(self._blocked.setdefault(actor, []), (count, origin))
        if self._stale > len(self._waits) + _STALE_SLACK:
            self._blocked = {}
            for waiter, (dependency, needed) in self._waits.items():
                self._blocked.setdefault(dependency, []).append((needed, waiter))
            for heap in self._blocked.values():
                heapq.heapify(heap)
            self._stale = 0

    def _record(
        self, update: Update, entry: LogEntry | None, apply: Apply, applied: list[Update]
    ) -> None:
        """Apply the next update of its origin, then count and log it."""
        if entry is None:
            entry = _entry(update)
        apply(update, entry)
        if update.origin not in self.version:
            self._admitted(update.origin, update.seq)
        self.version[update.origin] = update.seq
        waiting = self._buffer.get(update.origin)
        if waiting is not None and update.seq in waiting:
            self._unbuffer(update.origin, update.seq)  # (a copy that came earlier)
        self.logs.setdefault(update.origin, []).append(entry)
        self._local_deps = None
        applied.append(update)
        if update.origin in self._blocked:
            self._changed[update.origin] = None

    def _reapplies(self, update: Update) -> bool:
        """Whether an update the version already counts is applied again: it lies in
        its origin's unverified range, and past the list floor if it holds a list."""
        span = self.unverified.get(update.origin)
        if span is None or not span[0] < update.seq <= span[1]:
            return False
        floor = self.list_floor.get(update.origin)
        return floor is None or update.seq > floor or not holds_list(update.delta)

    def _reapply(
        self, update: Update, entry: LogEntry | None, apply: Apply, applied: list[Update]
    ) -> None:
        """Apply an update the version already counts because a joined state claimed
        it. Its dependencies are not waited for: the version claims them too, and a
        join is correct in any order. The log, which holds only updates after the
        claim, does not take it."""
        apply(update, _entry(update) if entry is None else entry)
        self.reapplied += 1
        applied.append(update)
        origin, seq = update.origin, update.seq
        lo, hi = self.unverified[origin]
        if seq == lo + 1:
            lo = seq
        elif seq == hi:
            hi = seq - 1
        if lo < hi:
            self.unverified[origin] = (lo, hi)
        else:
            del self.unverified[origin]
            self.list_floor.pop(origin, None)

    def collected_upto(self, stable: Mapping[str, int]) -> None:
        """List elements were (or may have been) collected at version ``stable``: no
        list update up to it is applied again."""
        floors = self.list_floor
        for origin in self.unverified:
            upto = stable.get(origin, 0)
            if upto > floors.get(origin, 0):
                floors[origin] = upto

    # --- full states ----------------------------------------------------------------------

    def false_claim(self, vector: Mapping[str, int]) -> bool:
        """Whether a state claims more of this replica's own updates than it made."""
        return vector.get(self.own, 0) > self.version.get(self.own, 0)

    def brings_news(self, vector: Mapping[str, int]) -> bool:
        """Whether a state at ``vector`` holds updates the version does not count.
        Origins refused for lack of room, retired replicas past their bars and forgotten
        ones bring nothing.

        A state within the version is not joined even where the version only holds a
        claim (``unverified``): it may be older than what lists here collected since,
        and would bring collected elements back. What a lie hid comes back as updates.
        """
        version = self.version
        for origin, count in vector.items():
            have = version.get(origin)
            if have is None:
                if count and origin not in self.forgotten and self._room():
                    return True
                continue
            if self.retired:
                count = min(count, self.retired.get(origin, count))  # noqa: PLW2901
            if count > have:
                return True
        return False

    def advance(self, vector: Mapping[str, int]) -> None:
        """Record that a joined state brought in everything in ``vector``.

        The version of each origin (but this replica's own) rises to what the state
        claims, and the seqs it skipped become unverified: their updates are applied
        again if they arrive. Origins beyond ``MAX_ORIGINS`` are refused."""
        for origin, count in vector.items():
            if origin in self.forgotten:
                continue
            if origin in self.retired:
                # The state may hold more of it than the retirement admits; joins are
                # idempotent, so the version claims no more than that.
                count = min(count, self.retired[origin])  # noqa: PLW2901
            have = self.version.get(origin)
            if have is None:
                if count <= 0:
                    continue
                if origin != self.own and not self._room():
                    self.refused_origins += 1
                    continue
                have = 0
            if count <= have:
                continue
            if origin != self.own:
                # (a state of this replica's own updates is its own snapshot or was
                # checked not to claim more than it made: nothing to verify)
                lo, _ = self.unverified.get(origin, (have, count))
                self.unverified[origin] = (min(lo, have), count)
            # The log cannot hold updates we only have as part of a state: it now
            # starts after them, and peers behind that point get a full state.
            if origin not in self.version:
                self._admitted(origin, count)
            self.version[origin] = count
            self.logs.setdefault(origin, []).clear()
            self.starts[origin] = count + 1
            self._changed[origin] = None
            waiting = self._buffer.get(origin)
            if waiting:
                for seq in [s for s in waiting if s <= count]:
                    self._overtaken.append((origin, seq, waiting[seq][0]))
                    self._unbuffer(origin, seq)
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
            self._unbuffer(replica_id, seq)

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
        self.unverified.pop(replica_id, None)
        self.list_floor.pop(replica_id, None)
        self._drop_buffer(replica_id)
        self._changed[replica_id] = None  # (what waited for it counts its bar now)
        self._local_deps = None

    def membership(self) -> list[tuple[str, int, bool]]:
        """``(replica_id, bar, forgotten)`` of each retired replica, sorted."""
        return [(r, bar, r in self.forgotten) for r, bar in sorted(self.retired.items())]


def _entry(update: Update) -> LogEntry:
    """The update as the logs (and storage, and the buffer) keep it."""
    return (update.deps, update.name, update.tag, codec.pack_body(update.wire))
