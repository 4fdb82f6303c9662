"""The law harness must fail on a broken type; otherwise its passes prove nothing."""

from __future__ import annotations

from typing import Any, Self

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdtmem.codec import as_dict
from crdtmem.crdt import CrdtBase, Writer
from tests.harness import TypeSpec, join_all, run_history, steps


class FoundError(Exception):
    """Raised inside a probe when the property under test does not hold."""


class LastWriteJoin(CrdtBase):
    """Broken on purpose: join keeps the *incoming* value per actor (not the max), so it
    is neither commutative nor does it survive reordered deltas."""

    TAG = 99
    KIND = "broken"
    __slots__ = ("counts",)

    def __init__(self, counts: dict[str, int] | None = None) -> None:
        self.counts = counts or {}

    @classmethod
    def empty(cls) -> Self:
        return cls()

    def value(self) -> int:
        return sum(self.counts.values())

    def absorb(self, other: LastWriteJoin) -> None:
        self.counts.update(other.counts)

    def copy(self) -> Self:
        return type(self)(dict(self.counts))

    def reset_delta(self, writer: Writer) -> Self:
        return type(self)()

    def to_wire(self) -> Any:
        return dict(sorted(self.counts.items()))

    @classmethod
    def from_wire(cls, obj: object, depth: int = 0) -> Self:
        return cls(dict(as_dict(obj, "broken")))

    def increment_delta(self, writer: Writer, amount: int) -> LastWriteJoin:
        return LastWriteJoin({writer.actor: self.counts.get(writer.actor, 0) + amount})


BROKEN = TypeSpec(
    LastWriteJoin,
    st.tuples(st.just("inc"), st.integers(1, 3)),
    lambda s, w, op: s.increment_delta(w, op[1]),
)


def _fails_somewhere(check: Any) -> bool:
    @settings(max_examples=500, database=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def probe(data: st.DataObject) -> None:
        history = run_history(BROKEN, data.draw(steps(BROKEN)))
        if not check(history, data):
            raise FoundError

    try:
        probe()
    except FoundError:
        return True
    return False


def test_harness_finds_the_non_commutative_join() -> None:
    def commutes(history: Any, _: Any) -> bool:
        a, b, _c = history.states
        return bool(a.join(b) == b.join(a))

    assert _fails_somewhere(commutes)


def test_harness_finds_that_reordered_deltas_diverge() -> None:
    def order_free(history: Any, data: st.DataObject) -> bool:
        shuffled = data.draw(st.permutations(history.deltas))
        return bool(join_all(LastWriteJoin, shuffled) == join_all(LastWriteJoin, history.deltas))

    assert _fails_somewhere(order_free)


def test_a_correct_type_passes_the_same_probe() -> None:
    from tests.harness import SPEC_BY_NAME

    spec = SPEC_BY_NAME["gcounter"]

    @settings(max_examples=100, database=None)
    @given(data=st.data())
    def probe(data: st.DataObject) -> None:
        a, b, _ = run_history(spec, data.draw(steps(spec))).states
        assert a.join(b) == b.join(a)

    probe()


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__])
