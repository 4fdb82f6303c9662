"""Add-wins observed-remove set (Bieniusa et al., 2012; delta form from Almeida et al.).

Each add tags the element with a fresh dot; a remove covers the dots it observed, so an
add concurrent with a remove survives it (add wins). Removed elements leave no per-element
tombstone: the causal context alone remembers which dots were seen.

Elements are compared exactly, by their encoding: ``1``, ``1.0`` and ``True`` are three
elements (Python's ``frozenset`` would merge them in ``value()``). Unhashable values
(lists, dicts) cannot be elements.

>>> from crdtmem.crdt import Writer
>>> s = ORSet.empty(); w = Writer.fixed("a")
>>> s.absorb(s.add_delta(w, "x")); s.absorb(s.add_delta(w, "y")); s.absorb(s.discard_delta(w, "x"))
>>> sorted(s.value())
['y']
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final, Self, final

from crdtmem.causality import Dot, DotContext, dot_from_wire
from crdtmem.codec import (
    INT_MAX,
    INT_MIN,
    UNBOUNDED_SCALARS,
    as_list,
    check_value,
    value_key,
    wire_value,
)
from crdtmem.crdt import CrdtBase, Writer, register_type
from crdtmem.dotstore import fresh_dot, join_dots
from crdtmem.errors import DecodeError, UnsupportedValue

_new_orset: Final = object.__new__


def element_key(element: object) -> bytes:
    """Validate a set element and return its canonical key."""
    # The usual element, a valid scalar, is keyed at once.
    if type(element) in UNBOUNDED_SCALARS or (
        type(element) is int and INT_MIN <= element <= INT_MAX
    ):
        return value_key(element)
    check_value(element)
    # What passes check_value is a scalar, a list or a dict; the last two are unhashable.
    if type(element) is list or type(element) is dict:
        raise UnsupportedValue(
            f"set elements must be hashable (None, bool, int, float, str, bytes); "
            f"got {type(element).__name__}"
        )
    return value_key(element)


@final
@register_type
class ORSet(CrdtBase):
    """Add-wins OR-set. ``owners`` indexes live dots so a small delta joins in O(delta)."""

    TAG = 5
    KIND = "set"
    __slots__ = ("context", "dots", "elements", "owners")

    def __init__(self) -> None:
        self.dots: dict[bytes, set[Dot]] = {}
        self.elements: dict[bytes, Any] = {}
        self.owners: dict[Dot, bytes] = {}
        self.context = DotContext()

    @classmethod
    def empty(cls) -> Self:
        return cls()

    @classmethod
    def _build(cls, entries: Iterable[tuple[bytes, Any, Iterable[Dot]]], ctx: DotContext) -> Self:
        built = cls()
        for key, element, dots in entries:
            built._put(key, element, dots)
        built.context = ctx
        return built

    def _put(self, key: bytes, element: Any, dots: Iterable[Dot]) -> None:
        bucket = self.dots.get(key)
        if bucket is None:
            bucket = self.dots[key] = set()
            self.elements[key] = element
        for dot in dots:
            bucket.add(dot)
            self.owners[dot] = key

    def value(self) -> frozenset[Any]:
        return frozenset(self.elements.values())

    def __contains__(self, element: object) -> bool:
        try:
            return value_key(element) in self.dots
        except TypeError:
            return False

    def __len__(self) -> int:
        return len(self.dots)

    def add_delta(self, writer: Writer, element: object) -> ORSet:
        """A delta adding ``element`` (and superseding its earlier dots)."""
        key = element_key(element)
        dot = fresh_dot(self.context, writer.actor)
        observed = self.dots.get(key)
        # Built without __init__ (a call the hot path can do without).
        delta = _new_orset(ORSet)
        delta.dots, delta.elements, delta.owners = {key: {dot}}, {key: element}, {dot: key}
        delta.context = DotContext.adopt({dot, *observed} if observed else {dot})
        return delta

    def discard_delta(self, writer: Writer, element: object) -> ORSet:
        """A delta removing every add of ``element`` observed so far (no-op if absent)."""
        key = element_key(element)
        return self._build([], DotContext.of(self.dots.get(key, ())))

    def absorb(self, other: ORSet) -> None:
        # ``owners`` is the dot store (dot -> element key); ``dots`` indexes it by key.
        owners, theirs = self.owners, other.owners
        dropped, added = join_dots(owners, self.context, theirs, other.context)
        # Added first (no dot is both added and dropped): re-adding an element, the usual
        # delta, then keeps its bucket instead of deleting and rebuilding it.
        buckets = self.dots
        for dot in added:
            key = theirs[dot]
            bucket = buckets.get(key)
            if bucket is None:
                buckets[key] = {dot}
                self.elements[key] = other.elements[key]
            else:
                bucket.add(dot)
            owners[dot] = key
        for dot in dropped:
            key = owners.pop(dot)
            bucket = buckets[key]
            bucket.discard(dot)
            if not bucket:
                del buckets[key], self.elements[key]
        self.context.absorb(other.context)

    def copy(self) -> Self:
        return self._build(
            ((k, self.elements[k], dots) for k, dots in self.dots.items()), self.context.copy()
        )

    def reset_delta(self, writer: Writer) -> ORSet:
        return self._build([], DotContext.of(self.owners))

    def to_wire(self) -> list[Any]:
        elements, buckets = self.elements, self.dots
        items = []
        for key in sorted(buckets) if len(buckets) > 1 else buckets:
            dots = []
            bucket = buckets[key]
            for actor, counter in sorted(bucket) if len(bucket) > 1 else bucket:
                dots.append([actor, counter])
            items.append([elements[key], dots])
        return [items, self.context.to_wire()]

    @classmethod
    def from_wire(cls, obj: object, depth: int = 0) -> Self:
        items, context_obj = as_list(obj, "set", 2)
        context = DotContext.from_wire(context_obj, "set context")
        built = cls()
        for item in as_list(items, "set entries"):
            element_obj, dots_obj = as_list(item, "set entry", 2)
            element = wire_value(element_obj, "set element")
            try:
                key = element_key(element)
            except UnsupportedValue as exc:
                raise DecodeError(f"set element: {exc}") from None
            dots = [dot_from_wire(d, "set dot") for d in as_list(dots_obj, "set dots")]
            if key in built.dots or not dots or len(set(dots)) != len(dots):
                raise DecodeError("set: element repeated or without a dot")
            for dot in dots:
                if dot in built.owners or dot not in context:
                    raise DecodeError(f"set: dot {dot} repeated or outside the context")
            built._put(key, element, dots)
        built.context = context
        return built
