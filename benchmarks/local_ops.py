"""Local update and read cost per type, next to pycrdt and a plain dict doing the same."""

from __future__ import annotations

import random
from typing import Any

import pycrdt
from rich.table import Table

from benchmarks.common import micros, per_op
from crdtmem import Replica


def _replica() -> Replica:
    return Replica("bench")


def _pycrdt_doc() -> Any:
    return pycrdt.Doc()


def run(quick: bool) -> Table:
    ops = 5_000 if quick else 50_000
    rng = random.Random(1)
    positions = [rng.random() for _ in range(ops)]

    def reg_set(r: Replica, n: int) -> None:
        field = r.register("r")
        for i in range(n):
            field.set(i)

    def counter_inc(r: Replica, n: int) -> None:
        field = r.counter("c")
        for _ in range(n):
            field.increment()

    def set_add(r: Replica, n: int) -> None:
        field = r.set("s")
        for i in range(n):
            field.add(i % 1000)

    def map_counter(r: Replica, n: int) -> None:
        field = r.map("m").counter("votes")
        for _ in range(n):
            field.increment()

    def list_append(r: Replica, n: int) -> None:
        field = r.list("l")
        for i in range(n):
            field.append(i)

    def list_insert_random(r: Replica, n: int) -> None:
        field = r.list("l")
        for i in range(n):
            field.insert(int(positions[i] * (i + 1)) if i else 0, i)

    def text_type(r: Replica, n: int) -> None:
        field = r.text("t")
        for i in range(n):
            field.insert(i, "a")

    def counter_read(r: Replica, n: int) -> None:
        field = r.counter("c")
        field.increment()
        for _ in range(n):
            _ = field.value

    def list_index_read(r: Replica, n: int) -> None:
        field = r.list("l")
        for i in range(1000):
            field.append(i)
        for i in range(n):
            _ = field[i % 1000]

    def y_map_set(doc: Any, n: int) -> None:
        ymap = doc.get("m", type=pycrdt.Map)
        for i in range(n):
            ymap["r"] = i

    def y_array_append(doc: Any, n: int) -> None:
        array = doc.get("a", type=pycrdt.Array)
        for i in range(n):
            array.append(i)

    def y_array_insert_random(doc: Any, n: int) -> None:
        array = doc.get("a", type=pycrdt.Array)
        for i in range(n):
            array.insert(int(positions[i] * (i + 1)) if i else 0, i)

    def y_text_type(doc: Any, n: int) -> None:
        text = doc.get("t", type=pycrdt.Text)
        for i in range(n):
            text.insert(i, "a")

    def y_map_read(doc: Any, n: int) -> None:
        ymap = doc.get("m", type=pycrdt.Map)
        ymap["c"] = 1
        for _ in range(n):
            _ = ymap["c"]

    def y_array_index_read(doc: Any, n: int) -> None:
        array = doc.get("a", type=pycrdt.Array)
        array.extend(list(range(1000)))
        for i in range(n):
            _ = array[i % 1000]

    def dict_set(d: dict[str, Any], n: int) -> None:
        for i in range(n):
            d["r"] = i

    def dict_read(d: dict[str, Any], n: int) -> None:
        d["c"] = 1
        for _ in range(n):
            _ = d["c"]

    rows = [
        ("register.set", reg_set, y_map_set, "Map set", dict_set),
        ("counter.increment", counter_inc, y_map_set, "Map set", dict_set),
        ("set.add", set_add, y_map_set, "Map set", dict_set),
        ("map.counter(k).increment", map_counter, y_map_set, "Map set", dict_set),
        ("list.append", list_append, y_array_append, "Array append", None),
        (
            "list.insert (random position)",
            list_insert_random,
            y_array_insert_random,
            "Array insert",
            None,
        ),
        ("text.insert (typing)", text_type, y_text_type, "Text insert", None),
        ("counter.value (read)", counter_read, y_map_read, "Map get", dict_read),
        ("list[i] (read, 1k items)", list_index_read, y_array_index_read, "Array get", None),
    ]
    table = Table(title=f"Local operations ({ops:,} ops each; µs/op, best of 3)")
    for header in (
        "operation",
        "crdtmem µs",
        "ops/s",
        "pycrdt peer",
        "pycrdt µs",
        "crdtmem / pycrdt",
        "dict µs",
    ):
        table.add_column(header, justify="right" if header != "operation" else "left")
    for label, ours, theirs, peer, plain in rows:
        mine = per_op(_replica, ours, ops)
        peer_cost = per_op(_pycrdt_doc, theirs, ops)
        plain_cost = per_op(dict, plain, ops) if plain else None
        table.add_row(
            label,
            micros(mine),
            f"{1 / mine:,.0f}",
            peer,
            micros(peer_cost),
            f"{mine / peer_cost:.2f}x",
            micros(plain_cost) if plain_cost else "-",
        )
    return table
