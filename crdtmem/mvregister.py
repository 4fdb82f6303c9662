"""Multi-value register: keeps every write not overwritten by a write that saw it.

A write gets a fresh dot and its context covers every dot the writer had seen, so join
keeps exactly the non-dominated writes (Almeida et al., 2018, figure 5). Values come out
sorted by their canonical encoding, with equal values once, the same on every replica.

>>> from crdtmem.crdt import Writer
>>> a, b = MVRegister.empty(), MVRegister.empty()
>>> a.absorb(a.set_delta(Writer.fixed("a"), "x")); b.absorb(b.set_delta(Writer.fixed("b"), "y"))
>>> a.join(b).value()
['x', 'y']
"""

from __future__ import annotations

from typing import Any, Self, final

from crdtmem.causality import Dot, DotContext, dot_from_wire
from crdtmem.codec import as_list, checked, value_key, wire_value
from crdtmem.crdt import CrdtBase, Writer, register_type
from crdtmem.dotstore import fresh_dot, join_dots
from crdtmem.errors import DecodeError


@final
@register_type
class MVRegister(CrdtBase):
    """Multi-value register; a write replaces exactly the writes it had observed."""

    TAG = 4
    KIND = "mvregister"
    __slots__ = ("context", "entries")

    def __init__(self, entries: dict[Dot, Any] | None = None, context: DotContext | None = None):
        self.entries: dict[Dot, Any] = entries if entries is not None else {}
        self.context = context if context is not None else DotContext()

    @classmethod
    def empty(cls) -> Self:
        return cls()

    def value(self) -> list[Any]:
        unique = {value_key(v): v for v in self.entries.values()}
        return [unique[key] for key in sorted(unique)]

    def set_delta(self, writer: Writer, new_value: object) -> MVRegister:
        """A delta writing ``new_value`` over every value currently visible."""
        new_value = checked(new_value)
        dot = fresh_dot(self.context, writer.actor)
        return MVRegister({dot: new_value}, DotContext.of([*self.entries, dot]))

    def absorb(self, other: MVRegister) -> None:
        entries, theirs = self.entries, other.entries
        dropped, added = join_dots(entries, self.context, theirs, other.context)
        for dot in dropped:
            del entries[dot]
        for dot in added:
            entries[dot] = theirs[dot]
        self.context.absorb(other.context)

    def copy(self) -> Self:
        return type(self)(dict(self.entries), self.context.copy())

    def reset_delta(self, writer: Writer) -> MVRegister:
        return MVRegister({}, DotContext.of(self.entries))

    def to_wire(self) -> list[Any]:
        items = [[dot[0], dot[1], self.entries[dot]] for dot in sorted(self.entries)]
        return [items, self.context.to_wire()]

    @classmethod
    def from_wire(cls, obj: object, depth: int = 0) -> Self:
        items, context_obj = as_list(obj, "mvregister", 2)
        context = DotContext.from_wire(context_obj, "mvregister context")
        entries: dict[Dot, Any] = {}
        for item in as_list(items, "mvregister entries"):
            actor, counter, stored = as_list(item, "mvregister entry", 3)
            dot = dot_from_wire([actor, counter], "mvregister dot")
            if dot in entries or dot not in context:
                raise DecodeError(f"mvregister: dot {dot} repeated or outside its context")
            entries[dot] = wire_value(stored, "mvregister value")
        return cls(entries, context)
