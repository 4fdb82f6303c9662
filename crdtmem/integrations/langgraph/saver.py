"""``CrdtmemSaver``: a LangGraph checkpointer over a crdtmem replica.

Layout, in the replica's field ``{prefix}.checkpoints`` (an OR-map)::

    thread key -> namespace key -> checkpoint key -> {
        "cp":          register: the checkpoint record (one update),
        "w:<task>":    register: the writes of one task (one update per put_writes),
    }

A checkpoint record holds the serializer's ``(type, bytes)`` pairs as they are: the
checkpoint without its channel values, the metadata, and one pair per channel value.
Each record is self-contained (a peer that has it can load the checkpoint), and each
write of the saver is one update of the replica, so a peer sees a checkpoint whole or
not at all. A channel whose version did not move since the parent checkpoint reuses
the parent's stored pair: it is not serialized again (what LangGraph's blob savers do).

History: after each ``put``, a (thread, namespace) keeps, for each *head* (a checkpoint
no other one continues), that head and its ancestors up to ``keep`` checkpoints in
all; older ones are removed with their writes. ``prune`` and ``delete_*`` remove more.

Concurrent writers: two processes that checkpoint one thread at once (both continuing
from one checkpoint) make a fork; both branches are kept. ``get_tuple`` without a
checkpoint id returns the newest head (greatest checkpoint id, the same on every
replica) and names the other heads in ``metadata["crdtmem_forks"]``; ``heads`` lists
them, and a WARNING is logged once for each head not returned. A fork is never
silent; ``discard_head`` drops a branch that should not be continued.
"""

from __future__ import annotations

import builtins
import hashlib
import logging
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, Final, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    PendingWrite,
    get_checkpoint_id,
    get_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from crdtmem.fields import MapField, RegisterField
from crdtmem.integrations.langgraph.maps import (
    map_key,
    map_path,
    present_keys,
    present_maps,
    present_values,
    register_path,
)
from crdtmem.lwwregister import LWWRegister
from crdtmem.ormap import ORMap
from crdtmem.replica import Replica

logger = logging.getLogger(__name__)

# Checkpoints kept per branch of a (thread, namespace) after each put (the head and its
# ancestors): enough for recent time travel and for resuming, while each one holds the
# whole state.
DEFAULT_KEEP: Final = 32
# Fork warnings remembered (one per other head), so each is logged once; past this
# many the memory is cleared (a fork may then be logged again), bounding it.
MAX_WARNED: Final = 4096
# The metadata key get_tuple names the other heads of a forked thread under.
FORKS_KEY: Final = "crdtmem_forks"
# Map keys inside a checkpoint's map: its record, and one register per task's writes.
RECORD: Final = "cp"
WRITES_KIND: Final = "w"
THREAD_KIND: Final = "t"
NS_KIND: Final = "n"
CHECKPOINT_KIND: Final = "c"
# Channel versions are "<step, 32 digits>.<writer tag>": the step orders them as
# LangGraph needs, and the writer tag (16 hex digits of the writer id's digest) keeps
# two replicas that continue one checkpoint from minting the same version.
VERSION_DIGITS: Final = 32
WRITER_TAG_HEX: Final = 16

Typed = tuple[str, bytes]


def _typed(pair: Any) -> Typed:
    """A stored ``[type, bytes]`` pair as the serializer's tuple."""
    kind, data = pair
    return str(kind), bytes(data)


def _version_step(current: str | int | float | None) -> int:
    if current is None:
        return 0
    if isinstance(current, str):
        return int(current.split(".")[0])
    return int(current)


