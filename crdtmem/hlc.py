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

from crdtmem.codec import MAX_LOGICAL, MAX_WALL, as_int, as_list

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
        return cls(
            as_int(wall, f"{what} wall", 0, MAX_WALL),
            as_int(logical, f"{what} logical", 0, MAX_LOGICAL),
        )


ZERO: Final = Timestamp(0, 0)
# The largest timestamp peers accept: the one timestamp no clock can issue a successor of.
TOP: Final = Timestamp(MAX_WALL, MAX_LOGICAL)


def successor(stamp: Timestamp) -> Timestamp:
    """The least timestamp above ``stamp`` that peers accept.

    Raises:
        ValueError: ``stamp`` is ``TOP`` (or beyond it): nothing follows.
    """
    wall, logical = stamp
    if logical < MAX_LOGICAL:
        return Timestamp(wall, logical + 1)
    if wall < MAX_WALL:
        # Past the logical bound, move on a microsecond: still above every stamp seen.
        return Timestamp(wall + 1, 0)
    raise ValueError(f"no timestamp follows {tuple(stamp)}: it is the largest peers accept")


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
        if not math.isfinite(seconds) or not 0 <= seconds * MICROS <= MAX_WALL:
            raise ValueError(
                f"the injected clock returned {seconds!r}; expected seconds in "
                f"[0, {MAX_WALL // MICROS}]"
            )
        return int(seconds * MICROS)

    def now(self) -> Timestamp:
        """A timestamp greater than every one issued or observed so far.

        Raises:
            ValueError: the injected clock is out of range, or the last timestamp is
                ``TOP`` (nothing follows it); the clock is left as it was.
        """
        wall = self._read()
        last = self._last
        stamp = Timestamp(wall, 0) if wall > last.wall else successor(last)
        self._last = stamp
        return stamp

    def observe(self, stamp: Timestamp) -> None:
        """Account for a timestamp seen from another replica, so later ones exceed it.

        Raises:
            ValueError: ``stamp`` is ``TOP``, which no timestamp peers accept can follow
                (only a peer forging it makes one); nothing is observed, so the clock
                keeps issuing for everything else.
        """
        if stamp >= TOP:
            raise ValueError(
                f"timestamp {tuple(stamp)} is the largest peers accept: no write can follow it"
            )
        self._last = max(self._last, stamp)
