"""PN-counter: a counter that goes both ways, as two G-counters (increments, decrements).

>>> from crdtmem.crdt import Writer
>>> c = PNCounter.empty(); w = Writer.fixed("a")
>>> c.absorb(c.increment_delta(w, 5)); c.absorb(c.increment_delta(w, -2))
>>> c.value()
3
"""

from __future__ import annotations

from typing import Any, Self, final

from crdtmem.codec import as_list
from crdtmem.crdt import CrdtBase, Writer, register_type
from crdtmem.gcounter import GCounter, check_amount


@final
@register_type
class PNCounter(CrdtBase):
    """Positive-negative counter; a negative increment is a decrement."""

    TAG = 2
    KIND = "counter"
    __slots__ = ("negative", "positive")

    def __init__(self, positive: GCounter | None = None, negative: GCounter | None = None):
        self.positive = positive if positive is not None else GCounter()
        self.negative = negative if negative is not None else GCounter()

    @classmethod
    def empty(cls) -> Self:
        return cls()

    def value(self) -> int:
        return self.positive.value() - self.negative.value()

    def increment_delta(self, writer: Writer, amount: int = 1) -> PNCounter:
        """A delta adding ``amount``, which may be negative."""
        if type(amount) is not int:
            check_amount(amount)  # raises TypeError
        if amount >= 0:
            return PNCounter(self.positive.increment_delta(writer, amount), GCounter())
        return PNCounter(GCounter(), self.negative.increment_delta(writer, -amount))

    def absorb(self, other: PNCounter) -> None:
        self.positive.absorb(other.positive)
        self.negative.absorb(other.negative)

    def copy(self) -> Self:
        return type(self)(self.positive.copy(), self.negative.copy())

    def reset_delta(self, writer: Writer) -> PNCounter:
        return PNCounter(self.positive.reset_delta(writer), self.negative.reset_delta(writer))

    def to_wire(self) -> list[Any]:
        return [self.positive.to_wire(), self.negative.to_wire()]

    @classmethod
    def from_wire(cls, obj: object, depth: int = 0) -> Self:
        positive, negative = as_list(obj, "counter", 2)
        return cls(GCounter.from_wire(positive), GCounter.from_wire(negative))
