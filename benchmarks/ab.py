"""Before and after in one run: the same measurements of two (or more) source trees,
interleaved, so that a busy machine slows every tree alike.

``python -m benchmarks.ab OLD_TREE NEW_TREE [--rounds 3] [--quick]`` runs, ``--rounds``
times and alternating the order of the trees each round, this file as a script in a fresh
interpreter with ``crdtmem`` (and ``transport``) imported from each tree (its root on
``PYTHONPATH``, e.g. a ``git worktree add OLD_TREE 985b979``), and prints, per tree, the
median over rounds of:

- honest propagation between ZeroMQ nodes, each its own process (``benchmarks.gossip``'s
  ``propagation``: one write until both peers applied it), p50 and p99;
- ``Replica.merge`` of a one-update message (a list insert) into replicas holding 1k, 10k
  and 100k list elements (median of 200 merges);
- the same merge into an empty replica while 20k made-up origins each have an update
  waiting in the early-update buffer (what the drain costs);
- ``GossipNode.receive`` of a one-update push (the whole frame handler: decode, checks,
  merge, acknowledgement) at a node whose replica holds 10k elements and that knows 3 or
  30 peers (each of which wrote, so each is in the version vector too).

The last two show whether the checks make merge cost grow with state size or with the
number of peers: each row is next to the same row of the other tree, and to the smallest
row of its own tree. ``--instructions OP ...`` adds instruction counts per operation
(machine-independent, :mod:`benchmarks.instructions`) of the operations named, per tree;
``python -m benchmarks.instructions OLD_TREE NEW_TREE`` counts all of them.

``python benchmarks/ab.py --measure [--quick]`` is the measured program itself (JSON out).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import TypeVar

from rich.console import Console
from rich.table import Table

import crdtmem
from benchmarks import instructions
from benchmarks.gossip import propagation
from crdtmem import Replica, codec
from crdtmem.gcounter import GCounter
from crdtmem.gossip import GossipNode
from crdtmem.messages import Run, updates_message

T = TypeVar("T")
MERGE_SIZES = (1_000, 10_000, 100_000)
PEER_COUNTS = (3, 30)
PEERS_STATE = 10_000
BUFFERED_ORIGINS = 20_000
ROUNDS = 200


def _timed(action: Callable[[], T]) -> tuple[float, T]:
    """Seconds ``action`` took, and what it returned."""
    gc.disable()  # a collection landing inside one sample would swamp it
    try:
        start = time.perf_counter()
        result = action()
        return time.perf_counter() - start, result
    finally:
        gc.enable()


def _median(samples: list[float]) -> float:
    return sorted(samples)[len(samples) // 2]


def merge_cost(size: int, rounds: int) -> float:
    """Median seconds of ``Replica.merge`` of one list insert into ``size`` elements."""
    source = Replica("source")
    items = source.list("findings")
    for i in range(size):
        items.append(i)
    target = Replica("target")
    target.merge(source.delta_since())
    samples = []
    for i in range(rounds):
        before = target.version()
        items.insert(i % 50, f"new {i}")
        message = source.delta_since(before)
        samples.append(_timed(partial(target.merge, message))[0])
    return _median(samples)


def merge_cost_buffered(origins: int, rounds: int) -> float:
    """Median seconds of ``Replica.merge`` of one list insert while ``origins`` made-up
    origins each have an update waiting in the early-update buffer (issue 10, case 7:
    one that can never be delivered, its predecessor never comes)."""
    target = Replica("target")
    runs: list[Run] = []
    for i in range(origins):
        delta = GCounter({f"o{i}": 1}, {})
        runs.append((f"o{i}", 2, [({}, "hits", GCounter.TAG, codec.pack_body(delta.to_wire()))]))
    for start in range(0, origins, 5_000):
        target.merge(updates_message(runs[start : start + 5_000]))
    source = Replica("source")
    items = source.list("findings")
    samples = []
    for i in range(rounds):
        before = target.version()
        items.insert(i % 50, f"new {i}")
        samples.append(_timed(partial(target.merge, source.delta_since(before)))[0])
    return _median(samples)


def receive_cost(peers: int, size: int, rounds: int) -> float:
    """Median seconds of ``GossipNode.receive`` of a one-update push at a node that
    knows ``peers`` peers (all in its version vector) and holds ``size`` elements."""
    writer = Replica("writer")
    items = writer.list("findings")
    for i in range(size):
        items.append(i)
    target = Replica("target")
    target.merge(writer.delta_since())
    addresses = [f"peer-{i}" for i in range(peers - 1)]
    for address in addresses:  # every peer wrote once: its id is in the version vector
        other = Replica(address)
        other.counter("votes").increment()
        target.merge(other.delta_since())
    node = GossipNode(target, "target", peers=["writer", *addresses])
    sender = GossipNode(writer, "writer", peers=["target"])
    for frame in sender.flush(0.0):  # the whole state first (one large push)
        for answer in node.receive(frame.data, 0.0):
            if answer.peer == "writer":
                sender.receive(answer.data, 0.0)
    samples = []
    for i in range(rounds):
        items.insert(i % 50, f"new {i}")
        frames = [f for f in sender.flush(1.0 + i) if f.peer == "target"]
        for frame in frames:
            now = 1.0 + i
            seconds, answers = _timed(partial(node.receive, frame.data, now))
            samples.append(seconds)
            for answer in answers:
                if answer.peer == "writer":
                    sender.receive(answer.data, now)
    return _median(samples)


def measure(quick: bool) -> dict[str, float]:
    """Every figure of this tree, in seconds."""
    results: dict[str, float] = {}
    p50, p99 = propagation(2, 100 if quick else 300)
    results["propagation to 2 peers, p50"] = p50
    results["propagation to 2 peers, p99"] = p99
    sizes = MERGE_SIZES[:2] if quick else MERGE_SIZES
    for size in sizes:
        results[f"merge into {size:,} elements"] = merge_cost(size, ROUNDS)
    results[f"merge, {BUFFERED_ORIGINS:,} early origins buffered"] = merge_cost_buffered(
        BUFFERED_ORIGINS, ROUNDS
    )
    for peers in PEER_COUNTS:
        results[f"receive, {peers} peers, {PEERS_STATE:,} elements"] = receive_cost(
            peers, PEERS_STATE, ROUNDS
        )
    return results


def run_tree(tree: str, quick: bool) -> dict[str, float]:
    """:func:`measure` in a fresh interpreter importing ``crdtmem`` from ``tree``."""
    env = {**os.environ, "PYTHONPATH": os.path.abspath(tree), "PYTHONHASHSEED": "0"}
    command = [sys.executable, os.path.abspath(__file__), "--measure"]
    done = subprocess.run(
        command + (["--quick"] if quick else []),
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    if not done.stderr.strip().splitlines()[-1].startswith(os.path.abspath(tree)):
        raise RuntimeError(f"crdtmem was not imported from {tree}: {done.stderr}")
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="*", help="source trees (default: this one)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each tree, interleaved")
    parser.add_argument("--quick", action="store_true", help="fewer samples, no 100k state")
    parser.add_argument(
        "--instructions",
        nargs="*",
        metavar="OP",
        choices=sorted(instructions.OPERATIONS),
        help="also count instructions per operation of these benchmarks.instructions "
        "operations under callgrind, per tree (needs valgrind)",
    )
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(crdtmem.__file__, file=sys.stderr)  # which tree: run_tree checks it
        print(json.dumps(measure(args.quick)))
        return 0
    trees = args.trees or [os.getcwd()]
    runs: dict[str, list[dict[str, float]]] = {tree: [] for tree in trees}
    for round_ in range(args.rounds):
        order = trees if round_ % 2 == 0 else list(reversed(trees))
        for tree in order:
            print(f"round {round_ + 1}/{args.rounds}: {tree}", file=sys.stderr, flush=True)
            runs[tree].append(run_tree(tree, args.quick))
    names = list(runs[trees[0]][0])
    table = Table(title=f"before / after, median of {args.rounds} interleaved runs per tree")
    table.add_column("measure")
    for tree in trees:
        table.add_column(os.path.basename(os.path.abspath(tree)), justify="right")
    if len(trees) == 2:
        table.add_column("after / before", justify="right")
    for name in names:
        medians = [statistics.median(run[name] for run in runs[tree]) for tree in trees]
        cells = [
            f"{m * 1e3:.3f} ms" if "propagation" in name else f"{m * 1e6:,.1f} µs" for m in medians
        ]
        if len(trees) == 2:
            cells.append(f"{medians[1] / medians[0]:.3g}x")
        table.add_row(name, *cells)
    Console(width=160).print(table)
    if args.instructions:
        counts = Table(title="instructions per operation (callgrind, benchmarks.instructions)")
        counts.add_column("operation")
        for tree in trees:
            counts.add_column(os.path.basename(os.path.abspath(tree)), justify="right")
        for operation in args.instructions:
            per_tree = [instructions.per_operation(tree, operation) for tree in trees]
            counts.add_row(operation, *(f"{n:,}" for n in per_tree))
        Console(width=160).print(counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
