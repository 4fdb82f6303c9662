"""The one interface every CRDT type implements, and the base class that supplies the
parts common to all of them.

A type is a join-semilattice of states. Mutators never change the state they are called
on: each returns a *delta*, a small state of the same type, and the caller joins it in
(``state.absorb(delta)``). Ignoring the deltas and shipping whole states gives a plain
state-based CRDT; shipping the deltas gives a delta-state CRDT (Almeida et al., 2018).

>>> from crdtmem.gcounter import GCounter
>>> a, b = GCounter.empty(), GCounter.empty()
>>> a.absorb(a.increment_delta(Writer.fixed("a"), 2))
>>> b.absorb(b.increment_delta(Writer.fixed("b"), 3))
>>> a.join(b).value()
5
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Protocol, Self, TypeVar, runtime_checkable

from crdtmem import codec
from crdtmem.errors import DecodeError
from crdtmem.hlc import HybridLogicalClock


@dataclass(frozen=True, slots=True)
class Writer:
    """Who is mutating, and the clock their LWW timestamps come from.

    Mutators take a ``Writer`` rather than reading an identity or the time themselves,
    so that the same code runs under a simulation's virtual clock.
    """

    actor: str
    clock: HybridLogicalClock

    @classmethod
    def fixed(cls, actor: str, seconds: Callable[[], float] | None = None) -> Writer:
        """A writer whose clock reads ``seconds`` (a constant 0 by default: for tests)."""
        return cls(actor, HybridLogicalClock(seconds or (lambda: 0.0)))


@runtime_checkable
class CRDT(Protocol):
    """What every crdtmem type provides; mypy checks each concrete type against it."""

    TAG: ClassVar[int]
    KIND: ClassVar[str]

    @classmethod
    def empty(cls) -> Self: ...

    def value(self) -> Any: ...

    def join(self, other: Self) -> Self: ...

    def absorb(self, other: Self) -> None: ...

    def copy(self) -> Self: ...

    def reset_delta(self, writer: Writer) -> Self: ...

    def to_wire(self) -> Any: ...

    @classmethod
    def from_wire(cls, obj: object, depth: int = 0) -> Self: ...

    def encode(self) -> bytes: ...


class CrdtBase(abc.ABC):
    """Shared behaviour: pure ``join`` from in-place ``absorb``, codec, equality by bytes.

    Equality compares the deterministic encodings, so two states are equal exactly when
    they would be sent as the same bytes (and NaN values compare equal to themselves).
    """

    __slots__ = ()

    TAG: ClassVar[int]
    KIND: ClassVar[str]

    @classmethod
    @abc.abstractmethod
    def empty(cls) -> Self:
        """The bottom of the lattice."""

    @abc.abstractmethod
    def value(self) -> Any:
        """The plain Python value users see."""

    @abc.abstractmethod
    def absorb(self, other: Self) -> None:
        """Join ``other`` into this state in place."""

    @abc.abstractmethod
    def copy(self) -> Self:
        """An independent copy."""

    @abc.abstractmethod
    def reset_delta(self, writer: Writer) -> Self:
        """A delta that undoes every effect this state has observed (for map removal).

        Effects concurrent with the reset survive it: the observed-remove rule.
        """

    @abc.abstractmethod
    def to_wire(self) -> Any:
        """A msgpack-ready, deterministic (sorted) representation."""

    @classmethod
    @abc.abstractmethod
    def from_wire(cls, obj: object, depth: int = 0) -> Self:
        """Rebuild a state from :meth:`to_wire` output; raise ``DecodeError`` otherwise."""

    def join(self, other: Self) -> Self:
        """The least upper bound of two states, as a new state."""
        joined = self.copy()
        joined.absorb(other)
        return joined

    def encode(self) -> bytes:
        """Standalone bytes of this state (header, then msgpack)."""
        return codec.pack([self.TAG, self.to_wire()])

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Inverse of :meth:`encode`."""
        tag, wire = codec.as_list(codec.unpack(data), f"{cls.KIND} state", 2)
        if tag != cls.TAG:
            raise DecodeError(
                f"expected a {cls.KIND} state (tag {cls.TAG}), got tag {codec.brief(tag)}"
            )
        return cls.from_wire(wire)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.encode() == other.encode()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.value()!r})"


# --- the tag table ------------------------------------------------------------------------

# The one table of types by wire tag. Each type module registers its class as it is
# defined, so the table sits below every type and nothing imports upward to find a type;
# ``crdtmem.registry`` imports every type module, so once ``crdtmem`` is imported the
# table is complete.
_TYPES: Final[dict[int, type[CRDT]]] = {}
C = TypeVar("C", bound=type[Any])


def register_type(kind: C) -> C:
    """Class decorator: enter ``kind`` in the tag table under ``kind.TAG``."""
    taken = _TYPES.get(kind.TAG)
    if taken is not None and taken is not kind:
        raise ValueError(f"type tag {kind.TAG} is taken by {taken.__name__}")
    _TYPES[kind.TAG] = kind
    return kind


def crdt_type(tag: int) -> type[CRDT]:
    """The type registered under wire tag ``tag`` (``DecodeError`` if none is)."""
    kind = _TYPES.get(tag)
    if kind is None:
        raise DecodeError(f"unknown CRDT type tag {tag}")
    return kind


def registered_types() -> dict[int, type[CRDT]]:
    """A copy of the tag table."""
    return dict(_TYPES)
