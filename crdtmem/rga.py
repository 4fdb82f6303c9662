"""RGA: the replicated growable array (Roh et al., "Replicated abstract data types", 2011).

Every element has an id ``(lamport, actor)`` and the id of the element it was inserted
after (its *ref*; ``None`` for the head). The order is a pre-order walk of the tree of
refs, siblings by descending id; to integrate an element we go to its ref and skip
every following element with a greater id. Deleted elements stay as tombstones (their
value dropped) so that later inserts can still find their ref.

Deltas are states too: an insert delta holds one element whose ref it does not contain
(an *orphan*), a delete delta holds the id to delete. Joining parks orphans and deletes of
unknown ids until what they need arrives, so deltas join in any order and the result is a
join-semilattice: the state is the set of elements plus the set of deleted ids.

Deleted elements are collected once no update still on its way can refer to them (the
replica decides when: :meth:`RGA.collect`). A collected element cannot simply vanish:
a concurrent insert that skipped over it (its id was greater) or stopped at it (smaller)
must land in the same place on every replica, whether or not that replica collected.
So a run of collected elements becomes one *marker* holding only the ids that can stop
such a scan: the run's prefix minima (each smaller than every id before it in the run).
The first id of the run smaller than the new element is always one of them, so the
scan gives the same answer, and a run typed forwards (ids increasing) keeps one id.

Storage is a list of chunks of at most ``MAX_CHUNK`` elements, each knowing how many of
its elements are visible, with a cursor remembering the last chunk used: index lookups
near the previous one (typing) are O(1), others walk the chunk list, and an id lookup is
a dict access plus a scan of one chunk.

>>> from crdtmem.crdt import Writer
>>> doc = RGA.empty(); w = Writer.fixed("a")
>>> for i, ch in enumerate("hllo"): doc.absorb(doc.insert_delta(w, i, ch))
>>> doc.absorb(doc.insert_delta(w, 1, "e")); doc.absorb(doc.delete_delta(w, 0))
>>> "".join(doc.value())
'ello'
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final, Self, final

from crdtmem.codec import MAX_LAMPORT, as_actor, as_int, as_list, checked, wire_value
from crdtmem.crdt import CrdtBase, Writer, register_type
from crdtmem.errors import DecodeError

Id = tuple[int, str]

# Chunk size trades the O(chunk) scan to find an element inside a chunk against the
# O(chunks) walk for a far jump; 256 keeps both to a few microseconds at 100k elements.
MAX_CHUNK: Final = 256


class _Node:
    __slots__ = ("chunk", "deleted", "id", "records", "ref", "value")

    def __init__(self, node_id: Id, ref: Id | None, value: Any, deleted: bool) -> None:
        self.id = node_id
        self.ref = ref
        self.value = None if deleted else value
        self.deleted = deleted
        self.chunk: _Chunk | None = None
        # Set on a marker of collected elements: their prefix-minimum ids, decreasing.
        self.records: list[Id] | None = None


def _marker(records: list[Id]) -> _Node:
    node = _Node(records[0], None, None, True)
    node.records = records
    return node


def _records(marker: _Node) -> list[Id]:
    """The ids a marker keeps (callers pass only markers)."""
    records = marker.records
    if records is None:
        raise RuntimeError(f"list node {marker.id} is an element, not a marker of collected ids")
    return records


def _append_run(marker: _Node, records: list[Id]) -> None:
    """Extend ``marker`` by a run that follows it: the prefix minima of the two runs
    together are the first's, then the second's that are below the first's minimum."""
    mine = _records(marker)
    lowest = mine[-1]
    for k, record in enumerate(records):
        if record < lowest:
            mine.extend(records[k:])
            return


class _Chunk:
    __slots__ = ("next", "nodes", "visible")

    def __init__(self, nodes: list[_Node]) -> None:
        self.nodes = nodes
        self.visible = 0
        self.next: _Chunk | None = None
        for node in nodes:
            node.chunk = self
            if not node.deleted:
                self.visible += 1


