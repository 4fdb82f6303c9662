"""Version vectors, dot contexts and the hybrid logical clock."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from crdtmem import Dot, DotContext, HybridLogicalClock, Order, Timestamp, VersionVector
from crdtmem.causality import compare, dominates

vectors = st.dictionaries(st.sampled_from("abc"), st.integers(0, 4))
dots = st.lists(st.tuples(st.sampled_from("ab"), st.integers(1, 12)).map(lambda d: Dot(*d)))


def test_compare_all_four_orders() -> None:
    assert VersionVector({"a": 1}).compare({"a": 1, "b": 0}) is Order.EQUAL
    assert VersionVector({"a": 1}).compare({"a": 2}) is Order.BEFORE
    assert VersionVector({"a": 2, "b": 1}).compare({"a": 2}) is Order.AFTER
    assert VersionVector({"a": 2}).compare({"b": 1}) is Order.CONCURRENT


@given(vectors, vectors)
def test_compare_agrees_with_dominates_and_join(
    left: dict[str, int], right: dict[str, int]
) -> None:
    order = compare(left, right)
    assert (order in (Order.AFTER, Order.EQUAL)) == dominates(left, right)
    assert (order in (Order.BEFORE, Order.EQUAL)) == dominates(right, left)
    joined = VersionVector(left).join(right)
    assert dominates(joined, left) and dominates(joined, right)
    assert VersionVector(left) == VersionVector({k: v for k, v in left.items() if v})


@given(dots, dots)
def test_dot_context_holds_exactly_its_dots_in_canonical_form(
    first: list[Dot], second: list[Dot]
) -> None:
    left, right = DotContext.of(first), DotContext.of(second)
    joined = left.copy()
    joined.absorb(right)
    everything = set(first) | set(second)
    assert set(joined.iter_dots()) == everything
    assert joined == DotContext.of(sorted(everything, reverse=True))  # any order, same form
    for actor, count in joined.compact_vector.items():
        assert all(Dot(actor, n) in joined for n in range(1, count + 1))
        assert Dot(actor, count + 1) not in joined.cloud
    assert joined.dot_count() == len(everything)
    assert DotContext.from_wire(joined.to_wire()) == joined


def test_dot_context_folds_the_cloud_as_gaps_fill() -> None:
    ctx = DotContext.of([Dot("a", 1), Dot("a", 3), Dot("a", 4)])
    assert ctx.compact_vector == {"a": 1} and ctx.cloud == {Dot("a", 3), Dot("a", 4)}
    ctx.add(Dot("a", 2))
    assert ctx.compact_vector == {"a": 4} and not ctx.cloud
    assert ctx.next_dot("a") == Dot("a", 5) and ctx.max_counter("b") == 0


def test_hlc_never_goes_back_and_passes_what_it_observed() -> None:
    readings = iter([10.0, 9.0, 9.0, 11.0, 11.0])
    clock = HybridLogicalClock(lambda: next(readings))
    stamps = [clock.now(), clock.now()]
    clock.observe(Timestamp(50_000_000, 7))  # a peer far ahead
    stamps += [clock.now(), clock.now(), clock.now()]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert stamps[2] > Timestamp(50_000_000, 7)


def test_hlc_rejects_a_broken_clock() -> None:
    import pytest

    clock = HybridLogicalClock(lambda: float("nan"))
    with pytest.raises(ValueError, match="injected clock"):
        clock.now()
