"""What security costs (issue 11, "How fast"): security off and on, in one run.

- local write: one counter increment on a replica whose gossip driver is running with
  four peers (the write itself, plus waking the loop), per write;
- merge: one received push of one update handled by a node (decode, name check, merge,
  answer), at 1,000 and 100,000 fields of state; "on" passes the name the transport
  proved (``authenticated=``), which is the whole of what security adds to the node's
  receive path (CURVE decryption is inside libzmq, per byte: see docs/security.md);
- propagation: a write at one agent process until it is applied at all four other
  agent processes (5 processes on loopback, a full mesh of named peers), p50 and p99
  over the writes (as ``benchmarks.gossip`` measures it).

The machine is shared and noisy, so off and on alternate: groups run off, on, off, on
(one of each with ``--quick``) and the table shows each run; merge costs are the best of
3 runs, off and on interleaved.

``python -m benchmarks.security [--quick]``; also ``python -m benchmarks --only security``.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from typing import Any

import zmq
from rich.console import Console
from rich.table import Table

from crdtmem import Replica
from crdtmem.gossip import GossipNode
from crdtmem.keys import write_key_pair
from transport import ZmqGossip
from transport.loopback import free_loopback_addresses as free_addresses

PEERS = 4
INTERVAL = 0.5
PING_GAP = 0.02  # seconds between two measured writes: each propagates alone


def _keys(names: list[str], folder: str) -> None:
    for name in names:
        public, secret = zmq.curve_keypair()
        write_key_pair(name, folder, public, secret)


def _secured(name: str, keys: str | None) -> dict[str, Any]:
    return {} if keys is None else {"identity": f"{keys}/{name}.key", "trusted": keys}


def agent(  # noqa: PLR0917 - a spawn target: positional arguments only
    name: str, bind: str, peers: list[str], keys: str | None, pipe: Connection, arrivals: Any
) -> None:
    """A process: gossips; on "ping" writes and answers the write's time; reports the
    arrival time of each remote ping."""
    replica = Replica(name)
    replica.subscribe(
        lambda e: (
            arrivals.put((name, replica.counter("ping").value, time.perf_counter()))
            if e.field == "ping" and not e.local
            else None
        )
    )
    with ZmqGossip(replica, bind=bind, peers=peers, interval=INTERVAL, **_secured(name, keys)):
        while True:
            command, argument = pipe.recv()
            if command == "ping":
                replica.counter("ping").increment()
                pipe.send(time.perf_counter())
            elif command == "burst":  # write as fast as possible for `argument` seconds
                deadline, count = time.perf_counter() + argument, 0
                while time.perf_counter() < deadline:
                    replica.counter("load").increment()
                    count += 1
                pipe.send(count)
            elif command == "ready":
                pipe.send(replica.counter("warm").value)
            else:
                pipe.send(None)
                return


def _group(keys: str | None, pings: int, burst: float) -> tuple[list[float], float]:
    """Propagation latencies (seconds) of ``pings`` writes to PEERS peers, and the
    per-write cost of a burst at the writer, in one group of 1 + PEERS processes."""
    names = [f"agent{i}" for i in range(PEERS + 1)]
    binds = dict(zip(names, free_addresses(len(names)), strict=True))
    context = mp.get_context("spawn")
    arrivals = context.Queue()
    links: dict[str, Connection] = {}
    processes: list[mp.process.BaseProcess] = []
    for name in names:
        peers = [f"{n}@{a}" if keys else a for n, a in binds.items() if n != name]
        mine, theirs = context.Pipe()
        process = context.Process(
            target=agent, args=(name, binds[name], peers, keys, theirs, arrivals), daemon=True
        )
        process.start()
        links[name] = mine
        processes.append(process)
    try:

        def ask(name: str, command: str, argument: Any = None) -> Any:
            links[name].send((command, argument))
            if not links[name].poll(60):
                raise TimeoutError(f"{name} did not answer {command}")
            return links[name].recv()

        for name in names:
            ask(name, "ready")
        writer = names[0]
        # Warm up: every connection up (a first ping reaches all four).
        ask(writer, "ping")
        got: set[str] = set()
        deadline = time.monotonic() + 30
        while len(got) < PEERS and time.monotonic() < deadline:
            who, _, _ = arrivals.get(timeout=30)
            got.add(who)
        latencies: list[float] = []
        for number in range(2, pings + 2):
            written = ask(writer, "ping")
            seen: dict[str, float] = {}
            deadline = time.monotonic() + 30
            while len(seen) < PEERS and time.monotonic() < deadline:
                who, value, when = arrivals.get(timeout=30)
                if value >= number:
                    seen.setdefault(who, when)
            if len(seen) == PEERS:  # (else: not counted; the table says how many were)
                latencies.append(max(seen.values()) - written)
            time.sleep(PING_GAP)
        count = ask(writer, "burst", burst)
        return latencies, burst / max(1, count)
    finally:
        for name in names:
            with contextlib.suppress(OSError):  # already gone: killed below
                links[name].send(("stop", None))
        for child in processes:
            child.join(10)
            if child.is_alive():
                child.kill()
                child.join(5)


def _merge_cost(fields: int, authenticated: bool, repeat: int) -> float:
    """Seconds per received one-update push at a node holding ``fields`` fields."""
    receiver = Replica("receiver")
    for number in range(fields):
        receiver.counter(f"f{number}").increment()
    node = GossipNode(receiver, "node-r", peers=["node-s"])
    sender = GossipNode(Replica("sender"), "node-s", peers=["node-r"])
    frames: list[bytes] = []
    for _ in range(repeat):
        sender.replica.counter("hot").increment()
        frames += [f.data for f in sender.flush(0.0) if f.peer == "node-r"]
    name = "sender" if authenticated else None
    started = time.perf_counter()
    for data in frames:
        node.receive(data, 0.0, authenticated=name)
    return (time.perf_counter() - started) / max(1, len(frames))


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def run(quick: bool = False) -> Table:
    pings, burst, repeat = (100, 0.5, 500) if quick else (300, 1.0, 2000)
    table = Table(title=f"security off and on: writes, merges, propagation to {PEERS} peers")
    table.add_column("measure")
    table.add_column("off", justify="right")
    table.add_column("on (CURVE)", justify="right")
    results: dict[str, list[tuple[list[float], float]]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory(prefix="crdtmem-bench-keys-") as folder:
        _keys([f"agent{i}" for i in range(PEERS + 1)], folder)
        for _ in range(1 if quick else 2):
            for mode, keys in (("off", None), ("on", folder)):
                results[mode].append(_group(keys, pings, burst))

    def each(mode: str, figure: Any) -> str:
        return ", ".join(figure(run) for run in results[mode])

    table.add_row(
        "local write (counter +1, driver running), µs",
        *(each(m, lambda run: f"{run[1] * 1e6:.1f}") for m in ("off", "on")),
    )
    for fields in (1_000, 100_000) if not quick else (1_000, 20_000):
        # Best of 3, off and on interleaved: the machine is shared and noisy.
        runs = [[_merge_cost(fields, on, repeat) for on in (False, True)] for _ in range(3)]
        cost = [min(run[i] for run in runs) for i in (0, 1)]
        table.add_row(
            f"merge of a 1-update push at {fields:,} fields, µs",
            *(f"{c * 1e6:.1f}" for c in cost),
        )
    for label, fraction in (("p50", 0.5), ("p99", 0.99)):
        table.add_row(
            f"propagation to all {PEERS} peers, {label}, ms",
            *(
                each(m, lambda run, f=fraction: f"{_percentile(run[0], f) * 1e3:.2f}")
                for m in ("off", "on")
            ),
        )
    table.add_row(
        "writes measured",
        *(each(m, lambda run: f"{len(run[0])}/{pings}") for m in ("off", "on")),
    )
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.security", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    Console(width=140).print(run(args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
