"""CrdtmemStore: a contract test against LangGraph's InMemoryStore and SqliteStore (the
same ops give the same results, modulo the documented differences), TTL on an injected
clock, the search order, vector search, and replicated cases (two replicas, writes on
both, merged, the same results on both)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph
from langgraph.store.base import (
    BaseStore,
    GetOp,
    IndexConfig,
    Item,
    ListNamespacesOp,
    MatchCondition,
    PutOp,
    Result,
    SearchOp,
)
from langgraph.store.memory import InMemoryStore
from langgraph.store.sqlite import SqliteStore

from crdtmem import Replica
from crdtmem.integrations.langgraph import CrdtmemStore

DIMS = 8


def embed(texts: Sequence[str]) -> list[list[float]]:
    """A deterministic embedding: counts of a..g, and a constant (never all zero)."""
    return [[float(t.count(c)) for c in "abcdefg"] + [1.0] for t in texts]


async def aembed(texts: Sequence[str]) -> list[list[float]]:
    return embed(texts)


class Clock:
    """An injected clock, in seconds."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float = 1.0) -> None:
        self.now += seconds


@pytest.fixture
def sqlite_store() -> Iterator[SqliteStore]:
    conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
    store = SqliteStore(conn)
    store.setup()
    yield store
    conn.close()


# --- the contract: the same ops on three stores ------------------------------------------

ITEMS: list[tuple[tuple[str, ...], str, dict[str, Any]]] = [
    (("users", "alice"), "prefs", {"theme": "dark", "score": 5, "lang": "en", "vip": True}),
    (("users", "alice"), "notes", {"theme": "light", "score": 2.5, "lang": "fr", "vip": False}),
    (("users", "bob"), "prefs", {"theme": "dark", "score": 9, "lang": "de", "vip": False}),
    (("docs", "v1", "draft"), "intro", {"theme": "none", "score": 0, "lang": "en", "vip": True}),
    (("docs", "v2", "draft"), "intro", {"theme": "dark", "score": 7, "lang": "en", "vip": True}),
    (("docs", "v2"), "final", {"theme": "light", "score": 3, "lang": "en", "vip": False}),
    (("docs", "v2"), "index", {"theme": "none", "score": 1, "lang": "de", "vip": False}),
]

FILTERS: list[dict[str, Any]] = [
    {"theme": "dark"},
    {"theme": {"$eq": "light"}},
    {"theme": {"$ne": "dark"}},
    {"score": {"$gt": 3}},
    {"score": {"$gte": 3}},
    {"score": {"$lt": 3}},
    {"score": {"$lte": 2.5}},
    {"score": {"$gt": 2, "$lt": 8}},
    {"lang": "en", "score": {"$gte": 3}},
    {"vip": True},
    {"vip": False, "theme": "light"},
    {"score": 5},
]

PREFIXES: list[tuple[str, ...]] = [(), ("users",), ("users", "alice"), ("docs", "v2"), ("nope",)]

LISTINGS: list[ListNamespacesOp] = [
    ListNamespacesOp(),
    ListNamespacesOp(match_conditions=(MatchCondition("prefix", ("docs",)),)),
    ListNamespacesOp(match_conditions=(MatchCondition("suffix", ("draft",)),)),
    ListNamespacesOp(match_conditions=(MatchCondition("prefix", ("docs", "*", "draft")),)),
    ListNamespacesOp(match_conditions=(MatchCondition("suffix", ("*", "alice")),)),
    ListNamespacesOp(max_depth=1),
    ListNamespacesOp(max_depth=2),
    ListNamespacesOp(limit=2, offset=1),
    ListNamespacesOp(
        match_conditions=(
            MatchCondition("prefix", ("docs",)),
            MatchCondition("suffix", ("draft",)),
        ),
        max_depth=2,
    ),
]


def normal(result: Result) -> Any:
    """A result without what the stores legitimately differ in: timestamps, and the
    order of unranked search results (each store documents its own)."""
    if isinstance(result, Item):
        return (result.namespace, result.key, result.value)
    if isinstance(result, list) and result and isinstance(result[0], Item):
        return sorted(normal(item) for item in result)
    return result