class CrdtmemSaver(BaseCheckpointSaver[str]):
    """A LangGraph checkpointer whose checkpoints live in a crdtmem replica.

    ``CrdtmemSaver(replica, *, serde=None, keep=DEFAULT_KEEP, prefix="langgraph")``:
    every replica that gossips with ``replica`` sees the checkpoints, so a thread
    checkpointed by one process resumes in another. ``keep``: checkpoints kept per
    branch (a head and its ancestors) of each thread and namespace (``None``: all).
    ``prefix``: the replica field is ``{prefix}.checkpoints``.

    The async methods run the sync ones inline: the replica is in memory (a durable one
    appends to its log), and crdtmem starts no threads.
    """

    def __init__(
        self,
        replica: Replica,
        *,
        serde: SerializerProtocol | None = None,
        keep: int | None = DEFAULT_KEEP,
        prefix: str = "langgraph",
    ) -> None:
        super().__init__(serde=serde)
        if not isinstance(replica, Replica):
            raise TypeError(f"CrdtmemSaver needs a crdtmem Replica, got {type(replica).__name__}")
        if keep is not None and (type(keep) is not int or keep < 1):
            raise ValueError(f"keep is a positive int or None, got {keep!r}")
        self.replica = replica
        self.keep = keep
        self.field = f"{prefix}.checkpoints"
        # Shared with the clones with_allowlist makes (a shallow copy): they write the
        # same replica, so they take the same lock around read-modify-write.
        self._lock = threading.RLock()
        self._warned: set[tuple[str, str, str]] = set()
        tag = hashlib.blake2b(replica.writer_id.encode(), digest_size=WRITER_TAG_HEX // 2)
        self._writer_tag = tag.hexdigest()

    # --- paths ---------------------------------------------------------------------

    def _ns_path(self, thread_id: str, checkpoint_ns: str) -> Any:
        return map_path(
            self.field, map_key(THREAD_KIND, thread_id), map_key(NS_KIND, checkpoint_ns)
        )

    def _cp_path(self, thread_id: str, checkpoint_ns: str, checkpoint_id: str) -> Any:
        ns_path = self._ns_path(thread_id, checkpoint_ns)
        return (*ns_path, (map_key(CHECKPOINT_KIND, checkpoint_id), ORMap.TAG))

    def _read_ns(self, thread_id: str, checkpoint_ns: str) -> dict[str, dict[str, Any]]:
        """The checkpoints of one (thread, namespace): id -> {"cp": record, "writes": [...]}."""
        return self.replica.read_field(self._ns_path(thread_id, checkpoint_ns), _collect_ns)

    def _read_records(self, thread_id: str, checkpoint_ns: str) -> dict[str, dict[str, Any]]:
        """The checkpoint records of one (thread, namespace), by id (no writes)."""
        return self.replica.read_field(self._ns_path(thread_id, checkpoint_ns), _collect_records)

    def _read_all(self) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
        """thread id -> namespace -> checkpoint id -> entry, for every thread."""
        return self.replica.read_field(map_path(self.field), _collect_all)

    # --- reads -----------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint ``config`` names, or the newest head of its thread and
        namespace (with the other heads in ``metadata["crdtmem_forks"]``)."""
        configurable = config["configurable"]
        thread_id = str(configurable["thread_id"])
        checkpoint_ns = str(configurable.get("checkpoint_ns", ""))
        checkpoint_id = get_checkpoint_id(config)
        if checkpoint_id:
            entry = self.replica.read_field(
                self._cp_path(thread_id, checkpoint_ns, checkpoint_id), _entry_of
            )
            return None if entry is None else self._tuple(thread_id, checkpoint_ns, entry)
        heads, head_entry = self.replica.read_field(
            self._ns_path(thread_id, checkpoint_ns), _newest_head
        )
        if head_entry is None:
            return None
        found = self._tuple(thread_id, checkpoint_ns, head_entry)
        if len(heads) > 1:
            cast(dict[str, Any], found.metadata)[FORKS_KEY] = heads[1:]
            for other in heads[1:]:
                self._warn_fork(thread_id, checkpoint_ns, heads[0], other)
        return found

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first (by checkpoint id) within each thread and namespace,
        threads and namespaces in sorted order; ``config`` limits them to a thread (and
        a namespace, and a checkpoint id, when given)."""
        if config is not None:
            configurable = config["configurable"]
            thread_id = str(configurable["thread_id"])
            ns = configurable.get("checkpoint_ns")
            if ns is not None:
                threads = {thread_id: {str(ns): self._read_ns(thread_id, str(ns))}}
            else:
                threads = {thread_id: self._read_all().get(thread_id, {})}
            wanted_id = get_checkpoint_id(config)
        else:
            threads = self._read_all()
            wanted_id = None
        before_id = get_checkpoint_id(before) if before is not None else None
        remaining = limit
        for thread_id in sorted(threads):
            for checkpoint_ns in sorted(threads[thread_id]):
                entries = threads[thread_id][checkpoint_ns]
                for checkpoint_id in sorted(entries, reverse=True):
                    if wanted_id and checkpoint_id != wanted_id:
                        continue
                    if before_id and checkpoint_id >= before_id:
                        continue
                    entry = entries[checkpoint_id]
                    metadata = self._metadata(entry)
                    if filter and not all(metadata.get(k) == v for k, v in filter.items()):
                        continue
                    if remaining is not None:
                        if remaining <= 0:
                            return
                        remaining -= 1
                    yield self._tuple(thread_id, checkpoint_ns, entry, metadata)

    def heads(self, config: RunnableConfig) -> builtins.list[RunnableConfig]:
        """The heads of the thread and namespace ``config`` names, newest first: more
        than one when processes checkpointed the thread concurrently (a fork)."""
        configurable = config["configurable"]
        thread_id = str(configurable["thread_id"])
        checkpoint_ns = str(configurable.get("checkpoint_ns", ""))
        return [
            _config(thread_id, checkpoint_ns, head)
            for head in _heads(self._read_records(thread_id, checkpoint_ns))
        ]

    def _metadata(self, entry: dict[str, Any]) -> dict[str, Any]:
        metadata: dict[str, Any] = self.serde.loads_typed(_typed(entry["cp"]["metadata"]))
        return metadata

    def _tuple(
        self,
        thread_id: str,
        checkpoint_ns: str,
        entry: dict[str, Any],
        metadata: dict[str, Any] | None = None,
    ) -> CheckpointTuple:
        record = entry["cp"]
        loads = self.serde.loads_typed
        checkpoint: Checkpoint = loads(_typed(record["checkpoint"]))
        checkpoint["channel_values"] = {
            channel: loads(_typed(pair)) for channel, pair in record["values"].items()
        }
        writes = sorted(entry["writes"], key=lambda w: writes_sort_key(w[3], w[0], w[5]))
        pending: list[PendingWrite] = [
            (task_id, channel, loads(_typed(pair))) for task_id, channel, pair, _, _, _ in writes
        ]
        parent = record["parent"]
        return CheckpointTuple(
            config=_config(thread_id, checkpoint_ns, record["id"]),
            checkpoint=checkpoint,
            metadata=cast(
                CheckpointMetadata, metadata if metadata is not None else self._metadata(entry)
            ),
            parent_config=_config(thread_id, checkpoint_ns, parent) if parent else None,
            pending_writes=pending,
        )

    def _warn_fork(self, thread_id: str, checkpoint_ns: str, shown: str, other: str) -> None:
        key = (thread_id, checkpoint_ns, other)
        with self._lock:
            if key in self._warned:
                return
            if len(self._warned) >= MAX_WARNED:
                self._warned.clear()
            self._warned.add(key)
        logger.warning(
            "thread %r (namespace %r) forked: two writers continued it concurrently; "
            "resuming from head %s, the other head %s is kept (see "
            "CrdtmemSaver.heads and metadata[%r]; discard_head drops a branch)",
            thread_id,
            checkpoint_ns,
            shown,
            other,
            FORKS_KEY,
        )

    # --- writes ----------------------------------------------------------------------

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store ``checkpoint`` as one update; returns the config naming it."""
        configurable = config["configurable"]
        thread_id = str(configurable["thread_id"])
        checkpoint_ns = str(configurable.get("checkpoint_ns", ""))
        parent_id = configurable.get("checkpoint_id")
        dumps = self.serde.dumps_typed
        saved: dict[str, Any] = dict(checkpoint)
        values: dict[str, Any] = saved.pop("channel_values")
        versions: dict[str, Any] = dict(checkpoint["channel_versions"])
        full_metadata = dict(get_checkpoint_metadata(config, metadata))
        full_metadata.pop(FORKS_KEY, None)  # a view of the moment, never stored
        with self._lock:
            parent_record = (
                self.replica.read_field(
                    self._cp_path(thread_id, checkpoint_ns, parent_id), _record_of
                )
                if parent_id
                else None
            )
            stored_values: dict[str, list[Any]] = {}
            for channel, version in versions.items():
                reused = _reusable(parent_record, channel, version, new_versions)
                if reused is not None:
                    stored_values[channel] = reused
                elif channel in values:
                    stored_values[channel] = list(dumps(values[channel]))
            run_id = full_metadata.get("run_id")
            record = {
                "id": checkpoint["id"],
                "thread": thread_id,
                "ns": checkpoint_ns,
                "parent": parent_id or None,
                "checkpoint": list(dumps(saved)),
                "metadata": list(dumps(full_metadata)),
                "values": stored_values,
                "versions": {k: v for k, v in versions.items() if isinstance(v, str | int | float)},
                "run_id": run_id if isinstance(run_id, str) else None,
            }
            cp_path = self._cp_path(thread_id, checkpoint_ns, checkpoint["id"])
            RegisterField(self.replica, register_path(cp_path, RECORD)).set(record)
            if self.keep is not None:
                self._trim(thread_id, checkpoint_ns, self.keep)
        return _config(thread_id, checkpoint_ns, checkpoint["id"])

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store a task's writes against the checkpoint ``config`` names, as one
        update; a write already stored under the same (task, index) is kept (special
        channels, with negative indexes, are replaced), as LangGraph's savers do."""
        configurable = config["configurable"]
        thread_id = str(configurable["thread_id"])
        checkpoint_ns = str(configurable.get("checkpoint_ns", ""))
        checkpoint_id = str(configurable["checkpoint_id"])
        cp_path = self._cp_path(thread_id, checkpoint_ns, checkpoint_id)
        path = register_path(cp_path, map_key(WRITES_KIND, task_id))
        dumps = self.serde.dumps_typed
        with self._lock:
            current = self.replica.read_field(path, lambda register: register.value())
            by_index: dict[int, list[Any]] = {}
            if isinstance(current, dict):
                by_index = {int(w[0]): list(w) for w in current["writes"]}
            changed = False
            for position, (channel, value) in enumerate(writes):
                index = WRITES_IDX_MAP.get(channel, position)
                if index >= 0 and index in by_index:
                    continue
                by_index[index] = [index, channel, list(dumps(value))]
                changed = True
            if not changed:
                return
            record = {
                "task_id": task_id,
                "path": task_path,
                "writes": [by_index[i] for i in sorted(by_index)],
            }
            RegisterField(self.replica, path).set(record)

    # --- deletes -----------------------------------------------------------------------

    def delete_thread(self, thread_id: str) -> None:
        """Remove every checkpoint and write of ``thread_id`` (one update). A write made
        concurrently elsewhere survives the remove (add wins)."""
        with self._lock:
            top = MapField(self.replica, map_path(self.field))
            key = map_key(THREAD_KIND, thread_id)
            if key in top:
                top.remove(key)

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Remove the checkpoints (and their writes) that the runs ``run_ids`` made."""
        wanted = set(run_ids)
        if not wanted:
            return
        with self._lock:
            for thread_id, namespaces in self._read_all().items():
                for checkpoint_ns, entries in namespaces.items():
                    doomed = [
                        cid for cid, entry in entries.items() if entry["cp"]["run_id"] in wanted
                    ]
                    self._remove(thread_id, checkpoint_ns, doomed)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint and write of one thread to another, oldest first and
        each checkpoint after its writes, so a peer never sees a copied checkpoint
        without its writes or its parent (updates apply in causal order)."""
        with self._lock:
            namespaces = self._read_all().get(source_thread_id, {})
            for checkpoint_ns, entries in sorted(namespaces.items()):
                ns_path = self._ns_path(target_thread_id, checkpoint_ns)
                for checkpoint_id in sorted(entries):
                    entry = entries[checkpoint_id]
                    cp_path = (*ns_path, (map_key(CHECKPOINT_KIND, checkpoint_id), ORMap.TAG))
                    for task_record in entry["task_records"]:
                        key = map_key(WRITES_KIND, task_record["task_id"])
                        RegisterField(self.replica, register_path(cp_path, key)).set(task_record)
                    record = {**entry["cp"], "thread": target_thread_id}
                    RegisterField(self.replica, register_path(cp_path, RECORD)).set(record)

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """``"keep_latest"``: keep only each branch's head per namespace (a fork keeps
        both heads: pruning never resolves a fork); ``"delete"``: delete the threads."""
        if strategy not in ("keep_latest", "delete"):
            raise ValueError(f"strategy is 'keep_latest' or 'delete', got {strategy!r}")
        with self._lock:
            for thread_id in thread_ids:
                if strategy == "delete":
                    self.delete_thread(thread_id)
                    continue
                for checkpoint_ns in self._read_all().get(thread_id, {}):
                    self._trim(thread_id, checkpoint_ns, 0)

    def discard_head(self, config: RunnableConfig) -> None:
        """Drop the branch whose head ``config`` names: the head and its ancestors up
        to the first one another branch shares. ``ValueError`` if it is not a head."""
        configurable = config["configurable"]
        thread_id = str(configurable["thread_id"])
        checkpoint_ns = str(configurable.get("checkpoint_ns", ""))
        head = get_checkpoint_id(config)
        with self._lock:
            entries = self._read_records(thread_id, checkpoint_ns)
            if head not in _heads(entries):
                raise ValueError(f"checkpoint {head!r} is not a head of thread {thread_id!r}")
            children: dict[str, int] = {}
            for record in entries.values():
                parent = record["parent"]
                if parent:
                    children[parent] = children.get(parent, 0) + 1
            doomed: list[str] = []
            current: str | None = head
            while current in entries and (current == head or children.get(current, 0) <= 1):
                doomed.append(current)
                current = entries[current]["parent"]
            self._remove(thread_id, checkpoint_ns, doomed)

    def _trim(self, thread_id: str, checkpoint_ns: str, keep: int) -> None:
        """Remove what the history rule drops: every checkpoint that is not among the
        last ``keep`` of a branch (a head and its ancestors; at least the head), and
        entries left without a checkpoint record (writes a peer made concurrently with
        a remove). Walking from the heads, not by id, keeps each branch unbroken
        whatever the writers' clocks said."""
        path = self._ns_path(thread_id, checkpoint_ns)
        present, records = self.replica.read_field(path, _keys_and_records)
        if len(present) <= keep and len(records) == len(present):
            return
        kept: set[str] = set()
        for head in _heads(records):
            current: str | None = head
            for _ in range(max(keep, 1)):
                if current is None or current not in records:
                    break
                kept.add(current)
                current = records[current]["parent"]
        live = {map_key(CHECKPOINT_KIND, cid) for cid in kept}
        doomed = [key for key in present if key not in live]
        if doomed:
            ns_map = MapField(self.replica, path)
            for key in doomed:
                ns_map.remove(key)

    def _remove(self, thread_id: str, checkpoint_ns: str, checkpoint_ids: Sequence[str]) -> None:
        if not checkpoint_ids:
            return
        ns_map = MapField(self.replica, self._ns_path(thread_id, checkpoint_ns))
        for checkpoint_id in checkpoint_ids:
            ns_map.remove(map_key(CHECKPOINT_KIND, checkpoint_id))

    # --- versions --------------------------------------------------------------------

    def get_next_version(self, current: str | None, channel: None) -> str:
        """``<step + 1, 32 digits>.<this writer's tag>``: increasing, and unique across
        replicas (two that continue one checkpoint mint different versions)."""
        step = _version_step(current) + 1
        return f"{step:0{VERSION_DIGITS}d}.{self._writer_tag}"

    # --- async: the sync methods, inline ------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Async ``get_tuple``."""
        return self.get_tuple(config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Async ``list``."""
        for item in self.list(config, filter=filter, before=before, limit=limit):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Async ``put``."""
        return self.put(config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Async ``put_writes``."""
        self.put_writes(config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        """Async ``delete_thread``."""
        self.delete_thread(thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Async ``delete_for_runs``."""
        self.delete_for_runs(run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Async ``copy_thread``."""
        self.copy_thread(source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Async ``prune``."""
        self.prune(thread_ids, strategy=strategy)


def _config(thread_id: str, checkpoint_ns: str, checkpoint_id: str) -> RunnableConfig:
    return {
        "configurable": {
            "thread_id": thread_id,
            "checkpoint_ns": checkpoint_ns,
            "checkpoint_id": checkpoint_id,
        }
    }


def _reusable(
    parent: dict[str, Any] | None, channel: str, version: Any, new_versions: ChannelVersions
) -> list[Any] | None:
    """The parent's stored pair for ``channel`` when its version did not move."""
    if parent is None or channel in new_versions:
        return None
    if parent["versions"].get(channel) != version:
        return None
    pair: list[Any] | None = parent["values"].get(channel)
    return pair


def _heads(records: dict[str, dict[str, Any]]) -> list[str]:
    """The checkpoints no other one continues, newest (greatest id) first."""
    parents = {record["parent"] for record in records.values()}
    return sorted((cid for cid in records if cid not in parents), reverse=True)


def _record_of(cp_map: ORMap) -> dict[str, Any] | None:
    """A checkpoint map's record; ``None`` when removed (a remove resets it to
    ``None``) or not written yet."""
    register = cp_map.field(RECORD, LWWRegister.TAG)
    record = register.value() if isinstance(register, LWWRegister) else None
    return record if isinstance(record, dict) else None


def _entry_of(cp_map: ORMap) -> dict[str, Any] | None:
    """Under the replica's lock: a checkpoint's record and writes, or ``None``."""
    record = _record_of(cp_map)
    if record is None:
        return None
    task_records = []
    writes: list[tuple[str, str, Any, str, str, int]] = []
    for key, task in present_values(cp_map):
        if key == RECORD or not isinstance(task, dict):
            continue
        task_records.append(task)
        for index, channel, pair in task["writes"]:
            writes.append((task["task_id"], channel, pair, task["path"], key, index))
    return {"cp": record, "writes": writes, "task_records": task_records}


def _collect_records(state: ORMap) -> dict[str, dict[str, Any]]:
    """Under the replica's lock: the records of a namespace map, by checkpoint id."""
    found: dict[str, dict[str, Any]] = {}
    for _, cp_map in present_maps(state):
        record = _record_of(cp_map)
        if record is not None:
            found[record["id"]] = record
    return found


def _keys_and_records(state: ORMap) -> tuple[list[str], dict[str, dict[str, Any]]]:
    return present_keys(state), _collect_records(state)


def _newest_head(state: ORMap) -> tuple[list[str], dict[str, Any] | None]:
    """Under the replica's lock: the heads of a namespace map, and the newest one's
    entry."""
    records: dict[str, dict[str, Any]] = {}
    maps: dict[str, ORMap] = {}
    for _, cp_map in present_maps(state):
        record = _record_of(cp_map)
        if record is not None:
            records[record["id"]] = record
            maps[record["id"]] = cp_map
    heads = _heads(records)
    return heads, (_entry_of(maps[heads[0]]) if heads else None)


def _collect_ns(state: ORMap) -> dict[str, dict[str, Any]]:
    """Under the replica's lock: the entries (record and writes) of a namespace map,
    by checkpoint id; checkpoints without a record (removed) are left out."""
    found: dict[str, dict[str, Any]] = {}
    for _, cp_map in present_maps(state):
        entry = _entry_of(cp_map)
        if entry is not None:
            found[entry["cp"]["id"]] = entry
    return found


def _collect_all(state: ORMap) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    threads: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for _, thread_map in present_maps(state):
        for _, ns_map in present_maps(thread_map):
            for checkpoint_id, entry in _collect_ns(ns_map).items():
                thread_id, checkpoint_ns = _names_of(entry)
                threads.setdefault(thread_id, {}).setdefault(checkpoint_ns, {})[checkpoint_id] = (
                    entry
                )
    return threads


def _names_of(entry: dict[str, Any]) -> tuple[str, str]:
    record = entry["cp"]
    return str(record["thread"]), str(record["ns"])
