"""A soak: many mixed updates over 4 gossiping replicas (simulated network), with list
deletes and set removes throughout; what stays bounded and what grows."""

from __future__ import annotations

import functools
import random
import tracemalloc

from rich.table import Table

from crdtmem import Replica
from transport import SimNetwork


def run(quick: bool) -> Table:
    updates = 50_000 if quick else 200_000
    net = SimNetwork(7, interval=0.5)
    names = [f"agent{i}" for i in range(4)]
    for name in names:
        net.add_node(name)
    rng = random.Random(7)
    table = Table(title=f"Soak: {updates:,} mixed updates over 4 replicas (simulated network)")
    for header in (
        "updates",
        "memory MiB (all 4)",
        "log entries",
        "list tombstones",
        "live list items",
        "set elements",
    ):
        table.add_column(header, justify="right")

    def step(replica: Replica, *, i: int) -> None:
        roll = rng.random()
        findings = replica.list("findings")
        if roll < 0.3:
            findings.append(i)
        elif roll < 0.6 and len(findings) > 50:
            findings.delete(rng.randrange(len(findings)))
        elif roll < 0.6:
            findings.append(-i)
        elif roll < 0.75:
            replica.set("active").add(i % 500)
        elif roll < 0.9:
            replica.set("active").discard(rng.randrange(500))
        else:
            replica.counter("steps").increment()

    tracemalloc.start()
    samples = 10
    for i in range(updates):
        net.write(names[i % 4], functools.partial(step, i=i))
        if i % 20 == 0:
            net.run_for(0.01)
        if (i + 1) % (updates // samples) == 0:
            net.run_for(2.0)  # let digests and acknowledgements (and trimming) catch up
            stats = [node.replica.stats() for node in net.nodes.values()]
            first = net.replica(names[0])
            current, _ = tracemalloc.get_traced_memory()
            table.add_row(
                f"{i + 1:,}",
                f"{current / 2**20:,.1f}",
                f"{sum(s['log_entries'] for s in stats):,}",
                f"{sum(s['list_tombstones'] for s in stats):,}",
                f"{len(first.list('findings')):,}",
                f"{len(first.set('active')):,}",
            )
    tracemalloc.stop()
    return table
