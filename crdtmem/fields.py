"""Field handles: what ``Replica.counter(name)`` and friends return.

A handle is a light pointer (replica, path); every call goes through the replica's lock,
so handles may be kept and used from any thread. Mutators apply locally, record one
update and notify subscribers; reads return plain values, detached from replica state.
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Any

from crdtmem.codec import detach
from crdtmem.gcounter import GCounter
from crdtmem.lwwregister import LWWRegister
from crdtmem.mvregister import MVRegister
from crdtmem.ormap import ORMap
from crdtmem.orset import ORSet
from crdtmem.pncounter import PNCounter
from crdtmem.rga import RGA
from crdtmem.text import TextCRDT

if TYPE_CHECKING:
    from crdtmem.replica import Path, Replica


class Field:
    """Base of all handles: the replica and the path of (name, type tag) pairs."""

    __slots__ = ("_path", "_replica")

    def __init__(self, replica: Replica, path: Path) -> None:
        self._replica = replica
        self._path = path

    @property
    def name(self) -> str:
        """The field's name (its key, for a field nested in a map)."""
        return self._path[-1][0]

    @property
    def value(self) -> Any:
        """The plain value."""
        return detach(self._replica._read(self._path, lambda state: state.value()))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {'.'.join(p for p, _ in self._path)} = {self.value!r}>"


class GCounterField(Field):
    """A grow-only counter."""

    __slots__ = ()

    @property
    def value(self) -> int:
        return self._replica._read(self._path, GCounter.value)

    def increment(self, n: int = 1) -> None:
        """Add ``n`` (``n < 0`` raises ``ValueError``)."""
        writer = self._replica._writer
        self._replica._local_update(self._path, lambda s: s.increment_delta(writer, n))


class CounterField(Field):
    """A PN-counter."""

    __slots__ = ()

    @property
    def value(self) -> int:
        return self._replica._read(self._path, PNCounter.value)

    def increment(self, n: int = 1) -> None:
        """Add ``n`` (may be negative)."""
        writer = self._replica._writer
        self._replica._local_update(self._path, lambda s: s.increment_delta(writer, n))

    def decrement(self, n: int = 1) -> None:
        """Subtract ``n``."""
        if type(n) is not int:
            raise TypeError(f"counters count in int, got {type(n).__name__}")
        self.increment(-n)


class RegisterField(Field):
    """A last-writer-wins register."""

    __slots__ = ()

    def set(self, v: Any) -> None:
        """Write ``v``; the latest write (by hybrid logical clock) wins everywhere."""
        writer = self._replica._writer
        self._replica._local_update(self._path, lambda s: s.set_delta(writer, v))


class MVRegisterField(Field):
    """A multi-value register."""

    __slots__ = ()

    @property
    def values(self) -> list[Any]:
        """Every concurrent value, in the same order on every replica."""
        values: list[Any] = detach(self._replica._read(self._path, MVRegister.value))
        return values

    def set(self, v: Any) -> None:
        """Write ``v`` over every value this replica has seen."""
        writer = self._replica._writer
        self._replica._local_update(self._path, lambda s: s.set_delta(writer, v))


class SetField(Field):
    """An add-wins observed-remove set."""

    __slots__ = ()

    @property
    def value(self) -> frozenset[Any]:
        return self._replica._read(self._path, ORSet.value)

    def add(self, v: Any) -> None:
        """Add ``v``; an add concurrent with a remove wins."""
        writer = self._replica._writer
        self._replica._local_update(self._path, lambda s: s.add_delta(writer, v))

    def discard(self, v: Any) -> None:
        """Remove ``v`` as observed here (absent: no error)."""
        writer = self._replica._writer
        self._replica._local_update(self._path, lambda s: s.discard_delta(writer, v))

    def __contains__(self, v: object) -> bool:
        return self._replica._read(self._path, lambda s: v in s)

    def __len__(self) -> int:
        return self._replica._read(self._path, len)

    def __iter__(self) -> Any:
        return iter(self.value)


class ListField(Field):
    """An RGA list."""

    __slots__ = ()

    def append(self, v: Any) -> None:
        """Add ``v`` at the end."""
        writer = self._replica._writer
        self._replica._local_update(self._path, lambda s: s.insert_delta(writer, len(s), v))

    def insert(self, i: int, v: Any) -> None:
        """Insert ``v`` so that it lands at index ``i`` (0..len; ``IndexError`` otherwise)."""
        writer = self._replica._writer
        self._replica._local_update(self._path, lambda s: s.insert_delta(writer, i, v))

    def delete(self, i: int) -> None:
        """Delete the element at index ``i`` (``IndexError`` when out of range)."""
        writer = self._replica._writer
        self._replica._local_update(self._path, lambda s: s.delete_delta(writer, i))

    def __len__(self) -> int:
        return self._replica._read(self._path, len)

    def __getitem__(self, i: int) -> Any:
        return detach(self._replica._read(self._path, lambda s: s.get(i)))

    def __iter__(self) -> Any:
        return iter(self.value)


class TextField(Field):
    """Collaborative text; positions count code points, as ``str`` does."""

    __slots__ = ()

    @property
    def value(self) -> str:
        return self._replica._read(self._path, TextCRDT.value)

    def insert(self, i: int, s: str) -> None:
        """Insert ``s`` at position ``i`` (``IndexError`` outside 0..len)."""
        writer = self._replica._writer
        self._replica._local_update(self._path, lambda t: t.insert_delta(writer, i, s))

    def delete(self, i: int, n: int) -> None:
        """Delete ``n`` characters from position ``i``."""
        writer = self._replica._writer
        self._replica._local_update(self._path, lambda t: t.delete_delta(writer, i, n))

    def __len__(self) -> int:
        return self._replica._read(self._path, len)

    def __str__(self) -> str:
        return self.value


class MapField(Field):
    """An OR-map of nested fields: ``m.counter("k")``, ``m.list("k")``, ..."""

    __slots__ = ()

    def _nested(self, key: str, kind: type[Any]) -> Path:
        return self._replica._declare(self._path, key, kind)

    def gcounter(self, key: str) -> GCounterField:
        return GCounterField(self._replica, self._nested(key, GCounter))

    def counter(self, key: str) -> CounterField:
        return CounterField(self._replica, self._nested(key, PNCounter))

    def register(self, key: str) -> RegisterField:
        return RegisterField(self._replica, self._nested(key, LWWRegister))

    def mvregister(self, key: str) -> MVRegisterField:
        return MVRegisterField(self._replica, self._nested(key, MVRegister))

    def set(self, key: str) -> SetField:
        return SetField(self._replica, self._nested(key, ORSet))

    def list(self, key: str) -> ListField:
        return ListField(self._replica, self._nested(key, RGA))

    def map(self, key: str) -> MapField:
        return MapField(self._replica, self._nested(key, ORMap))

    def text(self, key: str) -> TextField:
        return TextField(self._replica, self._nested(key, TextCRDT))

    def remove(self, key: str) -> None:
        """Remove ``key``: what this replica saw of it is reset; concurrent updates survive."""
        writer = self._replica._writer
        self._replica._local_update(self._path, lambda m: m.remove_delta(writer, key))

    def keys(self) -> builtins.list[str]:
        """The present keys, sorted."""
        return list(self.value)

    def __contains__(self, key: object) -> bool:
        return self._replica._read(self._path, lambda m: key in m)

    def __len__(self) -> int:
        return len(self.keys())
