"""What a field handle needs from the replica it points into: the :class:`FieldHost`
protocol, and the path that names a field.

The handles (``crdtmem.fields``) depend on this protocol, not on ``Replica``, so they sit
below the replica in the import graph and mypy checks every mutator they pass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from crdtmem.crdt import CRDT, Writer

# A field's place: (name, type tag) of the top-level field, then of each nested key.
Path = tuple[tuple[str, int], ...]
S = TypeVar("S", bound=CRDT)
T = TypeVar("T")


class FieldHost(Protocol):
    """The replica, as field handles see it."""

    @property
    def writer(self) -> Writer:
        """Who mutates, with the clock LWW timestamps come from."""
        ...

    def declare_field(self, parent: Path, name: str, kind: type[CRDT]) -> Path:
        """The path of field ``name`` of type ``kind`` under ``parent``
        (``TypeMismatch`` if it exists with another type). Nothing is written: a field
        comes to exist with its first update."""
        ...

    def read_field(self, path: Path, read: Callable[[S], T]) -> T:
        """``read(state)`` of the field at ``path``, under the replica's lock."""
        ...

    def update_field(self, path: Path, mutate: Callable[[S], S]) -> None:
        """Apply ``mutate(state) -> delta`` to the field at ``path`` as one update."""
        ...