def script(store: BaseStore, *, empty_a_namespace: bool) -> list[Any]:
    """Puts, updates, deletes, then every kind of read; the normalised results.

    ``empty_a_namespace``: delete the only item of a namespace. InMemoryStore goes on
    listing such a namespace (it keeps an empty dict for it); SqliteStore and
    CrdtmemStore list namespaces that hold items."""
    out: list[Any] = []
    store.batch([PutOp(ns, key, value) for ns, key, value in ITEMS])
    # An update, a delete, a delete of what is not there, and a put-then-delete.
    store.put(("users", "bob"), "prefs", {"theme": "dark", "score": 8, "lang": "de", "vip": 0})
    store.delete(("docs", "v2"), "final")
    store.delete(("docs", "v2"), "never")
    store.put(("tmp",), "x", {"theme": "dark", "score": 4, "lang": "en", "vip": True})
    if empty_a_namespace:
        store.delete(("tmp",), "x")
    for ns, key, _ in ITEMS:
        out.append(normal(store.get(ns, key)))
    for prefix in PREFIXES:
        out.append(normal(store.batch([SearchOp(prefix, limit=100)])[0]))
    for wanted in FILTERS:
        out.append(normal(store.batch([SearchOp((), wanted, limit=100)])[0]))
    for listing in LISTINGS:
        out.append(store.batch([listing])[0])
    # Reads in a batch see the state before the batch's puts; the last put wins.
    out.append(
        [
            normal(r)
            for r in store.batch(
                [
                    PutOp(("users", "carol"), "prefs", {"theme": "one"}),
                    ListNamespacesOp(match_conditions=(MatchCondition("prefix", ("users",)),)),
                    GetOp(("users", "carol"), "prefs"),  # (InMemoryStore lists it after this)
                    PutOp(("users", "carol"), "prefs", {"theme": "two"}),
                ]
            )
        ]
    )
    out.append(normal(store.get(("users", "carol"), "prefs")))
    return out


def test_contract_same_results_as_langgraphs_stores(sqlite_store: SqliteStore) -> None:
    for empty in (False, True):
        ours = script(CrdtmemStore(Replica("contract"), clock=Clock()), empty_a_namespace=empty)
        if not empty:
            assert ours == script(InMemoryStore(), empty_a_namespace=empty)
            assert any(isinstance(r, list) and ("tmp",) in r for r in ours)
        else:
            assert ours == script(sqlite_store, empty_a_namespace=empty)
            assert not any(isinstance(r, list) and ("tmp",) in r for r in ours)
        # A sanity check that the script reads something.
        assert ours[0] == (("users", "alice"), "prefs", ITEMS[0][2])


def test_contract_vector_search_ranks_as_inmemory_store() -> None:
    index: Any = {"dims": DIMS, "embed": embed, "fields": ["text"]}
    docs = {
        "a": "aaa bbb",
        "b": "bbb ccc",
        "c": "ggg fff",
        "d": "abcdefg",
        "e": "cab",
    }
    ours = CrdtmemStore(Replica("vec"), index=index, clock=Clock())
    theirs = InMemoryStore(index=index)
    for store in (ours, theirs):
        for key, text in docs.items():
            store.put(("docs",), key, {"text": text, "n": len(text)})
        store.put(("docs",), "unindexed", {"text": "aaaa"}, index=False)
    for query in ("aab", "fg", "c", "zzz"):
        for offset in (0, 1):
            got = ours.search(("docs",), query=query, limit=4, offset=offset)
            want = theirs.search(("docs",), query=query, limit=4, offset=offset)
            assert [(i.key, round(i.score or 0, 9)) for i in got] == [
                (i.key, round(i.score or 0, 9)) for i in want
            ]
    # A filter applies before ranking; an unindexed item comes after the ranked ones.
    got = ours.search(("docs",), query="aab", filter={"n": {"$lt": 4}}, limit=10)
    assert [i.key for i in got] == ["e"]
    everything = ours.search(("docs",), query="aab", limit=10)
    assert everything[-1].key == "unindexed" and everything[-1].score is None


@pytest.mark.asyncio
async def test_abatch_embeds_with_the_async_embedder() -> None:
    index: IndexConfig = {"dims": DIMS, "embed": aembed}
    store = CrdtmemStore(Replica("async"), index=index, clock=Clock())
    await store.aput(("docs",), "a", {"text": "aaa"})
    await store.aput(("docs",), "g", {"text": "ggg"})
    found = await store.asearch(("docs",), query="gg")
    assert [i.key for i in found] == ["g", "a"]
    assert (await store.aget(("docs",), "a")) is not None
    assert await store.alist_namespaces() == [("docs",)]


