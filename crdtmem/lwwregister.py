"""LWW-register: the write with the greatest timestamp wins.

Timestamps come from the writer's hybrid logical clock, and a writer first observes the
timestamp it is overwriting, so a write made after seeing another always beats it, even
when wall clocks are skewed. Ties between concurrent writes with equal timestamps go to
the greater replica id; the same timestamp and id cannot carry two values unless a peer
forged them, and then the greater encoded value wins so that every replica still agrees.

>>> from crdtmem.crdt import Writer
>>> r = LWWRegister.empty()
>>> r.absorb(r.set_delta(Writer.fixed("a"), "draft v1"))
>>> r.value()
'draft v1'
"""

from __future__ import annotations

from typing import Any, Self, final

from crdtmem.codec import MAX_WALL, as_actor, as_list, checked, value_key, wire_value
from crdtmem.crdt import CrdtBase, Writer, register_type
from crdtmem.hlc import ZERO, Timestamp, successor


@final
@register_type
class LWWRegister(CrdtBase):
    """Last-writer-wins register holding one value (``None`` before any write)."""

    TAG = 3
    KIND = "register"
    __slots__ = ("actor", "stamp", "stored")

    def __init__(self, stamp: Timestamp = ZERO, actor: str = "", stored: object = None) -> None:
        self.stamp = stamp
        self.actor = actor
        self.stored = stored

    @classmethod
    def empty(cls) -> Self:
        return cls()

    def value(self) -> Any:
        return self.stored

    def _rank(self) -> tuple[Timestamp, str]:
        return (self.stamp, self.actor)

    def set_delta(self, writer: Writer, new_value: object) -> LWWRegister:
        """A delta writing ``new_value`` with a timestamp above the current one."""
        new_value = checked(new_value)
        stamp = self.stamp
        if stamp.wall < MAX_WALL:  # the usual case: the clock then issues above it
            writer.clock.observe(stamp)
            return LWWRegister(writer.clock.now(), writer.actor, new_value)
        # A stamp at the last microsecond peers accept (only a forged one gets there): it
        # is followed here without moving the writer's clock up to it, so that writing
        # this register does not leave the clock too few timestamps for every other one.
        # Raises ValueError (nothing changed) at TOP, which nothing follows.
        return LWWRegister(successor(stamp), writer.actor, new_value)

    def absorb(self, other: LWWRegister) -> None:
        mine, theirs = (self.stamp, self.actor), (other.stamp, other.actor)  # (_rank, inlined)
        if theirs > mine or (theirs == mine and value_key(other.stored) > value_key(self.stored)):
            self.stamp, self.actor, self.stored = other.stamp, other.actor, other.stored

    def copy(self) -> Self:
        return type(self)(self.stamp, self.actor, self.stored)

    def reset_delta(self, writer: Writer) -> LWWRegister:
        return self.set_delta(writer, None)

    def to_wire(self) -> list[Any]:
        if not self.actor:
            return []
        return [self.stamp.wall, self.stamp.logical, self.actor, self.stored]

    @classmethod
    def from_wire(cls, obj: object, depth: int = 0) -> Self:
        items = as_list(obj, "register")
        if not items:
            return cls()
        wall, logical, actor, stored = as_list(items, "register", 4)
        stamp = Timestamp.from_wire([wall, logical], "register timestamp")
        return cls(stamp, as_actor(actor, "register writer"), wire_value(stored, "register value"))
