"""Causality: dots, version vectors and causal contexts.

A *dot* ``(actor, n)`` names the n-th event of one actor. A *version vector* maps each
actor to how many of its events are included. A *causal context* is the set of dots a
state has seen: a compact version vector for the contiguous prefix of each actor plus a
*dot cloud* for the dots seen beyond a gap. The cloud folds into the vector as gaps fill,
so in a quiet system it is empty (Almeida, Shoker and Baquero, "Delta State Replicated
Data Types", 2018, section 5).

>>> ctx = DotContext()
>>> ctx.add(Dot("a", 1)); ctx.add(Dot("a", 3))
>>> Dot("a", 2) in ctx, Dot("a", 3) in ctx
(False, True)
>>> ctx.add(Dot("a", 2)); ctx.compact_vector
{'a': 3}
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final, NamedTuple, final

from crdtmem.codec import MAX_SEQ, as_actor, as_dict, as_int, as_list, sorted_map

_new_tuple: Final = tuple.__new__


class Dot(NamedTuple):
    """The ``counter``-th event of ``actor`` (counters start at 1)."""

    actor: str
    counter: int


class Order(enum.Enum):
    """How two version vectors relate."""

    EQUAL = "equal"
    BEFORE = "before"
    AFTER = "after"
    CONCURRENT = "concurrent"


@final
class VersionVector(Mapping[str, int]):
    """An immutable version vector: actor -> number of that actor's events included.

    Missing actors count as 0, and zero entries are dropped, so equal vectors compare
    equal whatever their construction.

    >>> a = VersionVector({"x": 2}); b = VersionVector({"x": 1, "y": 1})
    >>> a.compare(b)
    <Order.CONCURRENT: 'concurrent'>
    >>> a.join(b)
    VersionVector({'x': 2, 'y': 1})
    """

    __slots__ = ("_entries",)

    def __init__(self, entries: Mapping[str, int] | None = None) -> None:
        self._entries = {k: v for k, v in sorted((entries or {}).items()) if v > 0}

    def __getitem__(self, actor: str) -> int:
        return self._entries.get(actor, 0)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, actor: object) -> bool:
        return actor in self._entries

    def __eq__(self, other: object) -> bool:
        if isinstance(other, VersionVector):
            return self._entries == other._entries
        if isinstance(other, Mapping):
            return self._entries == {k: v for k, v in other.items() if v}
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self._entries.items()))

    def __repr__(self) -> str:
        return f"VersionVector({self._entries!r})"

    def as_dict(self) -> dict[str, int]:
        """A plain, sorted ``dict`` copy."""
        return dict(self._entries)

    def covers(self, dot: Dot) -> bool:
        """True when ``dot`` is included."""
        return dot[1] <= self._entries.get(dot[0], 0)

    def compare(self, other: Mapping[str, int]) -> Order:
        """Whether ``self`` happened before, after, equal to or concurrently with ``other``."""
        return compare(self._entries, other)

    def join(self, other: Mapping[str, int]) -> VersionVector:
        """Pointwise maximum."""
        return VersionVector(join_vectors(self._entries, other))


# The version-vector kernel: plain ``dict[str, int]`` in, plain dicts out, so the hot
# paths (the replica, gossip, counters) pay for no wrapper. Missing entries count as 0.


def join_into(into: dict[str, int], other: Mapping[str, int]) -> None:
    """Raise ``into`` to the pointwise maximum of itself and ``other``, in place."""
    for actor, count in other.items():
        if count > into.get(actor, 0):
            into[actor] = count


def join_vectors(*vectors: Mapping[str, int]) -> dict[str, int]:
    """The pointwise maximum of ``vectors`` (a new dict)."""
    merged: dict[str, int] = {}
    for vector in vectors:
        join_into(merged, vector)
    return merged


def meet_vectors(base: Mapping[str, int], others: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """The pointwise minimum of ``base`` and ``others``, over ``base``'s actors: what
    every one of them includes of what ``base`` includes."""
    lowest = dict(base)
    for vector in others:
        for actor, count in lowest.items():
            theirs = vector.get(actor, 0)
            if theirs < count:
                lowest[actor] = theirs
    return lowest


def compare(left: Mapping[str, int], right: Mapping[str, int]) -> Order:
    """Compare two version vectors given as plain mappings (missing entries are 0)."""
    less = greater = False
    for actor in left.keys() | right.keys():
        mine, theirs = left.get(actor, 0), right.get(actor, 0)
        if mine < theirs:
            less = True
        elif mine > theirs:
            greater = True
        if less and greater:
            return Order.CONCURRENT
    if less:
        return Order.BEFORE
    return Order.AFTER if greater else Order.EQUAL


def dominates(left: Mapping[str, int], right: Mapping[str, int]) -> bool:
    """True when ``left`` includes every event ``right`` includes."""
    return all(left.get(actor, 0) >= count for actor, count in right.items())


@final
class DotContext:
    """The set of dots a state has seen: compact vector plus a cloud of dots past gaps.

    Invariant: no dot in the cloud is covered by the compact vector, and no cloud dot
    could be folded into it, so two contexts holding the same dots are equal.
    """

    __slots__ = ("_cloud", "_vector")

    def __init__(self) -> None:
        self._vector: dict[str, int] = {}
        self._cloud: set[Dot] = set()

    @classmethod
    def of(cls, dots: Iterable[Dot]) -> DotContext:
        """A context holding exactly ``dots``."""
        return cls.adopt({dot for dot in dots if dot[1] > 0})

    @classmethod
    def adopt(cls, dots: set[Dot]) -> DotContext:
        """A context holding exactly ``dots`` (counters >= 1), taking over the set itself:
        the caller must not use it afterwards. What a mutator's delta is built with."""
        ctx = cls.__new__(cls)
        ctx._vector = {}
        ctx._cloud = dots
        # Only an actor whose first dot is here has a contiguous prefix to fold. (A loop,
        # not a comprehension: a delta's context holds a dot or two.)
        starts = []
        for dot in dots:
            if dot[1] == 1:
                starts.append(dot[0])
        for actor in starts:
            ctx._fold(actor)
        return ctx

    @property
    def compact_vector(self) -> dict[str, int]:
        """The contiguous prefix per actor (a copy)."""
        return dict(self._vector)

    @property
    def cloud(self) -> frozenset[Dot]:
        """Dots seen beyond a gap."""
        return frozenset(self._cloud)

    def __contains__(self, dot: object) -> bool:
        if not isinstance(dot, tuple):
            return False
        actor, counter = dot
        return counter <= self._vector.get(actor, 0) or dot in self._cloud

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DotContext):
            return NotImplemented
        return self._vector == other._vector and self._cloud == other._cloud

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"DotContext({self._vector!r}, cloud={sorted(self._cloud)!r})"

    def copy(self) -> DotContext:
        ctx = DotContext()
        ctx._vector = dict(self._vector)
        ctx._cloud = set(self._cloud)
        return ctx

    def is_empty(self) -> bool:
        return not self._vector and not self._cloud

    def dot_count(self) -> int:
        """How many dots this context holds."""
        return sum(self._vector.values()) + len(self._cloud)

    def dots_if_at_most(self, limit: int) -> Iterable[Dot] | None:
        """Every dot held, if there are at most ``limit`` of them; else ``None``. (A
        delta's context is usually a cloud alone, which is returned as is, not copied.)"""
        cloud = self._cloud
        if not self._vector:
            return cloud if len(cloud) <= limit else None
        if sum(self._vector.values()) + len(cloud) > limit:
            return None
        return list(self.iter_dots())

    def iter_dots(self) -> Iterator[Dot]:
        """Every dot held (the vector's prefixes, then the cloud)."""
        for actor, count in self._vector.items():
            for counter in range(1, count + 1):
                yield (actor, counter)  # type: ignore[misc]  # a plain tuple is a Dot
        yield from self._cloud

    def max_counter(self, actor: str) -> int:
        """The highest counter seen for ``actor`` (0 if none)."""
        top = self._vector.get(actor, 0)
        if not self._cloud:
            return top
        for dot in self._cloud:
            if dot[0] == actor and dot[1] > top:
                top = dot[1]
        return top

    def fresh(self, actor: str) -> Dot:
        """The next dot of ``actor`` after every one this context has seen (not
        recorded: mutators leave their state alone and return a delta that holds it)."""
        top = self._vector.get(actor, 0)
        if self._cloud:
            top = self.max_counter(actor)
        if top >= MAX_SEQ:
            raise _exhausted(actor)
        # tuple.__new__ directly: the NamedTuple's own __new__ is a Python-level call.
        dot: Dot = _new_tuple(Dot, (actor, top + 1))
        return dot

    def next_dot(self, actor: str) -> Dot:
        """A dot of ``actor`` never seen by this context, and record it."""
        top = self.max_counter(actor)
        if top >= MAX_SEQ:
            raise _exhausted(actor)
        dot = Dot(actor, top + 1)
        self.add(dot)
        return dot

    def add(self, dot: Dot) -> None:
        """Record one dot."""
        actor, counter = dot
        top = self._vector.get(actor, 0)
        if counter <= top:
            return
        if counter == top + 1:
            self._vector[actor] = counter
            if self._cloud:
                self._fold(actor)
        else:
            self._cloud.add(dot)

    def _fold(self, actor: str) -> None:
        top = self._vector.get(actor, 0)
        cloud = self._cloud
        while (actor, top + 1) in cloud:
            top += 1
            cloud.discard((actor, top))
        if top:
            self._vector[actor] = top

    def absorb(self, other: DotContext) -> None:
        """Join ``other`` into this context in place."""
        for actor, count in other._vector.items():
            if count > self._vector.get(actor, 0):
                self._vector[actor] = count
        if not other._cloud:
            if self._cloud:
                self._settle()
            return
        if not self._cloud:
            # The usual delta: nothing pending here, so each incoming dot either folds
            # into the vector or waits in the cloud (add(), inlined: the hot path).
            vector = self._vector
            for dot in other._cloud:
                actor, counter = dot
                top = vector.get(actor, 0)
                if counter == top + 1:
                    vector[actor] = counter
                    if self._cloud:
                        self._fold(actor)
                elif counter > top:
                    self._cloud.add(dot)
            return
        self._cloud |= other._cloud
        self._settle()

    def _settle(self) -> None:
        """Drop cloud dots the vector now covers and fold in the ones it reaches."""
        vector = self._vector
        self._cloud = {dot for dot in self._cloud if dot[1] > vector.get(dot[0], 0)}
        for actor in {dot[0] for dot in self._cloud}:
            self._fold(actor)

    def to_wire(self) -> list[Any]:
        vector = self._vector
        # A loop, not a comprehension (a call of its own): this runs for every delta.
        cloud, held = [], self._cloud
        for actor, counter in sorted(held) if len(held) > 1 else held:
            cloud.append([actor, counter])
        return [dict(vector) if len(vector) < 2 else sorted_map(vector), cloud]

    @classmethod
    def from_wire(cls, obj: object, what: str = "causal context") -> DotContext:
        vector_obj, cloud_obj = as_list(obj, what, 2)
        ctx = cls()
        for actor, count in as_dict(vector_obj, f"{what} vector").items():
            as_actor(actor, f"{what} actor")
            ctx._vector[actor] = as_int(count, f"{what} count", 1, MAX_SEQ)
        for item in as_list(cloud_obj, f"{what} cloud"):
            actor_obj, counter_obj = as_list(item, f"{what} dot", 2)
            counter = as_int(counter_obj, f"{what} dot", 1, MAX_SEQ)
            ctx.add(Dot(as_actor(actor_obj, f"{what} dot"), counter))
        return ctx


def _exhausted(actor: str) -> ValueError:
    return ValueError(
        f"{actor!r} has used every dot up to {MAX_SEQ} in this field (a peer claimed them): "
        "this field takes no more writes from it"
    )


def dot_from_wire(obj: object, what: str) -> Dot:
    actor, counter = as_list(obj, what, 2)
    return Dot(as_actor(actor, what), as_int(counter, what, 1, MAX_SEQ))


def check_vector(obj: object, what: str, hi: int = MAX_SEQ) -> dict[str, int]:
    """Decode a version vector map, rejecting counts outside ``[1, hi]`` (``hi``: by
    default ``MAX_SEQ``, so that the next sequence number still encodes)."""
    vector = as_dict(obj, what)
    for actor, count in vector.items():
        as_actor(actor, f"{what} actor")
        # (as_int inlined: this runs for every entry of every vector received)
        if type(count) is not int or not 0 < count <= hi:
            as_int(count, f"{what}[{actor!r}]", 1, hi)
    return vector


__all__ = [
    "Dot",
    "DotContext",
    "Order",
    "VersionVector",
    "check_vector",
    "compare",
    "dominates",
    "dot_from_wire",
]