def test_vectors_of_the_wrong_size_are_refused() -> None:
    index: IndexConfig = {"dims": 3, "embed": embed}
    store = CrdtmemStore(Replica("dims"), index=index)
    with pytest.raises(ValueError, match="dimensions"):
        store.put(("docs",), "a", {"text": "aaa"})


# --- what CrdtmemStore defines where the references differ ---------------------------------


def test_created_at_is_kept_on_update_and_search_is_newest_first() -> None:
    clock = Clock()
    store = CrdtmemStore(Replica("order"), clock=clock)
    for key in ("a", "b", "c"):
        store.put(("ns",), key, {"v": key})
        clock.tick()
    created = store.get(("ns",), "a")
    assert created is not None
    store.put(("ns",), "a", {"v": "a2"})
    updated = store.get(("ns",), "a")
    assert updated is not None and updated.value == {"v": "a2"}
    assert updated.created_at == created.created_at
    assert updated.updated_at > created.updated_at
    assert [i.key for i in store.search(("ns",))] == ["a", "c", "b"]
    assert [i.key for i in store.search(("ns",), limit=1, offset=1)] == ["c"]
    # Ties (same updated time) go by namespace, then key.
    clock.tick()
    store.batch([PutOp(("ns",), "z", {}), PutOp(("a",), "y", {})])
    assert [i.key for i in store.search(())][:2] == ["y", "z"]


def test_filters_define_missing_fields_and_booleans() -> None:
    store = CrdtmemStore(Replica("filters"), clock=Clock())
    store.put(("f",), "num", {"x": 1})
    store.put(("f",), "yes", {"x": True})
    store.put(("f",), "none", {"x": None})
    store.put(("f",), "text", {"x": "b"})
    store.put(("f",), "missing", {"y": 1})
    store.put(("f",), "nested", {"x": {"deep": 2}})

    def keys(wanted: dict[str, Any]) -> list[str]:
        return sorted(i.key for i in store.search(("f",), filter=wanted, limit=100))

    assert keys({"x": 1}) == ["num"]  # true is not 1
    assert keys({"x": True}) == ["yes"]
    assert keys({"x": None}) == ["missing", "none"]
    assert keys({"x": {"$ne": None}}) == ["nested", "num", "text", "yes"]
    assert keys({"x": {"$ne": 1}}) == ["nested", "none", "text", "yes"]  # missing: no match
    assert keys({"x": {"$gt": 0}}) == ["num"]  # numbers with numbers only
    assert keys({"x": {"$gte": "a"}}) == ["text"]  # strings with strings
    assert keys({"x": {"deep": 2}}) == ["nested"]
    assert keys({"x": {"deep": {"$lt": 3}}}) == ["nested"]
    with pytest.raises(ValueError, match="operator"):
        keys({"x": {"$regex": "b"}})


def test_ttl_expiry_is_absolute_and_every_replica_agrees() -> None:
    clock_a, clock_b = Clock(), Clock()
    a, b = Replica("a"), Replica("b")
    store_a = CrdtmemStore(a, clock=clock_a)
    store_b = CrdtmemStore(b, clock=clock_b)
    store_a.put(("mem",), "short", {"v": 1}, ttl=1.0)  # minutes
    store_a.put(("mem",), "long", {"v": 2}, ttl=10.0)
    store_a.put(("mem",), "forever", {"v": 3})
    b.merge(a.delta_since(b.version()))
    clock_b.tick(59)
    clock_a.tick(59)
    for store in (store_a, store_b):
        assert store.get(("mem",), "short") is not None
    clock_b.tick(2)
    clock_a.tick(2)
    for store in (store_a, store_b):
        assert store.get(("mem",), "short") is None
        assert sorted(i.key for i in store.search(("mem",))) == ["forever", "long"]
    # Reads do not extend a TTL; a put does.
    store_b.put(("mem",), "long", {"v": 20}, ttl=10.0)
    clock_a.tick(9 * 60)
    clock_b.tick(9 * 60)
    a.merge(b.delta_since(a.version()))
    for store in (store_a, store_b):
        assert [i.key for i in store.search(("mem",))] == ["long", "forever"]
    clock_a.tick(10 * 60)
    assert store_a.list_namespaces() == [("mem",)]
    store_a.delete(("mem",), "forever")
    assert store_a.list_namespaces() == []  # only expired items left
    assert store_a.sweep_ttl() == 2
    assert store_a.sweep_ttl() == 0


