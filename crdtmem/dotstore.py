"""The dot kernel shared by every dot-based type: one join rule for dot stores.

A *dot store* maps dots to payloads (a value, an element key) and comes with the causal
context of everything its replica has seen. Joining two of them keeps a dot when both
hold it, or when one holds it and the other has not seen it; a dot one side holds and
the other has seen but no longer holds was removed there, and goes. The OR-set, the
MV-register and, through its key set, the OR-map all join this way (Almeida, Shoker and
Baquero, 2018, section 7; Baquero's ``dotkernel``).

>>> from crdtmem.causality import Dot, DotContext
>>> mine = {Dot("a", 1): "x"}; theirs = {Dot("b", 1): "y"}
>>> join_dots(mine, DotContext.of(mine), theirs, DotContext.of([Dot("a", 1), Dot("b", 1)]))
([Dot(actor='a', counter=1)], [Dot(actor='b', counter=1)])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final, TypeVar

from crdtmem.causality import Dot, DotContext

V = TypeVar("V")


def join_dots(
    mine: Mapping[Dot, V],
    my_context: DotContext,
    theirs: Mapping[Dot, V],
    their_context: DotContext,
) -> tuple[list[Dot], list[Dot]]:
    """What joining ``theirs`` into ``mine`` changes: ``(dropped, added)``, the dots of
    ``mine`` to remove and the dots of ``theirs`` to add. Changes nothing itself; the
    caller applies both, then absorbs ``their_context`` into its own.

    Runs in time proportional to the smaller of ``mine`` and ``their_context``, plus
    ``theirs``, so a small delta joins into a large store in time proportional to the
    delta.
    """
    # Plain loops, not comprehensions: a delta holds a dot or two, and a comprehension
    # costs a function call of its own.
    dropped: list[Dot] = []
    few = their_context.dots_if_at_most(len(mine))
    if few is not None:
        for dot in few:
            if dot in mine and dot not in theirs:
                dropped.append(dot)
    else:
        seen = their_context.__contains__
        dropped = [d for d in mine if d not in theirs and seen(d)]
    added: list[Dot] = []
    known = my_context.__contains__
    for dot in theirs:
        if dot not in mine and not known(dot):
            added.append(dot)
    return dropped, added


# The next dot of an actor after every one a context has seen, not recorded: mutators
# leave their state alone and return a delta that holds it. (The method itself, not a
# function calling it: it runs on every write.)
fresh_dot: Final[Callable[[DotContext, str], Dot]] = DotContext.fresh
