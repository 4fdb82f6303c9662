"""``CrdtmemStore``: a LangGraph store (long-term memory) over a crdtmem replica.

Layout, in the replica's field ``{prefix}.store`` (an OR-map)::

    namespace key -> item key -> register: the item record (one update per put)

A record holds the namespace and key, the value as JSON text, ``created`` and
``updated`` (seconds from the store's clock), the absolute expiry time (``expires``,
``None`` without TTL), and the item's embedding vectors when an index is configured
(computed once, by the writer, so replicas agree on them and embed nothing).

Semantics (see docs/api.md, "LangGraph", for the differences from LangGraph's stores):

- A put replaces the item (last writer wins between replicas, by hybrid logical
  clock) and keeps ``created_at`` of the item it replaces; a delete removes it.
- Search order: by score, highest first, when a query is embedded; otherwise by
  ``updated_at``, newest first; ties by (namespace, key). The same on every replica.
- TTL: ``expires = updated + ttl minutes`` is stored in the record, so every replica
  agrees on when an item expires; reads leave out items whose ``expires`` has passed
  on the store's clock (no read writes: reads do not extend a TTL). ``sweep_ttl``
  removes expired items.
- Within one ``batch``, reads see the state before the batch's puts, and of several
  puts to one item the last wins, as in LangGraph's stores.
"""

from __future__ import annotations

import json
import math
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from langchain_core.embeddings import Embeddings
from langgraph.store.base import (
    BaseStore,
    GetOp,
    IndexConfig,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
    ensure_embeddings,
    get_text_at_path,
    tokenize_path,
    validate_op_namespace,
)

from crdtmem.fields import MapField, RegisterField
from crdtmem.integrations.langgraph.maps import (
    map_key,
    map_path,
    present_maps,
    present_values,
    register_path,
)
from crdtmem.ormap import ORMap
from crdtmem.replica import Replica

NAMESPACE_KIND: Final = "n"
ITEM_KIND: Final = "k"
# Seconds in a TTL minute (LangGraph gives TTLs in minutes).
SECONDS_PER_MINUTE: Final = 60.0
# The operators a filter may use, as LangGraph documents them.
OPERATORS: Final = frozenset({"$eq", "$ne", "$gt", "$gte", "$lt", "$lte"})


class _Missing:
    """A field the item does not have (distinct from a stored ``None``)."""


MISSING: Final = _Missing()


@dataclass(frozen=True, slots=True)
class _Live:
    """A record, decoded, as reads need it."""

    namespace: tuple[str, ...]
    key: str
    value: dict[str, Any]
    created: float
    updated: float
    vectors: dict[str, bytes]

    def item(self) -> Item:
        return Item(
            value=self.value,
            key=self.key,
            namespace=self.namespace,
            created_at=_datetime(self.created),
            updated_at=_datetime(self.updated),
        )

    def search_item(self, score: float | None = None) -> SearchItem:
        return SearchItem(
            namespace=self.namespace,
            key=self.key,
            value=self.value,
            created_at=_datetime(self.created),
            updated_at=_datetime(self.updated),
            score=score,
        )


