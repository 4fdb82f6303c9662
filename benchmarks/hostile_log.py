"""What made-up input costs a replica (issue 10): an honest merge while many made-up
origins hold never-deliverable updates in the early buffer, the memory such updates
hold, and the version vector after many made-up origins wrote once.

``python -m benchmarks.hostile_log [ORIGINS]`` prints the figures (no asserts); run it
from two checkouts to compare builds. Works against builds without the issue-10 limits
too (their missing stats keys print as ``-``).
"""

from __future__ import annotations

import gc
import sys
import time
import tracemalloc

from crdtmem import Replica, codec
from crdtmem.crdt import Writer
from crdtmem.gcounter import GCounter
from crdtmem.lwwregister import LWWRegister
from crdtmem.messages import LogEntry, Run, updates_message


def _counter_entry(origin: str) -> LogEntry:
    delta = GCounter.empty().increment_delta(Writer.fixed(origin), 1)
    return ({}, "c", GCounter.TAG, codec.pack_body(delta.to_wire()))


def never_deliverable(origins: int) -> bytes:
    """One update per made-up origin, its seq 2 without its seq 1."""
    runs: list[Run] = [(f"fake{i}", 2, [_counter_entry(f"fake{i}")]) for i in range(origins)]
    return updates_message(runs)


def honest_merge_ms(origins: int, rounds: int = 300) -> str:
    """Mean ms of an honest one-update merge, clean and with ``origins`` made-up origins
    buffered."""
    a, b = Replica("a"), Replica("b")

    def honest() -> float:
        start = time.perf_counter()
        for _ in range(rounds):
            a.counter("n").increment()
            b.merge(a.delta_since(b.version()))
        return (time.perf_counter() - start) / rounds * 1000

    clean = honest()
    start = time.perf_counter()
    b.merge(never_deliverable(origins))
    fill = time.perf_counter() - start
    loaded = honest()
    stats = b.stats()
    return (
        f"{origins} made-up origins buffered ({stats['buffered_updates']} updates, "
        f"{stats.get('buffered_bytes', '-')} B; filling took {fill:.2f} s): honest merge "
        f"{clean:.3f} ms clean, {loaded:.3f} ms with them"
    )


def held_by_blobs(count: int = 200, size: int = 1_000_000) -> str:
    """Memory held by ``count`` never-deliverable updates of ``size`` bytes."""
    c = Replica("c")
    tracemalloc.start()
    for i in range(count):
        delta = LWWRegister.empty().set_delta(Writer.fixed(f"m{i}"), b"x" * size)
        entry: LogEntry = ({}, "r", LWWRegister.TAG, codec.pack_body(delta.to_wire()))
        c.merge(updates_message([(f"m{i}", 2, [entry])]))
    gc.collect()
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    stats = c.stats()
    return (
        f"{count} never-deliverable {size} B updates: {held / 2**20:.1f} MiB held, "
        f"{stats['buffered_updates']} buffered, {stats['dropped_early_updates']} dropped"
    )


def vector_after(origins: int = 20_000) -> str:
    """The version vector after ``origins`` made-up origins each wrote once."""
    runs: list[Run] = [
        (f"madeup-{i:06d}~{i:08x}", 1, [_counter_entry(f"madeup-{i:06d}~{i:08x}")])
        for i in range(origins)
    ]
    c = Replica("c")
    c.gcounter("c").increment()
    c.merge(updates_message(runs))
    version = c.version()
    return (
        f"{origins} made-up origins wrote once: {len(version)} version entries, "
        f"{len(codec.pack(version))} B per digest vector, "
        f"{c.stats().get('refused_origins', '-')} refused"
    )


def main() -> None:
    """Print the three figures."""
    origins = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    print(honest_merge_ms(origins))
    print(held_by_blobs())
    print(vector_after())


if __name__ == "__main__":
    main()
