"""A hybrid logical clock (Kulkarni et al., "Logical Physical Clocks", 2014).

LWW registers need timestamps that are comparable across replicas, close to real time,
and that never go backwards or tie on one replica even when the wall clock does. An HLC
gives exactly that: ``(wall, logical)`` pairs where ``wall`` follows the injected
physical clock and ``logical`` breaks ties. The clock is injected so that simulations
can run on virtual time; nothing here reads the system clock.

>>> ticks = iter([1.0, 1.0, 0.5])
>>> clock = HybridLogicalClock(lambda: next(ticks))
>>> [tuple(clock.now()) for _ in range(3)]  # the wall clock stalls, then goes back
[(1000000, 0), (1000000, 1), (1000000, 2)]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final, NamedTuple, final

from crdtmem.codec import INT_MAX, as_int, as_list

MICROS: Final = 1_000_000


class Timestamp(NamedTuple):
    """An HLC reading: microseconds of physical time, and a tie-breaking counter."""

    wall: int
    logical: int

    def to_wire(self) -> list[int]:
        return [self.wall, self.logical]

    @classmethod
    def from_wire(cls, obj: object, what: str = "timestamp") -> Timestamp:
        wall, logical = as_list(obj, what, 2)
        return cls(as_int(wall, f"{what} wall", 0, INT_MAX), as_int(logical, f"{what} logical"))


ZERO: Final = Timestamp(0, 0)


@final
class HybridLogicalClock:
    """Monotonic timestamps from an injected physical clock (seconds, as ``time.time``)."""

    __slots__ = ("_last", "_physical")

    def __init__(self, physical: Callable[[], float]) -> None:
        self._physical = physical
        self._last = ZERO

    @property
    def last(self) -> Timestamp:
        """The latest timestamp issued or observed."""
        return self._last

    def _read(self) -> int:
        seconds = self._physical()
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"the injected clock returned {seconds!r}; expected seconds >= 0")
        return int(seconds * MICROS)

    def now(self) -> Timestamp:
        """A timestamp greater than every one issued or observed so far."""
        wall = self._read()
        last = self._last
        self._last = (
            Timestamp(wall, 0) if wall > last.wall else Timestamp(last.wall, last.logical + 1)
        )
        return self._last

    def observe(self, stamp: Timestamp) -> None:
        """Account for a timestamp seen from another replica, so later ones exceed it."""
        self._last = max(self._last, stamp)