class CrdtmemStore(BaseStore):
    """A LangGraph ``BaseStore`` whose items live in a crdtmem replica.

    ``CrdtmemStore(replica, *, index=None, ttl=None, clock=time.time,
    prefix="langgraph")``: ``index`` configures vector search (``{"embed": callable or
    Embeddings, "dims": n, "fields": [...]}``: cosine similarity, computed here, no
    external service); ``ttl`` a ``TTLConfig`` (``default_ttl`` in minutes; reads never
    refresh a TTL); ``clock`` gives seconds since the epoch for timestamps and expiry
    (inject it in tests and simulations); the replica field is ``{prefix}.store``.
    """

    supports_ttl: bool = True

    def __init__(
        self,
        replica: Replica,
        *,
        index: IndexConfig | None = None,
        ttl: TTLConfig | None = None,
        clock: Callable[[], float] = time.time,
        prefix: str = "langgraph",
    ) -> None:
        if not isinstance(replica, Replica):
            raise TypeError(f"CrdtmemStore needs a crdtmem Replica, got {type(replica).__name__}")
        self.replica = replica
        self.clock = clock
        self.field = f"{prefix}.store"
        self.ttl_config = ttl
        self.index_config: dict[str, Any] | None = None
        self.embeddings: Embeddings | None = None
        self.dims: int | None = None
        self._fields: list[tuple[str, str | list[str]]] = []
        if index:
            self.index_config = dict(index)
            self.embeddings = ensure_embeddings(index.get("embed"))
            dims = index.get("dims")
            self.dims = dims if isinstance(dims, int) else None
            self._fields = [
                (path, tokenize_path(path) if path != "$" else path)
                for path in (index.get("fields") or ["$"])
            ]
        # Puts read the record they replace (to keep created_at): one at a time.
        self._lock = threading.RLock()

    # --- batches -------------------------------------------------------------------

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run ``ops``; results in their order (reads see the state before the puts)."""
        ops = list(ops)
        queries = self._queries(ops)
        vectors_for = {
            text: vector
            for text, vector in zip(
                queries, self._embed_queries(queries) if queries else [], strict=True
            )
        }
        results = self._reads(ops, vectors_for)
        puts = _last_puts(ops)
        texts = self._texts(puts)
        embedded = self._embed_documents(texts) if texts else []
        self._apply_puts(puts, texts, embedded)
        return results

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """Async ``batch``: embeddings are computed with the async embedder."""
        ops = list(ops)
        queries = self._queries(ops)
        vectors_for: dict[str, list[float]] = {}
        if queries and self.embeddings is not None:
            for text in queries:
                vectors_for[text] = list(await self.embeddings.aembed_query(text))
        results = self._reads(ops, vectors_for)
        puts = _last_puts(ops)
        texts = self._texts(puts)
        embedded: list[list[float]] = []
        if texts and self.embeddings is not None:
            embedded = [list(v) for v in await self.embeddings.aembed_documents(_texts_of(texts))]
        self._apply_puts(puts, texts, embedded)
        return results

    def _queries(self, ops: Sequence[Op]) -> list[str]:
        for op in ops:
            validate_op_namespace(op)
        if self.embeddings is None:
            return []
        return sorted({op.query for op in ops if isinstance(op, SearchOp) and op.query})

    def _embed_queries(self, queries: list[str]) -> list[list[float]]:
        if self.embeddings is None:
            return []
        return [list(self.embeddings.embed_query(text)) for text in queries]

    def _embed_documents(self, texts: list[tuple[int, str, str]]) -> list[list[float]]:
        if self.embeddings is None:
            return []
        return [list(v) for v in self.embeddings.embed_documents(_texts_of(texts))]

    # --- reads -----------------------------------------------------------------------

    def _reads(self, ops: Sequence[Op], vectors_for: Mapping[str, list[float]]) -> list[Result]:
        now = self.clock()
        records: list[dict[str, Any]] | None = None
        results: list[Result] = []
        for op in ops:
            if isinstance(op, GetOp):
                results.append(self._get(op, now))
            elif isinstance(op, SearchOp):
                if records is None:
                    records = self._all_records()
                results.append(self._search(op, records, now, vectors_for))
            elif isinstance(op, ListNamespacesOp):
                if records is None:
                    records = self._all_records()
                results.append(_list_namespaces(op, records, now))
            elif isinstance(op, PutOp):
                results.append(None)
            else:
                raise ValueError(f"unknown operation: {type(op).__name__}")
        return results

    def _item_path(self, namespace: tuple[str, ...], key: str) -> Any:
        ns_path = map_path(self.field, map_key(NAMESPACE_KIND, ".".join(namespace)))
        return register_path(ns_path, map_key(ITEM_KIND, key))

    def _record(self, namespace: tuple[str, ...], key: str) -> dict[str, Any] | None:
        found = self.replica.read_field(
            self._item_path(namespace, key), lambda register: register.value()
        )
        return found if isinstance(found, dict) else None

    def _get(self, op: GetOp, now: float) -> Item | None:
        record = self._record(op.namespace, op.key)
        if record is None or _expired(record, now):
            return None
        return _decode(record).item()

    def _all_records(self) -> list[dict[str, Any]]:
        return self.replica.read_field(map_path(self.field), _collect)

    def _search(
        self,
        op: SearchOp,
        records: list[dict[str, Any]],
        now: float,
        vectors_for: Mapping[str, list[float]],
    ) -> list[SearchItem]:
        prefix = tuple(op.namespace_prefix)
        candidates = [
            _decode(record)
            for record in records
            if tuple(record["ns"][: len(prefix)]) == prefix and not _expired(record, now)
        ]
        if op.filter:
            candidates = [live for live in candidates if _matches(live.value, op.filter)]
        start, stop = max(op.offset, 0), max(op.offset, 0) + max(op.limit, 0)
        query_vector = vectors_for.get(op.query) if op.query else None
        if query_vector is None:
            candidates.sort(key=lambda live: (live.namespace, live.key))
            candidates.sort(key=lambda live: live.updated, reverse=True)
            return [live.search_item() for live in candidates[start:stop]]
        scored: list[tuple[float, _Live]] = []
        scoreless: list[_Live] = []
        for live in candidates:
            scores = [_cosine(query_vector, _unpack(v)) for v in live.vectors.values()]
            if scores:
                scored.append((max(scores), live))
            else:
                scoreless.append(live)
        scored.sort(key=lambda pair: (-pair[0], pair[1].namespace, pair[1].key))
        scoreless.sort(key=lambda live: (live.namespace, live.key))
        ranked: list[tuple[float | None, _Live]] = [(s, live) for s, live in scored]
        ranked += [(None, live) for live in scoreless]
        return [live.search_item(score) for score, live in ranked[start:stop]]

    # --- writes ----------------------------------------------------------------------

    def _texts(self, puts: Sequence[PutOp]) -> list[tuple[int, str, str]]:
        """(put index, vector path, text) for every text to embed."""
        if self.embeddings is None:
            return []
        texts: list[tuple[int, str, str]] = []
        for position, op in enumerate(puts):
            if op.value is None or op.index is False:
                continue
            paths = (
                self._fields
                if op.index is None
                else [(path, tokenize_path(path)) for path in op.index]
            )
            for path, tokens in paths:
                found = get_text_at_path(op.value, tokens)
                if len(found) == 1:
                    texts.append((position, path, found[0]))
                else:
                    texts += [(position, f"{path}.{i}", text) for i, text in enumerate(found)]
        return texts

    def _apply_puts(
        self,
        puts: Sequence[PutOp],
        texts: Sequence[tuple[int, str, str]],
        embedded: Sequence[list[float]],
    ) -> None:
        vectors: dict[int, dict[str, bytes]] = {}
        for (position, path, _), vector in zip(texts, embedded, strict=True):
            if self.dims is not None and len(vector) != self.dims:
                raise ValueError(f"embedding has {len(vector)} dimensions, index says {self.dims}")
            vectors.setdefault(position, {})[path] = _pack(vector)
        with self._lock:
            now = self.clock()
            for position, op in enumerate(puts):
                namespace, key = tuple(op.namespace), op.key
                if op.value is None:
                    self._delete(namespace, key)
                    continue
                previous = self._record(namespace, key)
                created = now
                if previous is not None and not _expired(previous, now):
                    created = float(previous["created"])
                record = {
                    "ns": list(namespace),
                    "key": key,
                    "value": json.dumps(dict(op.value), ensure_ascii=False),
                    "created": created,
                    "updated": now,
                    "expires": None if op.ttl is None else now + op.ttl * SECONDS_PER_MINUTE,
                    "ttl": None if op.ttl is None else float(op.ttl),
                    "vectors": vectors.get(position, {}),
                }
                RegisterField(self.replica, self._item_path(namespace, key)).set(record)

    def _delete(self, namespace: tuple[str, ...], key: str) -> None:
        ns_map = MapField(
            self.replica, map_path(self.field, map_key(NAMESPACE_KIND, ".".join(namespace)))
        )
        item_key = map_key(ITEM_KIND, key)
        if item_key in ns_map:
            ns_map.remove(item_key)

    def sweep_ttl(self) -> int:
        """Remove the items whose TTL has expired on the store's clock; returns how many
        (one update each). Reads already leave them out: this frees their space."""
        with self._lock:
            now = self.clock()
            expired = [r for r in self._all_records() if _expired(r, now)]
            for record in expired:
                self._delete(tuple(record["ns"]), record["key"])
        return len(expired)


def _texts_of(texts: Sequence[tuple[int, str, str]]) -> list[str]:
    """The texts of (put index, path, text) triples, in order."""
    return [text for _, _, text in texts]


def _last_puts(ops: Sequence[Op]) -> list[PutOp]:
    """The puts of a batch, the last one per item, in the order of their last put."""
    last: dict[tuple[tuple[str, ...], str], PutOp] = {}
    for op in ops:
        if isinstance(op, PutOp):
            item = (tuple(op.namespace), op.key)
            last.pop(item, None)
            last[item] = op
    return list(last.values())


def _collect(state: ORMap) -> list[dict[str, Any]]:
    """Under the replica's lock: every item record (the replica's objects: read only)."""
    return [
        record
        for _, ns_map in present_maps(state)
        for _, record in present_values(ns_map)
        if isinstance(record, dict)
    ]


def _expired(record: Mapping[str, Any], now: float) -> bool:
    expires = record.get("expires")
    return expires is not None and float(expires) <= now


def _decode(record: Mapping[str, Any]) -> _Live:
    return _Live(
        namespace=tuple(record["ns"]),
        key=str(record["key"]),
        value=json.loads(record["value"]),
        created=float(record["created"]),
        updated=float(record["updated"]),
        vectors=dict(record.get("vectors") or {}),
    )


def _datetime(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def _pack(vector: Sequence[float]) -> bytes:
    # Little-endian doubles: the same bytes on every machine.
    return struct.pack(f"<{len(vector)}d", *vector)


def _unpack(data: bytes) -> list[float]:
    return list(struct.unpack(f"<{len(data) // 8}d", data))


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity (0.0 when either vector is zero or their sizes differ)."""
    if len(a) != len(b):
        return 0.0
    norms = math.sqrt(math.fsum(x * x for x in a)) * math.sqrt(math.fsum(y * y for y in b))
    if norms == 0.0:
        return 0.0
    return math.fsum(x * y for x, y in zip(a, b, strict=True)) / norms


