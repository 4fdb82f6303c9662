"""A soak: many mixed updates over 4 gossiping replicas (simulated network, one of them
durable on disk), with list deletes and set removes throughout. Reports memory, disk and
what compaction keeps bounded, at regular points, and plots the curve.

``python -m benchmarks --only soak`` runs 1,000,000 updates (``--quick``: 100,000) and
writes ``results/soak.png``.
"""

from __future__ import annotations

import functools
import random
import tempfile
import time
import tracemalloc
from pathlib import Path

from rich.table import Table

from crdtmem import Replica
from transport import SimNetwork

COLUMNS = (
    "updates",
    "memory MiB (all 4)",
    "disk KiB (durable one)",
    "log entries",
    "list tombstones",
    "collected",
    "marker ids",
    "live list items",
    "set elements",
    "seconds",
)


def _step(rng: random.Random, replica: Replica, *, i: int) -> None:
    # The list stays between about 50 and 200 live items, so the state itself is steady
    # while its history (every append, every delete) grows without end.
    roll = rng.random()
    findings = replica.list("findings")
    if roll < 0.6:
        grow = len(findings) < 50 or (roll < 0.3 and len(findings) < 200)
        if grow:
            findings.append(i)
        else:
            findings.delete(rng.randrange(len(findings)))
    elif roll < 0.75:
        replica.set("active").add(i % 500)
    elif roll < 0.9:
        replica.set("active").discard(rng.randrange(500))
    else:
        replica.counter("steps").increment()


def run(quick: bool) -> Table:
    updates = 100_000 if quick else 1_000_000
    samples = 20
    rows: list[list[float]] = []
    with tempfile.TemporaryDirectory(prefix="crdtmem-soak-") as folder:
        net = SimNetwork(7, interval=0.5)
        names = [f"agent{i}" for i in range(4)]
        for name in names:
            net.add_node(name, path=str(Path(folder) / name) if name == "agent0" else None)
        rng = random.Random(7)
        started = time.perf_counter()
        tracemalloc.start()
        for i in range(updates):
            net.write(names[i % 4], functools.partial(_step, rng, i=i))
            if i % 20 == 0:
                net.run_for(0.01)
            if (i + 1) % (updates // samples) == 0:
                net.run_for(2.0)  # let digests, acknowledgements and collection catch up
                stats = [node.replica.stats() for node in net.nodes.values()]
                first = net.replica(names[0])
                current, _ = tracemalloc.get_traced_memory()
                rows.append(
                    [
                        i + 1,
                        current / 2**20,
                        stats[0]["storage_bytes"] / 1024,
                        sum(s["log_entries"] for s in stats),
                        sum(s["list_tombstones"] for s in stats),
                        sum(s["list_collected"] for s in stats),
                        sum(s["list_marker_ids"] for s in stats),
                        len(first.list("findings")),
                        len(first.set("active")),
                        time.perf_counter() - started,
                    ]
                )
        tracemalloc.stop()
        assert net.converged()
        for node in net.nodes.values():
            node.replica.close()
    Path("results").mkdir(exist_ok=True)
    _plot(rows, updates, Path("results") / "soak.png")
    table = Table(title=f"Soak: {updates:,} mixed updates over 4 replicas (simulated network)")
    for header in COLUMNS:
        table.add_column(header, justify="right")
    for row in rows:
        table.add_row(
            *(f"{v:,.1f}" if k in (1, 2, 9) else f"{int(v):,}" for k, v in enumerate(row))
        )
    return table


def _plot(rows: list[list[float]], updates: int, target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [row[0] / 1000 for row in rows]
    figure, (memory, counts) = plt.subplots(1, 2, figsize=(11, 4))
    memory.plot(x, [row[1] for row in rows], marker="o", label="memory, all 4 replicas (MiB)")
    memory.plot(x, [row[2] / 1024 for row in rows], marker="s", label="disk, durable one (MiB)")
    memory.set_xlabel("updates (thousands)")
    memory.set_ylim(bottom=0)
    memory.legend()
    counts.plot(x, [row[5] for row in rows], marker="o", label="list elements collected")
    counts.plot(x, [row[4] for row in rows], marker="s", label="tombstones held")
    counts.plot(x, [row[6] for row in rows], marker="^", label="marker ids kept")
    counts.set_xlabel("updates (thousands)")
    counts.set_yscale("symlog")
    counts.legend()
    figure.suptitle(f"Soak: {updates:,} mixed updates, 4 replicas, continual deletes")
    figure.tight_layout()
    figure.savefig(target, dpi=110)
    plt.close(figure)