@final
@register_type
class RGA(CrdtBase):
    """Replicated growable array: a list with index-based insert and delete."""

    TAG = 6
    KIND = "list"
    __slots__ = (
        "_cursor",
        "_length",
        "chunks",
        "collected",
        "index",
        "lamport",
        "markers",
        "orphans",
        "pending",
        "waiting",
    )

    def __init__(self) -> None:
        self.chunks: list[_Chunk] = [_Chunk([])]
        self.index: dict[Id, _Node] = {}
        self.orphans: dict[Id, _Node] = {}
        self.waiting: dict[Id, list[Id]] = {}
        self.pending: set[Id] = set()
        self.lamport = 0
        self.markers = 0  # marker nodes in the chunks
        self.collected = 0  # elements collected into markers, ever
        self._length = 0
        self._cursor: tuple[int, int, _Chunk] | None = None

    @classmethod
    def empty(cls) -> Self:
        return cls()

    # --- reads ---------------------------------------------------------------------

    def __len__(self) -> int:
        return self._length

    def _nodes(self) -> Iterator[_Node]:
        for chunk in self.chunks:
            yield from chunk.nodes

    def value(self) -> list[Any]:
        return [node.value for chunk in self.chunks for node in chunk.nodes if not node.deleted]

    def tombstones(self) -> int:
        """Deleted elements still held (their ids order later inserts)."""
        deleted = sum(len(chunk.nodes) - chunk.visible for chunk in self.chunks)
        waiting = sum(1 for node in self.orphans.values() if node.deleted)
        return deleted - self.markers + waiting + len(self.pending)

    def deleted_ids(self) -> list[Id]:
        """Ids of every deleted element held (not collected), and of deletes waiting
        for their element."""
        ids = [i for i, n in self.orphans.items() if n.deleted]
        ids += self.pending
        if self.index:  # (a local delta integrates nothing: skip the walk)
            ids += [n.id for n in self._nodes() if n.deleted and n.records is None]
        return ids

    def marker_ids(self) -> int:
        """Ids kept by markers of collected elements (what collection still costs)."""
        return sum(len(n.records) for n in self._nodes() if n.records is not None)

    def _locate(self, position: int) -> tuple[_Chunk, int, int]:
        """Chunk, chunk index and offset of the visible element at ``position``."""
        chunks, cursor = self.chunks, self._cursor
        if cursor is not None:
            ci, before = cursor[0], cursor[1]
        elif position < self._length // 2:
            ci, before = 0, 0
        else:
            ci = len(chunks) - 1
            before = self._length - chunks[ci].visible
        while position < before:
            ci -= 1
            before -= chunks[ci].visible
        while position >= before + chunks[ci].visible:
            before += chunks[ci].visible
            ci += 1
        chunk = chunks[ci]
        self._cursor = (ci, before, chunk)
        rank = position - before
        nodes = chunk.nodes
        if chunk.visible == len(nodes):
            return chunk, ci, rank
        for offset, node in enumerate(nodes):
            if not node.deleted:
                if rank == 0:
                    return chunk, ci, offset
                rank -= 1
        raise AssertionError("chunk visible count out of step with its nodes")  # pragma: no cover

    def _check_index(self, position: object, upper: int) -> int:
        if type(position) is not int:
            raise TypeError(f"list indices are int, got {type(position).__name__}")
        if not 0 <= position < upper:
            raise IndexError(f"list index {position} out of range for length {self._length}")
        return position

    def get(self, position: int) -> Any:
        """The element at ``position`` (negative counts from the end)."""
        if type(position) is int and position < 0:
            position += self._length
        chunk, _, offset = self._locate(self._check_index(position, self._length))
        return chunk.nodes[offset].value

    # --- delta mutators --------------------------------------------------------------

    def insert_delta(self, writer: Writer, position: int, item: object) -> RGA:
        """A delta inserting ``item`` so that it lands at ``position`` (0..len)."""
        self._check_index(position, self._length + 1)
        if self.lamport >= MAX_LAMPORT:
            # (peers refuse ids past MAX_LAMPORT; only a forged id gets a list there)
            raise ValueError(
                f"this list has seen lamport {self.lamport}, the largest peers accept: "
                "it takes no more inserts"
            )
        item = checked(item)
        ref = None
        if position > 0:
            chunk, _, offset = self._locate(position - 1)
            ref = chunk.nodes[offset].id
        delta = RGA()
        delta._receive(_Node((self.lamport + 1, writer.actor), ref, item, False))
        return delta

    def delete_delta(self, writer: Writer, position: int) -> RGA:
        """A delta deleting the element at ``position``."""
        chunk, _, offset = self._locate(self._check_index(position, self._length))
        delta = RGA()
        delta.pending.add(chunk.nodes[offset].id)
        return delta

    def reset_delta(self, writer: Writer) -> RGA:
        delta = RGA()
        delta.pending.update(n.id for n in self._nodes() if not n.deleted)
        delta.pending.update(i for i, n in self.orphans.items() if not n.deleted)
        return delta

    # --- join ---------------------------------------------------------------------------

    def absorb(self, other: RGA) -> None:
        if other.markers and not self._knows_collected(other):
            self._rebase(other)
            return
        collected_here = self.markers > 0
        for theirs in (other._nodes(), other.orphans.values()):
            for node in theirs:
                if node.records is not None:
                    continue
                if collected_here and node.deleted and self._collected_stale(node):
                    continue
                self._take(node)
        for node_id in other.pending:
            self._delete_id(node_id)

    def _collected_stale(self, node: _Node) -> bool:
        """A deleted element from a state that has not collected what this one has, whose
        ref is gone: both were collected here (any element made before its ref was
        collected is already here, by causal stability), so it is not taken back."""
        if node.id in self.index or node.id in self.orphans:
            return False
        ref = node.ref
        return ref is not None and ref not in self.index and ref not in self.orphans

    def _collected_ids(self) -> set[Id]:
        return {r for n in self._nodes() if n.records is not None for r in n.records}

    def _knows_collected(self, other: RGA) -> bool:
        """Whether every element ``other`` collected is here (as an element or collected),
        so that its markers carry nothing new. Only full states carry markers."""
        mine = self._collected_ids() if self.markers else set()
        index = self.index
        return all(
            r in index or r in mine
            for n in other._nodes()
            if n.records is not None
            for r in n.records
        )

    def _rebase(self, other: RGA) -> None:
        """Join by starting from ``other`` (whose markers order what it collected) and
        integrating what only this replica has: a replica that joins a group late gets
        the group's markers this way, and its own elements land where the markers say."""
        base = other.copy()
        gone = base._collected_ids()
        for theirs in (self._nodes(), self.orphans.values()):
            for node in theirs:
                if node.records is not None or node.id in gone:
                    continue
                if node.deleted and base._collected_stale(node):
                    continue
                base._take(node)
        for node_id in self.pending:
            if node_id not in gone:
                base._delete_id(node_id)
        base.collected = max(self.collected, other.collected)
        for name in self.__slots__:
            setattr(self, name, getattr(base, name))

    def _take(self, node: _Node) -> None:
        mine = self.index.get(node.id) or self.orphans.get(node.id)
        if mine is None:
            self._receive(_Node(node.id, node.ref, node.value, node.deleted))
        elif node.deleted:
            self._delete_node(mine)

    def _delete_id(self, node_id: Id) -> None:
        node = self.index.get(node_id) or self.orphans.get(node_id)
        if node is None:
            self.pending.add(node_id)
        else:
            self._delete_node(node)

    def _delete_node(self, node: _Node) -> None:
        if node.deleted:
            return
        node.deleted = True
        node.value = None
        chunk = node.chunk
        if chunk is not None:
            chunk.visible -= 1
            self._length -= 1
            if self._cursor is not None and self._cursor[2] is not chunk:
                self._cursor = None

    def _receive(self, node: _Node) -> None:
        """Integrate ``node`` if its ref is here, else park it until the ref arrives."""
        self.lamport = max(self.lamport, node.id[0])
        if node.id in self.pending:
            self.pending.discard(node.id)
            node.deleted, node.value = True, None
        if node.ref is not None and node.ref not in self.index:
            self.orphans[node.id] = node
            self.waiting.setdefault(node.ref, []).append(node.id)
            return
        ready = [node]
        while ready:
            current = ready.pop()
            self._integrate(current)
            for child_id in self.waiting.pop(current.id, ()):
                ready.append(self.orphans.pop(child_id))

    def _integrate(self, node: _Node) -> None:
        if node.ref is None:
            chunk, pos = self.chunks[0], 0
        else:
            ref_node = self.index[node.ref]
            chunk = ref_node.chunk  # type: ignore[assignment]
            pos = chunk.nodes.index(ref_node) + 1
        node_id = node.id
        while True:
            nodes = chunk.nodes
            end = len(nodes)
            while pos < end and nodes[pos].id > node_id:
                records = nodes[pos].records
                if records is not None and records[-1] < node_id:
                    # It stops inside a collected run: split the marker there.
                    pos = self._split_marker(chunk, pos, node_id)
                    end = len(nodes)
                    break
                pos += 1
            if pos < end or chunk.next is None:
                break
            chunk, pos = chunk.next, 0
        nodes.insert(pos, node)
        node.chunk = chunk
        self.index[node_id] = node
        cursor = self._cursor
        if not node.deleted:
            chunk.visible += 1
            self._length += 1
            if cursor is not None and cursor[2] is not chunk:
                self._cursor = cursor = None
        if len(nodes) > MAX_CHUNK:
            self._split(chunk)

    def _split_marker(self, chunk: _Chunk, pos: int, node_id: Id) -> int:
        """Cut the marker at ``pos`` before its first id below ``node_id``; return the
        position of the second part."""
        marker = chunk.nodes[pos]
        records = _records(marker)
        cut = next(k for k, record in enumerate(records) if record < node_id)
        tail = _marker(records[cut:])
        del records[cut:]
        tail.chunk = chunk
        chunk.nodes.insert(pos + 1, tail)
        self.markers += 1
        return pos + 1

    def _split(self, chunk: _Chunk) -> None:
        cursor = self._cursor
        ci = cursor[0] if cursor is not None and cursor[2] is chunk else self.chunks.index(chunk)
        half = len(chunk.nodes) // 2
        tail = _Chunk(chunk.nodes[half:])
        del chunk.nodes[half:]
        chunk.visible -= tail.visible
        tail.next, chunk.next = chunk.next, tail
        self.chunks.insert(ci + 1, tail)
        if cursor is not None and cursor[0] > ci:
            self._cursor = (cursor[0] + 1, cursor[1], cursor[2])

    # --- garbage collection -------------------------------------------------------------

    def collect(self, ids: Iterable[Id]) -> int:
        """Collect the deleted elements among ``ids``; return how many were.

        Only for ids no update still to come can refer to: deleted, and every insert
        made before its replica saw the delete already applied here (the replica
        decides, from causal stability). Markers of neighbouring runs are merged and
        small chunks joined, so memory follows the live elements and the markers.
        """
        touched: dict[int, _Chunk] = {}
        count = 0
        for node_id in ids:
            node = self.index.get(node_id)
            if node is None or not node.deleted:
                continue
            del self.index[node_id]
            node.records, node.ref = [node_id], None
            self.markers += 1
            count += 1
            if node.chunk is not None:
                touched[id(node.chunk)] = node.chunk
        if not count:
            return 0
        self.collected += count
        for chunk in touched.values():
            chunk.nodes = self._coalesce(chunk.nodes)
        self._join_small_chunks()
        self._cursor = None
        return count

    def _coalesce(self, nodes: list[_Node]) -> list[_Node]:
        kept: list[_Node] = []
        for node in nodes:
            if node.records is not None and kept and kept[-1].records is not None:
                _append_run(kept[-1], node.records)
                self.markers -= 1
            else:
                kept.append(node)
        return kept

    def _join_small_chunks(self) -> None:
        joined: list[_Chunk] = []
        for chunk in self.chunks:
            if joined and len(joined[-1].nodes) + len(chunk.nodes) <= MAX_CHUNK // 2:
                left = joined[-1]
                for node in chunk.nodes:
                    node.chunk = left
                left.nodes = self._coalesce(left.nodes + chunk.nodes)
                left.visible += chunk.visible
                left.next = chunk.next
            else:
                joined.append(chunk)
        self.chunks = joined

    def copy(self) -> Self:
        duplicate = type(self)()
        duplicate._load(
            _Node(n.id, n.ref, n.value, n.deleted)
            if n.records is None
            else _marker(list(n.records))
            for n in self._nodes()
        )
        duplicate.collected = self.collected
        for node in self.orphans.values():
            duplicate._receive(_Node(node.id, node.ref, node.value, node.deleted))
        duplicate.pending = set(self.pending)
        return duplicate

    def _load(self, nodes: Iterable[_Node]) -> None:
        """Fill an empty list with nodes already in RGA order."""
        batch: list[_Node] = []
        chunks: list[_Chunk] = []
        for node in nodes:
            batch.append(node)
            if node.records is None:
                self.index[node.id] = node
            else:
                self.markers += 1
            self.lamport = max(self.lamport, node.id[0])
            if len(batch) == MAX_CHUNK // 2:
                chunks.append(_Chunk(batch))
                batch = []
        if batch or not chunks:
            chunks.append(_Chunk(batch))
        for left, right in itertools.pairwise(chunks):
            left.next = right
        self.chunks = chunks
        self._length = sum(chunk.visible for chunk in chunks)
        self._cursor = None

    # --- wire -------------------------------------------------------------------------

    def to_wire(self) -> list[Any]:
        if self._length == 0 and len(self.orphans) == 1 and not self.pending and not self.index:
            # The insert delta, on every local insert: one orphan, nothing else.
            ((node_id, node),) = self.orphans.items()
            parent = node.ref
            if parent is not None and parent[1] == node_id[1]:
                orphan = [node_id[0], 0, parent[0], 0, node.deleted, node.value]
                return [[node_id[1]], [], [orphan], []]
        actors = sorted(
            {n.id[1] for n in self._nodes()}
            | {r[1] for n in self._nodes() if n.records is not None for r in n.records}
            | {n.ref[1] for n in self._nodes() if n.ref is not None}
            | {i[1] for i in self.orphans}
            | {r[1] for n in self.orphans.values() if n.ref is not None for r in [n.ref]}
            | {i[1] for i in self.pending}
        )
        slot = {actor: k for k, actor in enumerate(actors)}
        nodes: list[list[Any]] = []
        previous: Id | None = None
        for node in self._nodes():
            if node.records is not None:
                # A marker: one item, its ids flattened to lamport, actor slot pairs.
                nodes.append([[x for r in node.records for x in (r[0], slot[r[1]])]])
                previous = None
                continue
            ref: Any = node.ref
            if ref is None:
                ref = None
            elif ref == previous:
                ref = True
            else:
                ref = [ref[0], slot[ref[1]]]
            entry = [node.id[0], slot[node.id[1]], ref]
            if not node.deleted:
                entry.append(node.value)
            nodes.append(entry)
            previous = node.id
        orphans = [
            [i[0], slot[i[1]], n.ref[0], slot[n.ref[1]], n.deleted, n.value]  # type: ignore[index]
            for i, n in sorted(self.orphans.items())
        ]
        pending = [[i[0], slot[i[1]]] for i in sorted(self.pending)]
        return [actors, nodes, orphans, pending]

    @classmethod
    def from_wire(cls, obj: object, depth: int = 0) -> Self:
        actors_obj, nodes_obj, orphans_obj, pending_obj = as_list(obj, "list", 4)
        actors = [as_actor(a, "list actor") for a in as_list(actors_obj, "list actors")]
        if len(set(actors)) != len(actors):
            raise DecodeError("list: repeated actor in the actor table")

        def ident(lamport: object, actor: object, what: str) -> Id:
            slot = as_int(actor, f"{what} actor", 0, len(actors) - 1)
            return (as_int(lamport, f"{what} lamport", 1, MAX_LAMPORT), actors[slot])

        built = cls()
        built._load(_validated_order(as_list(nodes_obj, "list elements"), ident))
        for item in as_list(orphans_obj, "list orphans"):
            lamport, actor, ref_lamport, ref_actor, deleted, stored = as_list(
                item, "list orphan", 6
            )
            node_id = ident(lamport, actor, "list orphan")
            ref = ident(ref_lamport, ref_actor, "list orphan ref")
            if type(deleted) is not bool or ref[0] >= node_id[0]:
                raise DecodeError("list orphan: bad deleted flag or ref not older than the element")
            if node_id in built.index or node_id in built.orphans:
                raise DecodeError(f"list: element id {node_id} repeated")
            check = None if deleted else wire_value(stored, "list value")
            built._receive(_Node(node_id, ref, check, deleted))
        for item in as_list(pending_obj, "list deletes"):
            lamport, actor = as_list(item, "list delete", 2)
            built._delete_id(ident(lamport, actor, "list delete"))
        return built


