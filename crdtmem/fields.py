"""Field handles: what ``Replica.counter(name)`` and friends return.

A handle is a light pointer (host, path) into a replica, which it sees only through the
:class:`~crdtmem.host.FieldHost` protocol; every call goes through the replica's lock, so
handles may be kept and used from any thread. Mutators apply locally, record one update
and notify subscribers; reads return plain values, detached from replica state.

Each handle is generic over its state type (``Field[S]``), so mypy checks the mutator
every method passes. A handle also restores itself: :meth:`Field.restore_to` makes the
updates that bring its value back to a past state (``Replica.restore``).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import Any, ClassVar, Final, Generic, Self, TypeVar

from crdtmem import codec
from crdtmem.codec import detach
from crdtmem.crdt import CRDT, CrdtBase
from crdtmem.gcounter import GCounter
from crdtmem.host import FieldHost, Path
from crdtmem.lwwregister import LWWRegister
from crdtmem.mvregister import MVRegister
from crdtmem.ormap import ORMap
from crdtmem.orset import ORSet
from crdtmem.pncounter import PNCounter
from crdtmem.rga import RGA
from crdtmem.text import TextCRDT

# Bound by the base class, not the CRDT protocol: mypy (2.4) wrongly rejects types
# checked against the protocol as the type arguments of a base class.
S = TypeVar("S", bound=CrdtBase)
T = TypeVar("T")


class Field(Generic[S]):
    """Base of all handles: the host replica and the path of (name, type tag) pairs."""

    __slots__ = ("_host", "_path", "_update", "_writer")
    TYPE: ClassVar[type[CRDT]]

    def __init__(self, host: FieldHost, path: Path) -> None:
        self._host = host
        self._path = path
        # Bound once here, not looked up on every write: mutators are the hot path.
        self._writer = host.writer
        self._update: Callable[[Path, Callable[[S], S]], None] = host.update_field

    @classmethod
    def declare(cls, host: FieldHost, parent: Path, name: str) -> Self:
        """The handle of field ``name`` under ``parent`` (created on first use)."""
        return cls(host, host.declare_field(parent, name, cls.TYPE))

    @property
    def name(self) -> str:
        """The field's name (its key, for a field nested in a map)."""
        return self._path[-1][0]

    @property
    def value(self) -> Any:
        """The plain value."""
        return detach(self._read(lambda state: state.value()))

    def _read(self, read: Callable[[S], T]) -> T:
        return self._host.read_field(self._path, read)

    def restore_to(self, past: S | None) -> builtins.list[str]:
        """Make updates that bring the value back to that of ``past`` (``None``: the
        empty state); returns the names of fields that could not be restored exactly."""
        raise NotImplementedError

    def _past_value(self, past: CRDT | None) -> Any:
        return (past if past is not None else self.TYPE.empty()).value()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {'.'.join(p for p, _ in self._path)} = {self.value!r}>"


class GCounterField(Field[GCounter]):
    """A grow-only counter."""

    __slots__ = ()
    TYPE = GCounter

    @property
    def value(self) -> int:
        return self._host.read_field(self._path, GCounter.value)

    def increment(self, n: int = 1) -> None:
        """Add ``n`` (``n < 0`` raises ``ValueError``)."""
        writer = self._writer
        self._update(self._path, lambda s: s.increment_delta(writer, n))

    def restore_to(self, past: GCounter | None) -> builtins.list[str]:
        # A grow-only counter cannot go back.
        return [] if self.value == self._past_value(past) else [self.name]


class CounterField(Field[PNCounter]):
    """A PN-counter."""

    __slots__ = ()
    TYPE = PNCounter

    @property
    def value(self) -> int:
        return self._host.read_field(self._path, PNCounter.value)

    def increment(self, n: int = 1) -> None:
        """Add ``n`` (may be negative)."""
        writer = self._writer
        self._update(self._path, lambda s: s.increment_delta(writer, n))

    def decrement(self, n: int = 1) -> None:
        """Subtract ``n``."""
        if type(n) is not int:
            raise TypeError(f"counters count in int, got {type(n).__name__}")
        self.increment(-n)

    def restore_to(self, past: PNCounter | None) -> builtins.list[str]:
        current, target = self.value, self._past_value(past)
        if current != target:
            self.increment(target - current)
        return []


class RegisterField(Field[LWWRegister]):
    """A last-writer-wins register."""

    __slots__ = ()
    TYPE = LWWRegister

    def set(self, v: Any) -> None:
        """Write ``v``; the latest write (by hybrid logical clock) wins everywhere."""
        writer = self._writer
        self._update(self._path, lambda s: s.set_delta(writer, v))

    def restore_to(self, past: LWWRegister | None) -> builtins.list[str]:
        target = self._past_value(past)
        if self.value != target:
            self.set(target)
        return []


class MVRegisterField(Field[MVRegister]):
    """A multi-value register."""

    __slots__ = ()
    TYPE = MVRegister

    @property
    def values(self) -> builtins.list[Any]:
        """Every concurrent value, in the same order on every replica."""
        values: builtins.list[Any] = detach(self._host.read_field(self._path, MVRegister.value))
        return values

    def set(self, v: Any) -> None:
        """Write ``v`` over every value this replica has seen."""
        writer = self._writer
        self._update(self._path, lambda s: s.set_delta(writer, v))

    def restore_to(self, past: MVRegister | None) -> builtins.list[str]:
        target = self._past_value(past)
        if self.values == target:
            return []
        self.set(target[0] if target else None)
        # Concurrent values cannot be recreated (one is kept), nor can the register be
        # emptied (it holds None).
        return [] if len(target) == 1 else [self.name]


