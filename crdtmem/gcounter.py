"""G-counter: a grow-only counter (Shapiro et al., "A comprehensive study of CRDTs", 2011).

Each actor counts its own increments; join takes the per-actor maximum and the value is
the sum. A second vector, the *floor*, supports observed-reset when the counter lives in
an OR-map whose key is removed: the reset raises each actor's floor to the count it has
observed, so increments concurrent with the removal survive it.

>>> from crdtmem.crdt import Writer
>>> c = GCounter.empty()
>>> c.absorb(c.increment_delta(Writer.fixed("a"), 3))
>>> c.value()
3
"""

from __future__ import annotations

from typing import Any, Self, final

from crdtmem.causality import check_vector, join_into
from crdtmem.codec import MAX_COUNT, as_list, sorted_map
from crdtmem.crdt import CrdtBase, Writer, register_type
from crdtmem.errors import ValueOutOfRange


def check_amount(amount: object) -> int:
    """An increment amount: an ``int`` that is not a ``bool``."""
    if type(amount) is not int:
        raise TypeError(f"counters count in int, got {type(amount).__name__}")
    return amount


@final
@register_type
class GCounter(CrdtBase):
    """Grow-only counter. ``increment_delta`` with ``n < 0`` raises ``ValueError``."""

    TAG = 1
    KIND = "gcounter"
    __slots__ = ("counts", "floors")

    def __init__(self, counts: dict[str, int] | None = None, floors: dict[str, int] | None = None):
        self.counts: dict[str, int] = counts if counts is not None else {}
        self.floors: dict[str, int] = floors if floors is not None else {}

    @classmethod
    def empty(cls) -> Self:
        return cls()

    def value(self) -> int:
        if not self.floors:
            return sum(self.counts.values())
        floors = self.floors
        return sum(max(0, count - floors.get(actor, 0)) for actor, count in self.counts.items())

    def increment_delta(self, writer: Writer, amount: int = 1) -> GCounter:
        """A delta adding ``amount`` (>= 0) to ``writer``'s count."""
        if check_amount(amount) < 0:
            raise ValueError(f"a G-counter only grows: increment({amount}) is negative")
        total = self.counts.get(writer.actor, 0) + amount
        if total > MAX_COUNT:
            # (checked before anything changes: peers refuse counts past MAX_COUNT)
            raise ValueOutOfRange(
                f"{writer.actor!r}'s count would exceed {MAX_COUNT}, the largest a peer accepts"
            )
        # Zero is the bottom of each entry: leave it out so that equal states encode equally.
        return GCounter({writer.actor: total} if total else {})

    def absorb(self, other: GCounter) -> None:
        if other.counts:  # (a PN-counter's delta leaves one of its two sides empty)
            join_into(self.counts, other.counts)
        if other.floors:
            join_into(self.floors, other.floors)

    def copy(self) -> Self:
        return type(self)(dict(self.counts), dict(self.floors))

    def reset_delta(self, writer: Writer) -> GCounter:
        return GCounter({}, dict(self.counts))

    def to_wire(self) -> list[Any]:
        counts, floors = self.counts, self.floors
        # (sorted_map inlined for the usual delta, one count and no floor)
        return [
            {**counts} if len(counts) < 2 else sorted_map(counts),
            {**floors} if len(floors) < 2 else sorted_map(floors),
        ]

    @classmethod
    def from_wire(cls, obj: object, depth: int = 0) -> Self:
        counts, floors = as_list(obj, "gcounter", 2)
        return cls(
            check_vector(counts, "gcounter counts", MAX_COUNT),
            check_vector(floors, "gcounter floors", MAX_COUNT),
        )