_HEAD: Final[Id] = (0, "")


def _validated_order(entries: Sequence[Any], ident: Any) -> Iterator[_Node]:
    """Decode elements listed in RGA order, checking in one pass that it *is* RGA order.

    The order is a pre-order walk with siblings by descending id, so the parent (ref) of
    each element must be on the stack of the previous element's ancestors, each element
    must be newer than its ref, and each must be older than the sibling before it.
    Past the first marker, collected elements are missing from the tree (an element may
    refer to one), so there only the ids and each element being newer than its ref are.
    """
    stack: list[Id] = [_HEAD]
    last_child: dict[Id, Id] = {}
    seen: set[Id] = set()
    previous: Id | None = None
    after_marker = False
    for entry in entries:
        items = as_list(entry, "list element")
        if len(items) == 1:
            yield _decoded_marker(items[0], ident)
            after_marker, previous = True, None
            continue
        if len(items) not in (3, 4):
            raise DecodeError(f"list element: expected 1, 3 or 4 items, got {len(items)}")
        node_id: Id = ident(items[0], items[1], "list element")
        ref_obj = items[2]
        if ref_obj is None:
            ref: Id | None = None
        elif ref_obj is True:
            if previous is None:
                raise DecodeError("list element: refers to a previous element that is not one")
            ref = previous
        else:
            ref_lamport, ref_actor = as_list(ref_obj, "list element ref", 2)
            ref = ident(ref_lamport, ref_actor, "list element ref")
        parent = _HEAD if ref is None else ref
        if node_id in seen or node_id[0] <= parent[0]:
            raise DecodeError("list: elements are not in RGA order (bad ref or repeated id)")
        if not after_marker:
            # Past a marker, collected elements are missing from the tree: only ids and
            # ages can be checked there.
            while stack and stack[-1] != parent:
                stack.pop()
            if not stack:
                raise DecodeError("list: elements are not in RGA order (bad ref or repeated id)")
            sibling = last_child.get(parent)
            if sibling is not None and not sibling > node_id:
                raise DecodeError("list: siblings are not in descending id order")
            last_child[parent] = node_id
        seen.add(node_id)
        stack.append(node_id)
        previous = node_id
        deleted = len(items) == 3
        stored = None if deleted else wire_value(items[3], "list value")
        yield _Node(node_id, ref, stored, deleted)


def _decoded_marker(flat_obj: object, ident: Any) -> _Node:
    flat = as_list(flat_obj, "list marker")
    if not flat or len(flat) % 2:
        raise DecodeError("list marker: expected lamport, actor pairs")
    records: list[Id] = [ident(flat[k], flat[k + 1], "list marker") for k in range(0, len(flat), 2)]
    if any(not a > b for a, b in itertools.pairwise(records)):
        raise DecodeError("list marker: ids must decrease")
    # A collected id may appear again (a stale full state re-adds an element that was
    # collected here); a marker only orders concurrent inserts, so that is harmless.
    return _marker(records)