class SetField(Field[ORSet]):
    """An add-wins observed-remove set."""

    __slots__ = ()
    TYPE = ORSet

    @property
    def value(self) -> frozenset[Any]:
        return self._host.read_field(self._path, ORSet.value)

    def add(self, v: Any) -> None:
        """Add ``v``; an add concurrent with a remove wins."""
        writer = self._writer
        self._update(self._path, lambda s: s.add_delta(writer, v))

    def discard(self, v: Any) -> None:
        """Remove ``v`` as observed here (absent: no error)."""
        writer = self._writer
        self._update(self._path, lambda s: s.discard_delta(writer, v))

    def __contains__(self, v: object) -> bool:
        return self._read(lambda s: v in s)

    def __len__(self) -> int:
        return self._read(len)

    def __iter__(self) -> Any:
        return iter(self.value)

    def restore_to(self, past: ORSet | None) -> builtins.list[str]:
        current, target = self.value, self._past_value(past)
        for element in sorted(target - current, key=codec.value_key):
            self.add(element)
        for element in sorted(current - target, key=codec.value_key):
            self.discard(element)
        return []


class ListField(Field[RGA]):
    """An RGA list."""

    __slots__ = ()
    TYPE = RGA

    def append(self, v: Any) -> None:
        """Add ``v`` at the end."""
        writer = self._writer
        self._update(self._path, lambda s: s.insert_delta(writer, len(s), v))

    def insert(self, i: int, v: Any) -> None:
        """Insert ``v`` so that it lands at index ``i`` (0..len; ``IndexError`` otherwise)."""
        writer = self._writer
        self._update(self._path, lambda s: s.insert_delta(writer, i, v))

    def delete(self, i: int) -> None:
        """Delete the element at index ``i`` (``IndexError`` when out of range)."""
        writer = self._writer
        self._update(self._path, lambda s: s.delete_delta(writer, i))

    def __len__(self) -> int:
        return self._read(len)

    def __getitem__(self, i: int) -> Any:
        return detach(self._read(lambda s: s.get(i)))

    def __iter__(self) -> Any:
        return iter(self.value)

    def restore_to(self, past: RGA | None) -> builtins.list[str]:
        current, target = self.value, self._past_value(past)
        if current != target:
            for _ in range(len(current)):
                self.delete(0)
            for item in target:
                self.append(item)
        return []


class TextField(Field[TextCRDT]):
    """Collaborative text; positions count code points, as ``str`` does."""

    __slots__ = ()
    TYPE = TextCRDT

    @property
    def value(self) -> str:
        return self._host.read_field(self._path, TextCRDT.value)

    def insert(self, i: int, s: str) -> None:
        """Insert ``s`` at position ``i`` (``IndexError`` outside 0..len)."""
        writer = self._writer
        self._update(self._path, lambda t: t.insert_delta(writer, i, s))

    def delete(self, i: int, n: int) -> None:
        """Delete ``n`` characters from position ``i``."""
        writer = self._writer
        self._update(self._path, lambda t: t.delete_delta(writer, i, n))

    def __len__(self) -> int:
        return self._read(len)

    def __str__(self) -> str:
        return self.value

    def restore_to(self, past: TextCRDT | None) -> builtins.list[str]:
        current, target = self.value, self._past_value(past)
        if current != target:
            if current:
                self.delete(0, len(current))
            if target:
                self.insert(0, target)
        return []


class MapField(Field[ORMap]):
    """An OR-map of nested fields: ``m.counter("k")``, ``m.list("k")``, ..."""

    __slots__ = ()
    TYPE = ORMap

    def gcounter(self, key: str) -> GCounterField:
        return GCounterField.declare(self._host, self._path, key)

    def counter(self, key: str) -> CounterField:
        return CounterField.declare(self._host, self._path, key)

    def register(self, key: str) -> RegisterField:
        return RegisterField.declare(self._host, self._path, key)

    def mvregister(self, key: str) -> MVRegisterField:
        return MVRegisterField.declare(self._host, self._path, key)

    def set(self, key: str) -> SetField:
        return SetField.declare(self._host, self._path, key)

    def list(self, key: str) -> ListField:
        return ListField.declare(self._host, self._path, key)

    def map(self, key: str) -> MapField:
        return MapField.declare(self._host, self._path, key)

    def text(self, key: str) -> TextField:
        return TextField.declare(self._host, self._path, key)

    def remove(self, key: str) -> None:
        """Remove ``key``: what this replica saw of it is reset; concurrent updates survive."""
        writer = self._writer
        self._update(self._path, lambda m: m.remove_delta(writer, key))

    def keys(self) -> builtins.list[str]:
        """The present keys, sorted."""
        return list(self.value)

    def __contains__(self, key: object) -> bool:
        return self._read(lambda m: key in m)

    def __len__(self) -> int:
        return len(self.keys())

    def restore_to(self, past: ORMap | None) -> builtins.list[str]:
        """Remove the keys that were not there, and restore the others."""
        current, target = self.value, self._past_value(past)
        if current == target:
            return []
        present = set(target)
        skipped: builtins.list[str] = []
        for key in sorted(set(current) - present):
            self.remove(key)
        past_fields = past.fields if past is not None else {}
        for key in sorted(present):
            entries = past_fields[key]
            tag = min(entries)
            nested = handle_class(tag).declare(self._host, self._path, key)
            skipped += nested.restore_to(entries[tag])
        return skipped


# The handle class for each state type, by type tag.
HANDLES: Final[dict[int, type[Field[Any]]]] = {
    handle.TYPE.TAG: handle
    for handle in (
        GCounterField,
        CounterField,
        RegisterField,
        MVRegisterField,
        SetField,
        ListField,
        MapField,
        TextField,
    )
}


def handle_class(tag: int) -> type[Field[Any]]:
    """The handle class for states of type tag ``tag``."""
    return HANDLES[tag]
