"""The generic CRDT test harness: one spec per type (op generator, how to apply an op),
and histories of several replicas built from those ops, reused by every law test.

Like riak_dt's ``prop_converge(Mod)``, each type supplies only its ops; the laws are
written once (``tests/test_laws.py``) and also run against a deliberately broken type
to show that they can fail (``tests/test_harness_catches_bugs.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from crdtmem.crdt import CRDT, Writer
from crdtmem.gcounter import GCounter
from crdtmem.hlc import HybridLogicalClock
from crdtmem.lwwregister import LWWRegister
from crdtmem.mvregister import MVRegister
from crdtmem.ormap import ORMap
from crdtmem.orset import ORSet
from crdtmem.pncounter import PNCounter
from crdtmem.rga import RGA
from crdtmem.text import TextCRDT

Op = tuple[Any, ...]
ACTORS = ("alice", "bob", "carol")

small_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from(["x", "y", "é", "😀"]),
    st.lists(st.integers(0, 2), max_size=2),
)
hashable_values = st.one_of(st.integers(0, 4), st.sampled_from(["a", "b", "ß"]))
fractions = st.floats(0, 1)
snippets = st.text(alphabet="ab é😀\n", min_size=1, max_size=3)


def _at(fraction: float, length: int) -> int:
    return min(int(fraction * (length + 1)), length)


@dataclass(frozen=True)
class TypeSpec:
    """What the harness needs to know about one CRDT type."""

    kind: type[Any]
    ops: st.SearchStrategy[Op]
    apply: Callable[[Any, Writer, Op], Any | None]  # returns a delta, or None to skip

    @property
    def name(self) -> str:
        return str(self.kind.KIND)


def _rga_apply(state: RGA, writer: Writer, op: Op) -> RGA | None:
    if op[0] == "insert":
        return state.insert_delta(writer, _at(op[1], len(state)), op[2])
    if len(state) == 0:
        return None
    return state.delete_delta(writer, _at(op[1], len(state) - 1))


def _text_apply(state: TextCRDT, writer: Writer, op: Op) -> TextCRDT | None:
    length = len(state)
    if op[0] == "insert":
        return state.insert_delta(writer, _at(op[1], length), op[2])
    if length == 0:
        return None
    start = _at(op[1], length - 1)
    return state.delete_delta(writer, start, min(op[2], length - start))


def _map_apply(state: ORMap, writer: Writer, op: Op) -> ORMap | None:
    if op[0] == "remove":
        return state.remove_delta(writer, op[1])
    _, key, nested_kind, argument = op
    nested: Any = state.field(key, nested_kind.TAG)
    if nested is None:  # not `or`: an empty list or set is falsy but exists
        nested = nested_kind.empty()
    if nested_kind is PNCounter:
        return state.update_delta(writer, key, nested.increment_delta(writer, argument))
    if nested_kind is ORSet:
        return state.update_delta(writer, key, nested.add_delta(writer, argument))
    if nested_kind is RGA:
        return state.update_delta(writer, key, nested.insert_delta(writer, 0, argument))
    if nested_kind is ORMap:
        inner: Any = nested.field("n", PNCounter.TAG)
        if inner is None:
            inner = PNCounter.empty()
        inner_delta = nested.update_delta(writer, "n", inner.increment_delta(writer, argument))
        return state.update_delta(writer, key, inner_delta)
    return state.update_delta(writer, key, nested.set_delta(writer, argument))


map_keys = st.sampled_from(["k1", "k2"])

SPECS: list[TypeSpec] = [
    TypeSpec(
        GCounter,
        st.tuples(st.just("inc"), st.integers(0, 5)),
        lambda s, w, op: s.increment_delta(w, op[1]),
    ),
    TypeSpec(
        PNCounter,
        st.tuples(st.just("inc"), st.integers(-5, 5)),
        lambda s, w, op: s.increment_delta(w, op[1]),
    ),
    TypeSpec(
        LWWRegister,
        st.tuples(st.just("set"), small_values),
        lambda s, w, op: s.set_delta(w, op[1]),
    ),
    TypeSpec(
        MVRegister,
        st.tuples(st.just("set"), small_values),
        lambda s, w, op: s.set_delta(w, op[1]),
    ),
    TypeSpec(
        ORSet,
        st.tuples(st.sampled_from(["add", "add", "discard"]), hashable_values),
        lambda s, w, op: (s.add_delta if op[0] == "add" else s.discard_delta)(w, op[1]),
    ),
    TypeSpec(
        RGA,
        st.one_of(
            st.tuples(st.just("insert"), fractions, small_values),
            st.tuples(st.just("delete"), fractions),
        ),
        _rga_apply,
    ),
    TypeSpec(
        ORMap,
        st.one_of(
            st.tuples(st.just("update"), map_keys, st.just(PNCounter), st.integers(-3, 3)),
            st.tuples(st.just("update"), map_keys, st.just(ORSet), hashable_values),
            st.tuples(st.just("update"), map_keys, st.just(LWWRegister), small_values),
            st.tuples(st.just("update"), map_keys, st.just(ORMap), st.integers(-3, 3)),
            st.tuples(st.just("update"), map_keys, st.just(RGA), small_values),
            st.tuples(st.just("remove"), map_keys),
        ),
        _map_apply,
    ),
    TypeSpec(
        TextCRDT,
        st.one_of(
            st.tuples(st.just("insert"), fractions, snippets),
            st.tuples(st.just("delete"), fractions, st.integers(1, 3)),
        ),
        _text_apply,
    ),
]
SPEC_BY_NAME = {spec.name: spec for spec in SPECS}


@dataclass
class History:
    """Several replicas' states after a random run, and every delta any mutation made."""

    states: list[Any]
    deltas: list[Any] = field(default_factory=list)


# A step: (actor index, op) mutates that actor's state; ("sync", i, j) joins j's state
# into i's, so that later ops see (and supersede) others' effects.
def steps(spec: TypeSpec) -> st.SearchStrategy[list[Any]]:
    mutate = st.tuples(st.integers(0, len(ACTORS) - 1), spec.ops)
    sync = st.tuples(
        st.just("sync"), st.integers(0, len(ACTORS) - 1), st.integers(0, len(ACTORS) - 1)
    )
    return st.lists(st.one_of(mutate, mutate, sync), max_size=25)


def run_history(spec: TypeSpec, plan: list[Any]) -> History:
    """Execute ``plan`` on one replica state per actor; clocks tick coarsely so that
    LWW ties between actors happen."""
    ticks = [0]

    def coarse_time() -> float:
        ticks[0] += 1
        return float(ticks[0] // 4)

    writers = [Writer(actor, HybridLogicalClock(coarse_time)) for actor in ACTORS]
    history = History([spec.kind.empty() for _ in ACTORS])
    for step in plan:
        if step[0] == "sync":
            _, into, source = step
            history.states[into].absorb(history.states[source].copy())
            continue
        index, op = step
        state = history.states[index]
        delta = spec.apply(state, writers[index], op)
        if delta is None:
            continue
        history.deltas.append(delta.copy())
        state.absorb(delta)
    return history


def join_all(kind: type[CRDT], parts: list[Any]) -> Any:
    result = kind.empty()
    for part in parts:
        result.absorb(part)
    return result
