"""The collector of deleted list elements: which deletes wait for causal stability.

A list (RGA) keeps a deleted element as a tombstone while some update still to come may
refer to it. Once the delete is causally stable (every replica has applied it, and
everything made before it), the element can go. The :class:`Collector` queues deleted
elements by the update that deleted them and hands back those that became stable; the
replica then collects them from its lists. It holds no states, only their paths.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, final

from crdtmem.causality import dominates
from crdtmem.crdt import CRDT
from crdtmem.host import Path
from crdtmem.ormap import ORMap
from crdtmem.rga import RGA

# Type tags of states that may hold lists: only their updates can doom elements.
HOLDS_LISTS: Final = frozenset({RGA.TAG, ORMap.TAG})


@final
class _Interned:
    """Small numbers for list paths, so queues can hold them in integer arrays."""

    __slots__ = ("path_ids", "paths")

    def __init__(self) -> None:
        self.paths: list[Path] = []
        self.path_ids: dict[Path, int] = {}

    def path(self, path: Path) -> int:
        number = self.path_ids.get(path)
        if number is None:
            number = self.path_ids[path] = len(self.paths)
            self.paths.append(path)
        return number


@final
class _Doomed:
    """Deleted list elements of one origin's deletes, in seq order, waiting for those to
    be stable: seqs and path numbers in integer arrays and the element ids (the list's
    own id tuples, shared) in a list, so a queue adds no object for the garbage
    collector to track (a queue of tuples cost a delete-heavy replay a tenth of its
    time in collections)."""

    __slots__ = ("ids", "paths", "seqs", "start")

    def __init__(self) -> None:
        self.seqs, self.paths = array("q"), array("q")
        self.ids: list[Any] = []
        self.start = 0

    def __len__(self) -> int:
        return len(self.seqs) - self.start

    def add(self, interned: _Interned, seq: int, path: Path, ids: list[Any]) -> None:
        number = interned.path(path)
        self.seqs.extend([seq] * len(ids))
        self.paths.extend([number] * len(ids))
        self.ids.extend(ids)

    def pop_upto(self, interned: _Interned, upto: int) -> list[tuple[Path, Any]]:
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


@final
class Collector:
    """Deleted list elements waiting for their deletes to be causally stable."""

    __slots__ = ("_by_origin", "_interned", "_joined")

    def __init__(self) -> None:
        # By the origin of the delete, in its seq order; for joined states, (the version
        # that must be stable, list path, element ids).
        self._by_origin: dict[str, _Doomed] = {}
        self._interned = _Interned()
        self._joined: list[tuple[dict[str, int], Path, list[Any]]] = []

    def add_update(self, top: tuple[str, int], delta: CRDT, origin: str, seq: int) -> None:
        """Queue what update ``seq`` of ``origin`` (``delta`` of top-level field ``top``)
        deletes."""
        queue = self._by_origin.get(origin)
        if queue is None:
            queue = self._by_origin[origin] = _Doomed()
        if isinstance(delta, RGA) and not delta.index:
            # A local delta (the hot path): an insert's orphan, or a delete's pending ids.
            ids = [i for i, n in delta.orphans.items() if n.deleted] if delta.orphans else []
            if delta.pending or ids:
                queue.add(self._interned, seq, (top,), [*delta.pending, *ids])
            return
        for path, ids in deleted_elements(delta, (top,)):
            queue.add(self._interned, seq, path, ids)

    def add_joined(self, version: dict[str, int], joined: Iterable[tuple[Path, CRDT]]) -> None:
        """Queue the deleted elements of states joined in: a list's deletes, once joined
        with a state, may be any of the updates either side had, so they are stable once
        all of ``version`` is."""
        for top, state in joined:
            for path, ids in deleted_elements(state, top):
                self._joined.append((version, path, ids))

    def pop_stable(
        self, stable: Mapping[str, int], forgotten: Mapping[str, int]
    ) -> dict[Path, list[Any]]:
        """Remove and return the element ids, by list path, whose deletes ``stable``
        covers."""
        ready: dict[Path, list[Any]] = {}
        for origin, queue in self._by_origin.items():
            # (a forgotten replica's deletes were all stable when it was forgotten)
            upto = stable.get(origin, forgotten.get(origin, 0))
            for path, node_id in queue.pop_upto(self._interned, upto):
                ready.setdefault(path, []).append(node_id)
        waiting: list[tuple[dict[str, int], Path, list[Any]]] = []
        for entry in self._joined:
            if dominates(stable, entry[0]):
                ready.setdefault(entry[1], []).extend(entry[2])
            else:
                waiting.append(entry)
        self._joined = waiting
        return ready

    def __len__(self) -> int:
        """How many deleted elements wait."""
        return sum(map(len, self._by_origin.values())) + sum(len(e[2]) for e in self._joined)


def deleted_elements(delta: CRDT, path: Path) -> Iterable[tuple[Path, list[Any]]]:
    """The list elements a delta deletes, by the path of their list."""
    if isinstance(delta, RGA):
        ids = delta.deleted_ids()
        if ids:
            yield path, ids
    elif isinstance(delta, ORMap):
        for key, by_tag in delta.fields.items():
            for tag, nested in by_tag.items():
                if tag in HOLDS_LISTS:
                    yield from deleted_elements(nested, (*path, (key, tag)))


def holds_list(delta: CRDT) -> bool:
    """Whether a delta holds list content (a list, or a map with one at any depth).

    Such an update must not be applied again once its elements may have been collected
    (here, or in a state joined since): its insert would bring a collected element back
    on this replica only.
    """
    if isinstance(delta, RGA):
        return True
    if isinstance(delta, ORMap):
        return any(
            tag in HOLDS_LISTS and holds_list(nested)
            for by_tag in delta.fields.values()
            for tag, nested in by_tag.items()
        )
    return False


def holds_collected(state: CRDT) -> bool:
    """Whether a state holds markers of collected list elements (at any depth)."""
    if isinstance(state, RGA):
        return state.markers > 0
    if isinstance(state, ORMap):
        return any(
            tag in HOLDS_LISTS and holds_collected(nested)
            for by_tag in state.fields.values()
            for tag, nested in by_tag.items()
        )
    return False


def list_sizes(fields: Mapping[str, dict[int, CRDT]]) -> dict[str, int]:
    """Over every list in ``fields`` (nested in maps too): ``list_tombstones`` (deleted
    elements still held), ``list_marker_ids`` (ids markers keep for collected ones) and
    ``list_collected`` (collected, ever)."""
    states = list(fields.values())
    return {
        "list_tombstones": _sum_lists(states, RGA.tombstones),
        "list_marker_ids": _sum_lists(states, RGA.marker_ids),
        "list_collected": _sum_lists(states, lambda state: state.collected),
    }


def _sum_lists(states: Iterable[dict[int, CRDT]], measure: Callable[[RGA], int]) -> int:
    total = 0
    for entries in states:
        for state in entries.values():
            if isinstance(state, RGA):
                total += measure(state)
            elif isinstance(state, ORMap):
                total += _sum_lists(state.fields.values(), measure)
    return total