def test_default_ttl_from_the_ttl_config() -> None:
    clock = Clock()
    store = CrdtmemStore(Replica("ttl"), ttl={"default_ttl": 1.0}, clock=clock)
    store.put(("mem",), "k", {"v": 1})
    store.put(("mem",), "kept", {"v": 1}, ttl=None)
    clock.tick(61)
    assert store.get(("mem",), "k") is None
    assert store.get(("mem",), "kept") is not None


# --- replicated -------------------------------------------------------------------


def everything(store: CrdtmemStore) -> list[Any]:
    return [
        [(i.namespace, i.key, i.value, i.created_at, i.updated_at) for i in store.search(())],
        store.list_namespaces(),
        store.list_namespaces(max_depth=1),
        [i.key for i in store.search((), filter={"who": "a"})],
    ]


@pytest.mark.parametrize("a_first", [True, False])
def test_two_replicas_writing_both_converge_to_the_same_results(a_first: bool) -> None:
    clock_a, clock_b = Clock(), Clock(1_700_000_000.5)
    a, b = Replica("a", clock=clock_a), Replica("b", clock=clock_b)
    store_a, store_b = CrdtmemStore(a, clock=clock_a), CrdtmemStore(b, clock=clock_b)
    store_a.put(("shared",), "both", {"who": "a"})
    store_a.put(("a", "only"), "k", {"who": "a"})
    store_a.put(("shared",), "deleted-by-b", {"who": "a"})
    b.merge(a.delta_since(b.version()))
    clock_a.tick()
    clock_b.tick()
    # Concurrent: both update one item, b deletes one, each adds its own.
    store_a.put(("shared",), "both", {"who": "a", "v": 2})
    store_b.put(("shared",), "both", {"who": "b", "v": 2})
    store_b.delete(("shared",), "deleted-by-b")
    store_b.put(("b", "only"), "k", {"who": "b"})
    if a_first:
        b.merge(a.delta_since(b.version()))
        a.merge(b.delta_since(a.version()))
    else:
        a.merge(b.delta_since(a.version()))
        b.merge(a.delta_since(b.version()))
    assert everything(store_a) == everything(store_b)
    both = store_a.get(("shared",), "both")
    assert both is not None and both.value == {"who": "b", "v": 2}  # b's write is later
    assert store_a.get(("shared",), "deleted-by-b") is None
    assert store_a.list_namespaces() == [("a", "only"), ("b", "only"), ("shared",)]


def test_a_graph_writes_memories_another_replica_reads() -> None:
    from_graph = Replica("agent")
    store = CrdtmemStore(from_graph, clock=Clock())

    class State(TypedDict):
        user: str
        fact: str

    def remember(state: State, *, store: BaseStore) -> dict[str, Any]:
        store.put(("memories", state["user"]), "latest", {"fact": state["fact"]})
        return {}

    graph = StateGraph(State)
    graph.add_node("remember", remember)
    graph.add_edge(START, "remember")
    graph.add_edge("remember", END)
    graph.compile(store=store).invoke({"user": "alice", "fact": "likes tea"})
    other = Replica("other")
    other.merge(from_graph.delta_since(other.version()))
    item = CrdtmemStore(other).get(("memories", "alice"), "latest")
    assert item is not None and item.value == {"fact": "likes tea"}


def test_each_put_is_one_update() -> None:
    replica = Replica("atomic")
    index: IndexConfig = {"dims": DIMS, "embed": embed}
    store = CrdtmemStore(replica, index=index, clock=Clock())

    def updates() -> int:
        return replica.version().get(replica.writer_id, 0)

    store.batch([PutOp(("a",), "1", {"text": "abc"}), PutOp(("b", "c"), "2", {"text": "g"})])
    assert updates() == 2
    store.put(("a",), "1", {"text": "abcd"}, ttl=5.0)
    assert updates() == 3
    store.delete(("a",), "1")
    store.delete(("a",), "1")  # not there any more: nothing to write
    assert updates() == 4
