"""Cost of merging a one-update message into replicas of growing size."""

from __future__ import annotations

import gc
import time

from rich.table import Table

from benchmarks.common import micros
from crdtmem import Replica


def _grown(list_items: int, set_items: int) -> Replica:
    peer = Replica("peer")
    big_list = peer.list("findings")
    for i in range(list_items):
        big_list.append(i)
    big_set = peer.set("sources")
    for i in range(set_items):
        big_set.add(i)
    return peer


def _merge_cost(replica: Replica, writer: Replica, mutate: str, rounds: int) -> float:
    """Median µs of ``merge`` for ``rounds`` single-update messages."""
    samples = []
    for i in range(rounds):
        if mutate == "list":
            writer.list("findings").insert(i % 50, f"new {i}")
        else:
            writer.set("sources").add(f"new {i}")
        message = writer.delta_since(replica.version())
        gc.disable()  # a collection landing inside one sample would swamp it
        try:
            start = time.perf_counter()
            replica.merge(message)
            samples.append(time.perf_counter() - start)
        finally:
            gc.enable()
    samples.sort()
    return samples[len(samples) // 2]


def run(quick: bool) -> Table:
    sizes = [1_000, 10_000] if quick else [1_000, 10_000, 100_000]
    rounds = 200
    table = Table(title=f"merge() of a one-update message (median of {rounds})")
    for header in ("list items", "set items", "list insert µs", "set add µs", "vs smallest"):
        table.add_column(header, justify="right")
    first: tuple[float, float] | None = None
    for size in sizes:
        set_size = size // 10
        source = _grown(size, set_size)
        replica = Replica("target")
        replica.merge(source.delta_since())
        writer = Replica("writer")
        writer.merge(source.delta_since())
        list_cost = _merge_cost(replica, writer, "list", rounds)
        set_cost = _merge_cost(replica, writer, "set", rounds)
        if first is None:
            first = (list_cost, set_cost)
        table.add_row(
            f"{size:,}",
            f"{set_size:,}",
            micros(list_cost),
            micros(set_cost),
            f"{list_cost / first[0]:.2f}x / {set_cost / first[1]:.2f}x",
        )
    return table
