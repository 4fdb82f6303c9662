"""Durable writes per durability mode, against in-memory writes and against what agent
frameworks do today: a SQLite checkpointer saving the whole state after every write
(LangGraph's pattern). Also recovery time and checkpoint cost."""

from __future__ import annotations

import gc
import json
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rich.table import Table

from benchmarks.common import micros
from crdtmem import Replica
from crdtmem.replica import SNAPSHOT_MIN_BYTES as SNAPSHOT


def _latencies(write: Callable[[int], None], count: int) -> list[float]:
    samples = []
    gc.collect()
    for i in range(count):
        start = time.perf_counter()
        write(i)
        samples.append(time.perf_counter() - start)
    return samples


def _replica_writes(folder: Path | None, mode: str, count: int) -> list[float]:
    replica = Replica("agent", path=str(folder) if folder else None, durability=mode)
    findings, summary = replica.list("findings"), replica.register("summary")

    def write(i: int) -> None:
        if i % 2:
            findings.append(f"finding {i}: exports up {i % 7}%")
        else:
            summary.set(f"summary after {i} steps")

    try:
        return _latencies(write, count)
    finally:
        replica.close()


def _sqlite_checkpointer(folder: Path, count: int) -> list[float]:
    """Each write: change the state dict, serialise all of it, insert a checkpoint row
    and commit (WAL, synchronous=NORMAL, as LangGraph's SqliteSaver sets up)."""
    connection = sqlite3.connect(folder / "checkpoints.sqlite")
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute(
        "CREATE TABLE checkpoints "
        "(thread TEXT, step INTEGER, state BLOB, PRIMARY KEY (thread, step))"
    )
    state: dict[str, object] = {"findings": [], "summary": None}
    findings: list[str] = state["findings"]  # type: ignore[assignment]

    def write(i: int) -> None:
        if i % 2:
            findings.append(f"finding {i}: exports up {i % 7}%")
        else:
            state["summary"] = f"summary after {i} steps"
        connection.execute(
            "INSERT INTO checkpoints VALUES (?, ?, ?)", ("agent", i, json.dumps(state).encode())
        )
        connection.commit()

    try:
        return _latencies(write, count)
    finally:
        connection.close()


def _recovery(folder: Path, updates: int, snapshot_bytes: int | None) -> tuple[float, int]:
    """Write ``updates`` updates, close, and time the reopen; also the log's size."""
    replica = Replica("agent", path=str(folder), snapshot_bytes=snapshot_bytes)
    counter, lst = replica.counter("steps"), replica.list("findings")
    for i in range(updates // 2):
        counter.increment()
        lst.append(i)
    size = replica.stats()["storage_bytes"]
    replica.close()
    start = time.perf_counter()
    Replica("agent", path=str(folder), snapshot_bytes=snapshot_bytes).close()
    return time.perf_counter() - start, size


def _checkpoint_and_snapshot(folder: Path) -> tuple[float, int, float]:
    """Checkpoint the state in ``folder``, snapshot it, and time the reopen."""
    replica = Replica("agent", path=str(folder), snapshot_bytes=None)
    start = time.perf_counter()
    made = replica.checkpoint("bench")
    checkpoint_seconds = time.perf_counter() - start
    replica.compact_storage()
    replica.close()
    start = time.perf_counter()
    Replica("agent", path=str(folder), snapshot_bytes=None).close()
    return checkpoint_seconds, made.size, time.perf_counter() - start


def run(quick: bool) -> Table:
    count = 2_000 if quick else 10_000
    root = Path(tempfile.mkdtemp(prefix="crdtmem-bench-"))
    table = Table(title=f"Durable writes ({count:,} mixed register sets and list appends)")
    for header in ("how", "writes/s", "p50 µs", "p99 µs", "vs in memory"):
        table.add_column(header, justify="left" if header == "how" else "right")
    try:
        rows: list[tuple[str, list[float]]] = [
            ("in memory", _replica_writes(None, "process", count))
        ]
        for mode in ("process", "group", "fsync"):
            folder = root / mode
            fsync_count = count if mode != "fsync" else max(200, count // 10)
            rows.append((f'path=, durability="{mode}"', _replica_writes(folder, mode, fsync_count)))
        rows.append(
            ("SQLite checkpoint of the whole state per write", _sqlite_checkpointer(root, count))
        )
        baseline = sum(rows[0][1]) / len(rows[0][1])
        for label, samples in rows:
            ordered = sorted(samples)
            mean = sum(samples) / len(samples)
            table.add_row(
                label,
                f"{1 / mean:,.0f}",
                micros(ordered[len(ordered) // 2]),
                micros(ordered[int(len(ordered) * 0.99)]),
                f"{mean / baseline:.1f}x",
            )
        for updates in [100_000] if quick else [100_000, 1_000_000]:
            folder = root / f"recover{updates}"
            replay, size = _recovery(folder, updates, None)
            table.add_row(
                f"reopen after {updates:,} updates: replay the log",
                f"{replay:.2f} s",
                "",
                "",
                f"{updates / replay:,.0f} updates/s, {size / 2**20:,.0f} MiB",
            )
            checkpoint_seconds, checkpoint_size, snapshot_open = _checkpoint_and_snapshot(folder)
            table.add_row(
                "reopen the same after compact_storage()",
                f"{snapshot_open:.2f} s",
                "",
                "",
                f"{replay / snapshot_open:.0f}x faster",
            )
            automatic, automatic_size = _recovery(root / f"auto{updates}", updates, SNAPSHOT)
            table.add_row(
                "the same writes with automatic snapshots",
                f"{automatic:.2f} s",
                "",
                "",
                f"{replay / automatic:.0f}x faster, {automatic_size / 2**20:,.1f} MiB",
            )
            table.add_row(
                f"checkpoint of that state ({updates // 2:,} list items)",
                f"{checkpoint_seconds * 1000:.0f} ms",
                "",
                "",
                f"{checkpoint_size / 1024:,.0f} KiB",
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return table
