"""Sequential models: one writer's RGA is a Python list, text a str, OR-set a set, and
counters integers, over thousands of random operations; plus the spec oracle for
concurrent semantics (add-wins, MV-register keeps exactly the non-dominated writes)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdtmem.crdt import Writer
from crdtmem.mvregister import MVRegister
from crdtmem.ormap import ORMap
from crdtmem.orset import ORSet
from crdtmem.pncounter import PNCounter
from crdtmem.rga import MAX_CHUNK, RGA
from crdtmem.text import TextCRDT


@pytest.mark.parametrize("seed", range(4))
def test_rga_matches_a_python_list_over_thousands_of_ops(seed: int) -> None:
    rng = random.Random(seed)
    writer = Writer.fixed("solo")
    rga, model = RGA.empty(), list[int]()
    for step in range(4000):
        roll = rng.random()
        if roll < 0.6 or not model:
            # bias toward typing-like runs so chunks split, plus random jumps
            position = len(model) if rng.random() < 0.3 else rng.randint(0, len(model))
            rga.absorb(rga.insert_delta(writer, position, step))
            model.insert(position, step)
        elif roll < 0.9:
            position = rng.randrange(len(model))
            rga.absorb(rga.delete_delta(writer, position))
            del model[position]
        else:
            position = rng.randrange(len(model))
            assert rga.get(position) == model[position]
            assert rga.get(-1) == model[-1]
        assert len(rga) == len(model)
    assert rga.value() == model
    assert len(rga.chunks) > 1 and max(len(c.nodes) for c in rga.chunks) <= MAX_CHUNK
    assert RGA.decode(rga.encode()).value() == model


def test_rga_index_errors() -> None:
    rga, writer = RGA.empty(), Writer.fixed("a")
    with pytest.raises(IndexError):
        rga.insert_delta(writer, 1, "x")
    with pytest.raises(IndexError):
        rga.delete_delta(writer, 0)
    with pytest.raises(IndexError):
        rga.get(0)
    with pytest.raises(TypeError):
        rga.insert_delta(writer, 0, (1, 2))


@given(st.lists(st.tuples(st.booleans(), st.floats(0, 1), st.text(max_size=4)), max_size=60))
def test_text_matches_a_python_str_with_any_unicode(ops: list[tuple[bool, float, str]]) -> None:
    writer = Writer.fixed("solo")
    text, model = TextCRDT.empty(), ""
    for is_insert, where, chunk in ops:
        position = int(where * len(model))
        if is_insert or not model:
            text.absorb(text.insert_delta(writer, position, chunk))
            model = model[:position] + chunk + model[position:]
        else:
            count = min(len(chunk) + 1, len(model) - position)
            text.absorb(text.delete_delta(writer, position, count))
            model = model[:position] + model[position + count :]
        assert text.value() == model
        assert len(text) == len(model)
    assert TextCRDT.decode(text.encode()).value() == model


@pytest.mark.parametrize("seed", range(2))
def test_text_matches_a_python_str_over_thousands_of_ops(seed: int) -> None:
    rng = random.Random(seed)
    alphabet = "abc dé→😀\n中"
    writer = Writer.fixed("solo")
    text, model = TextCRDT.empty(), ""
    for _ in range(3000):
        if rng.random() < 0.65 or not model:
            position = len(model) if rng.random() < 0.5 else rng.randint(0, len(model))
            chunk = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4)))
            text.absorb(text.insert_delta(writer, position, chunk))
            model = model[:position] + chunk + model[position:]
        else:
            position = rng.randrange(len(model))
            count = rng.randint(1, min(5, len(model) - position))
            text.absorb(text.delete_delta(writer, position, count))
            model = model[:position] + model[position + count :]
        assert len(text) == len(model)
    assert text.value() == model
    assert TextCRDT.decode(text.encode()).value() == model


def test_text_counts_code_points_and_rejects_positions_outside() -> None:
    writer = Writer.fixed("a")
    text = TextCRDT.empty()
    text.absorb(text.insert_delta(writer, 0, "a😀b"))
    text.absorb(text.insert_delta(writer, 2, "é"))
    assert text.value() == "a😀éb"
    with pytest.raises(IndexError):
        text.insert_delta(writer, 5, "x")
    with pytest.raises(IndexError):
        text.delete_delta(writer, 3, 2)
    with pytest.raises(TypeError):
        text.insert_delta(writer, 0, b"bytes")  # type: ignore[arg-type]


def test_orset_and_counter_match_python_models() -> None:
    rng = random.Random(7)
    writer = Writer.fixed("solo")
    orset, counter, model_set, model_count = ORSet.empty(), PNCounter.empty(), set(), 0
    for _ in range(3000):
        element = rng.randint(0, 30)
        if rng.random() < 0.6:
            orset.absorb(orset.add_delta(writer, element))
            model_set.add(element)
        else:
            orset.absorb(orset.discard_delta(writer, element))
            model_set.discard(element)
        amount = rng.randint(-5, 5)
        counter.absorb(counter.increment_delta(writer, amount))
        model_count += amount
        assert (element in orset) == (element in model_set)
    assert orset.value() == frozenset(model_set)
    assert counter.value() == model_count


# --- spec oracle for concurrency -------------------------------------------------------


def test_add_wins_over_a_concurrent_remove() -> None:
    alice, bob = Writer.fixed("alice"), Writer.fixed("bob")
    a = ORSet.empty()
    a.absorb(a.add_delta(alice, "x"))
    b = a.copy()
    a.absorb(a.discard_delta(alice, "x"))
    b.absorb(b.add_delta(bob, "x"))  # concurrent re-add
    assert a.join(b).value() == frozenset({"x"})
    # a remove that has seen the add wins
    seen = a.join(b)
    seen.absorb(seen.discard_delta(alice, "x"))
    assert seen.join(b).value() == frozenset()


@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 9), st.booleans()), max_size=30))
def test_mvregister_keeps_exactly_the_non_dominated_writes(
    plan: list[tuple[int, int, bool]],
) -> None:
    """Oracle: track each write's set of writes it had seen; the visible values are the
    writes no other write has seen."""
    writers = [Writer.fixed(name) for name in ("a", "b", "c")]
    states = [MVRegister.empty() for _ in writers]
    seen: list[set[int]] = [set() for _ in writers]  # ids of writes each replica knows
    overwritten: set[int] = set()
    values: dict[int, int] = {}
    for write_id, (who, value, sync_after) in enumerate(plan):
        overwritten |= seen[who]
        states[who].absorb(states[who].set_delta(writers[who], value))
        values[write_id] = value
        seen[who].add(write_id)
        if sync_after:
            other = (who + 1) % 3
            states[other].absorb(states[who])
            seen[other] |= seen[who]
    everything = MVRegister.empty()
    for state in states:
        everything.absorb(state)
    expected = {values[w] for w in values if w not in overwritten}
    assert set(everything.value()) == expected
    assert len(everything.value()) == len(expected)


def test_map_update_survives_concurrent_remove_and_remove_resets_what_it_saw() -> None:
    alice, bob = Writer.fixed("alice"), Writer.fixed("bob")
    a = ORMap.empty()
    counter = PNCounter.empty()
    a.absorb(a.update_delta(alice, "votes", counter.increment_delta(alice, 5)))
    b = a.copy()
    a.absorb(a.remove_delta(alice, "votes"))
    bob_counter = b.field("votes", PNCounter.TAG)
    assert isinstance(bob_counter, PNCounter)
    b.absorb(b.update_delta(bob, "votes", bob_counter.increment_delta(bob, 1)))
    merged = a.join(b)
    # the key survives (update wins) but the 5 the remover had seen is gone
    assert merged.value() == {"votes": 1}
    assert a.value() == {}