# --- filters ------------------------------------------------------------------------


def _matches(value: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    return all(_match(value.get(key, MISSING), condition) for key, condition in wanted.items())


def _match(actual: Any, condition: Any) -> bool:
    if isinstance(condition, dict) and condition and all(k.startswith("$") for k in condition):
        return all(_apply(actual, op, operand) for op, operand in condition.items())
    if isinstance(condition, dict):
        if not isinstance(actual, dict):
            return False
        return all(_match(actual.get(k, MISSING), c) for k, c in condition.items())
    if actual is MISSING:
        return condition is None
    return _equal(actual, condition)


def _equal(a: Any, b: Any) -> bool:
    # JSON's true is not 1, though Python's True == 1.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _apply(actual: Any, op: str, operand: Any) -> bool:
    """One operator. A missing field matches only ``$eq: None``; ordering compares two
    numbers, or two strings, and is false for anything else (as SQL's JSON does)."""
    if op not in OPERATORS:
        raise ValueError(f"unsupported filter operator {op!r}; use one of {sorted(OPERATORS)}")
    if op == "$eq":
        return _match(actual, operand)
    if actual is MISSING:
        return False
    if op == "$ne":
        return not _equal(actual, operand)
    if not ((_number(actual) and _number(operand)) or (type(actual) is type(operand) is str)):
        return False
    if op == "$gt":
        return bool(actual > operand)
    if op == "$gte":
        return bool(actual >= operand)
    if op == "$lt":
        return bool(actual < operand)
    return bool(actual <= operand)


# --- namespaces -------------------------------------------------------------------


def _list_namespaces(
    op: ListNamespacesOp, records: list[dict[str, Any]], now: float
) -> list[tuple[str, ...]]:
    namespaces = {tuple(r["ns"]) for r in records if not _expired(r, now)}
    if op.match_conditions:
        namespaces = {ns for ns in namespaces if all(_fits(c, ns) for c in op.match_conditions)}
    if op.max_depth is not None:
        namespaces = {ns[: op.max_depth] for ns in namespaces}
    ordered = sorted(namespaces)
    start = max(op.offset, 0)
    return ordered[start : start + max(op.limit, 0)]


def _fits(condition: MatchCondition, namespace: tuple[str, ...]) -> bool:
    path = tuple(condition.path)
    if len(namespace) < len(path):
        return False
    kind: Literal["prefix", "suffix"] = condition.match_type
    part = namespace[: len(path)] if kind == "prefix" else namespace[len(namespace) - len(path) :]
    return all(p in ("*", n) for p, n in zip(path, part, strict=True))
