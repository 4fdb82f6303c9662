"""Gossip over loopback ZeroMQ, measured with real processes, next to a central Redis.

Every agent is its own process (as in production), driven over a pipe. Times come from
``time.perf_counter`` (CLOCK_MONOTONIC on Linux, shared by all processes).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import shutil
import subprocess
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

from rich.table import Table

from crdtmem import Replica
from transport import SimNetwork, ZmqGossip
from transport.loopback import free_loopback_addresses as free_addresses

INTERVAL = 0.5


def agent(name: str, bind: str, peers: list[str], pipe: Connection, arrivals: Any) -> None:
    """A benchmark agent: writes, partitions and reports on command."""
    replica = Replica(name)
    replica.subscribe(
        lambda e: (
            arrivals.put((name, replica.counter("ping").value, time.perf_counter()))
            if e.field == "ping" and not e.local
            else None
        )
    )
    gossip: ZmqGossip | None = ZmqGossip(replica, bind=bind, peers=peers, interval=INTERVAL).start()
    try:
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
            elif command == "write":
                for _ in range(argument):
                    replica.list("work").append(name)
                pipe.send(None)
            elif command == "version":
                pipe.send(replica.version())
            elif command == "stats":
                pipe.send(gossip.stats if gossip is not None else {})
            elif command == "cut":
                if gossip is not None:
                    gossip.stop()
                gossip = None
                pipe.send(None)
            elif command == "rejoin":
                gossip = ZmqGossip(replica, bind=bind, peers=peers, interval=INTERVAL).start()
                pipe.send(None)
            else:
                pipe.send(None)
                return
    finally:
        if gossip is not None:
            gossip.stop()


def joiner(name: str, bind: str, peers: list[str], pipe: Connection, writes: int) -> None:
    """An agent that starts and writes at once: ``writes`` pings 200 ms apart right after
    ``start()``, before any connection is up; sends the write times, then waits for
    the word to stop."""
    replica = Replica(name)
    gossip = ZmqGossip(replica, bind=bind, peers=peers, interval=INTERVAL).start()
    try:
        times = []
        for _ in range(writes):
            replica.counter("ping").increment()
            times.append(time.perf_counter())
            time.sleep(JOIN_PACE)
        pipe.send(times)
        pipe.recv()
    finally:
        gossip.stop()


JOIN_PACE = 0.2


def join_and_write(writes: int, runs: int) -> tuple[float, float]:
    """p50, p99 seconds from a write of an agent that just joined (two agents running)
    until both peers have applied it; ``runs`` fresh joiners."""
    samples: list[float] = []
    for _ in range(runs):
        addresses = free_addresses(3)
        with cluster(2, addresses[:2]) as (_, arrivals):
            context = mp.get_context("spawn")
            mine, theirs = context.Pipe()
            process = context.Process(
                target=joiner, args=("joiner", addresses[2], addresses[:2], theirs, writes)
            )
            process.start()
            try:
                if not mine.poll(60):
                    raise TimeoutError("joiner")
                written: list[float] = mine.recv()
                seen: dict[str, dict[int, float]] = {"agent0": {}, "agent1": {}}
                deadline = time.monotonic() + 10
                while any(len(s) < writes for s in seen.values()) and time.monotonic() < deadline:
                    name, value, at = arrivals.get(timeout=10)
                    for k in range(1, value + 1):
                        seen[name].setdefault(k, at)
                for k, at in enumerate(written, 1):
                    samples.append(max(seen[n].get(k, float("inf")) for n in seen) - at)
                mine.send(None)
            finally:
                process.join(10)
                if process.is_alive():
                    process.kill()
    return percentile(samples, 0.5), percentile(samples, 0.99)


@contextlib.contextmanager
def cluster(
    size: int, addresses: list[str] | None = None
) -> Iterator[tuple[list[Connection], Any]]:
    context = mp.get_context("spawn")
    arrivals = context.Queue()
    addresses = addresses or free_addresses(size)
    pipes, processes = [], []
    for i, bind in enumerate(addresses):
        mine, theirs = context.Pipe()
        peers = [a for a in addresses if a != bind]
        process = context.Process(
            target=agent, args=(f"agent{i}", bind, peers, theirs, arrivals), daemon=True
        )
        process.start()
        pipes.append(mine)
        processes.append(process)
    try:
        for pipe in pipes:
            ask(pipe, "version")
        time.sleep(INTERVAL * 3)  # every DEALER connected and every peer heard from
        yield pipes, arrivals
    finally:
        for pipe in pipes:
            with contextlib.suppress(OSError, EOFError, TimeoutError):
                ask(pipe, "stop")
        for process in processes:
            process.join(10)
            if process.is_alive():
                process.kill()
        arrivals.close()


def ask(pipe: Connection, command: str, argument: Any = None, timeout: float = 60) -> Any:
    pipe.send((command, argument))
    if not pipe.poll(timeout):
        raise TimeoutError(command)
    return pipe.recv()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def propagation(peers: int, rounds: int) -> tuple[float, float]:
    """p50, p99 seconds from one write until every peer has applied it."""
    samples: list[float] = []
    with cluster(peers + 1) as (pipes, arrivals):
        for k in range(1, rounds + 1):
            written = ask(pipes[0], "ping")
            seen: dict[str, float] = {}
            deadline = time.monotonic() + 5
            while len(seen) < peers and time.monotonic() < deadline:
                name, value, at = arrivals.get(timeout=5)
                if value >= k:
                    seen.setdefault(name, at)
            samples.append(max(seen.values()) - written)
            time.sleep(0.002)
    return percentile(samples, 0.5), percentile(samples, 0.99)


def redis_round_trip(rounds: int) -> tuple[float, float] | None:
    """p50, p99 of a versioned JSON write (WATCH/MULTI/EXEC) plus a read by another
    client: what one agent pays to publish and another to see it, with a central store."""
    server = shutil.which("redis-server")
    try:
        import redis
    except ImportError:
        return None
    if server is None:
        return None
    (address,) = free_addresses(1)
    port = int(address.rsplit(":", 1)[1])
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        writer = redis.Redis(port=port)
        reader = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.ConnectionError):
                writer.ping()
                break
            time.sleep(0.02)
        writer.set("memory", json.dumps({"version": 0, "ping": 0}))
        samples = []
        for _ in range(rounds):
            start = time.perf_counter()
            with writer.pipeline() as pipe:
                while True:
                    try:
                        pipe.watch("memory")  # type: ignore[no-untyped-call]
                        state = json.loads(pipe.get("memory") or "{}")
                        state["version"] += 1
                        state["ping"] += 1
                        pipe.multi()
                        pipe.set("memory", json.dumps(state))
                        pipe.execute()
                        break
                    except redis.WatchError:
                        continue
            json.loads(reader.get("memory") or "{}")
            samples.append(time.perf_counter() - start)
        return percentile(samples, 0.5), percentile(samples, 0.99)
    finally:
        process.terminate()
        process.wait(10)


def throughput(writers: int, seconds: float) -> tuple[float, float]:
    """Updates/s that ``writers`` agents sustain, counted until all have converged; and
    the seconds convergence took after the writers stopped."""
    with cluster(writers) as (pipes, _):
        start = time.perf_counter()
        for pipe in pipes:
            pipe.send(("burst", seconds))
        total = sum(pipe.recv() for pipe in pipes)
        stopped = time.perf_counter()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            versions = [ask(p, "version") for p in pipes]
            if all(v == versions[0] for v in versions) and sum(versions[0].values()) >= total:
                break
            time.sleep(0.01)
        done = time.perf_counter()
    return total / (done - start), done - stopped


def traffic(size: int, updates: int) -> tuple[float, float, float]:
    """Bytes on the wire per update; idle frames and bytes per peer per second."""
    with cluster(size) as (pipes, _):
        before = [ask(p, "stats") for p in pipes]
        ask(pipes[0], "write", updates)
        time.sleep(INTERVAL * 4)
        after = [ask(p, "stats") for p in pipes]
        time.sleep(4.0)
        idle = [ask(p, "stats") for p in pipes]
    sent = sum(a["bytes_out"] - b["bytes_out"] for a, b in zip(after, before, strict=True))
    idle_frames = sum(i["frames_out"] - a["frames_out"] for i, a in zip(idle, after, strict=True))
    idle_bytes = sum(i["bytes_out"] - a["bytes_out"] for i, a in zip(idle, after, strict=True))
    peer_seconds = size * (size - 1) * 4.0
    return sent / updates, idle_frames / peer_seconds, idle_bytes / peer_seconds


def partition_real(size: int, seconds: float) -> float:
    """Seconds from healing a ``seconds``-long partition of a third of ``size`` agents
    (all writing) to convergence."""
    with cluster(size) as (pipes, _):
        minority = pipes[: size // 3]
        for pipe in minority:
            ask(pipe, "cut")
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for pipe in pipes:
                ask(pipe, "write", 5)
            time.sleep(0.1)
        for pipe in minority:
            ask(pipe, "rejoin")
        healed = time.perf_counter()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            versions = [ask(p, "version") for p in pipes]
            if all(v == versions[0] for v in versions):
                break
            time.sleep(0.005)
        return time.perf_counter() - healed


def partition_simulated(size: int, seconds: float) -> float:
    net = SimNetwork(1, interval=INTERVAL)
    names = [f"agent{i}" for i in range(size)]
    for name in names:
        net.add_node(name)
    net.run_for(2)
    net.partition(names[: size // 3], names[size // 3 :])

    def five_appends(replica: Replica) -> None:
        for _ in range(5):
            replica.list("work").append(1)

    for _ in range(int(seconds / 0.1)):
        for name in names:
            net.write(name, five_appends)
        net.run_for(0.1)
    net.heal()
    healed = net.now
    net.run_until_converged(timeout=120)
    return net.now - healed


def run(quick: bool) -> Table:
    rounds = 100 if quick else 400
    table = Table(title="Gossip over loopback ZeroMQ, one process per agent")
    for header in ("measure", "crdtmem", "peer / target"):
        table.add_column(header, justify="left" if header == "measure" else "right")
    redis_figures = redis_round_trip(rounds)
    redis_note = (
        f"Redis write+read p50 {redis_figures[0] * 1e3:.3f} ms, p99 {redis_figures[1] * 1e3:.3f} ms"
        if redis_figures
        else "Redis: redis-server or the redis client not installed, not measured"
    )
    for peers in (2, 4, 8):
        p50, p99 = propagation(peers, rounds)
        table.add_row(
            f"propagation to all of {peers} peers, p50 / p99",
            f"{p50 * 1e3:.3f} / {p99 * 1e3:.3f} ms",
            redis_note if peers == 2 else ("target p50 < 1 ms, p99 < 5 ms" if peers == 4 else ""),
        )
    rate, settle = throughput(4, 2.0 if quick else 5.0)
    table.add_row(
        "4 writers, sustained updates/s until converged",
        f"{rate:,.0f}",
        f"converged {settle:.2f} s after the writers stopped",
    )
    per_update, idle_frames, idle_bytes = traffic(4, 200)
    table.add_row("bytes on the wire per update (4 agents, all frames)", f"{per_update:,.0f}", "")
    table.add_row(
        "idle traffic per peer per second",
        f"{idle_frames:.2f} frames, {idle_bytes:,.0f} B",
        f"one digest per {INTERVAL} s expected",
    )
    p50, p99 = join_and_write(20, 2 if quick else 5)
    table.add_row(
        "join and write at once: write to every peer, p50 / p99",
        f"{p50 * 1e3:.1f} / {p99 * 1e3:.1f} ms",
        f"target within one interval ({INTERVAL * 1e3:.0f} ms); a write every 200 ms",
    )
    seconds = 3.0 if quick else 10.0
    table.add_row(
        f"convergence after a {seconds:.0f} s partition of 8 agents (real)",
        f"{partition_real(8, seconds):.2f} s",
        "",
    )
    table.add_row("same, simulated (virtual time)", f"{partition_simulated(8, seconds):.2f} s", "")
    return table
