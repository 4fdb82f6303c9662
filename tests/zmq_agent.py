"""An agent process for the integration tests: gossip, write, report convergence.

Prints ``READY <address>`` once bound, ``CONVERGED <digest>`` once it holds every item
it was told to expect, then keeps gossiping until its stdin closes.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import threading
import time

from crdtmem import Replica
from crdtmem.replica import ChangeEvent
from transport import ZmqGossip


def digest(replica: Replica) -> str:
    state = repr(
        (
            sorted(replica.set("items").value),
            replica.counter("writes").value,
            replica.version(),
            sorted(replica.list("log").value),
        )
    )
    return hashlib.sha256(state.encode()).hexdigest()[:16]


_PRINT_LOCK = threading.Lock()


def say(line: str) -> None:
    """Print one whole line: the gossip thread (GOT lines) and the main thread print
    concurrently, and ``print`` writes the text and its newline separately."""
    with _PRINT_LOCK:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def wait_rejoined(gossip: ZmqGossip, peers: int, since: float, timeout: float) -> int:
    """Wait (bounded) until this node has heard from ``peers`` peers since ``since``
    and every peer acknowledged its updates; returns how many it heard from."""
    deadline = time.monotonic() + timeout
    heard = 0
    while time.monotonic() < deadline:
        node = gossip.node
        assert node is not None
        try:  # the gossip thread owns the dict: a snapshot, retried if it changed
            states = list(node.peers.values())
            spread = node.spread()
        except RuntimeError:
            states, spread = [], False
        heard = sum(1 for p in states if p.last_heard is not None and p.last_heard >= since)
        if heard >= peers and spread:
            return heard
        time.sleep(0.02)
    return heard


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--bind", required=True)
    parser.add_argument("--peers", default="")
    parser.add_argument("--writes", type=int, default=10)
    parser.add_argument("--offline-writes", type=int, default=0)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--path", help="a durable replica: resumes its writes after a restart")
    parser.add_argument("--pace", type=float, default=0.0, help="seconds between writes")
    parser.add_argument(
        "--churn", type=int, default=0, help="also append and delete this many list items"
    )
    parser.add_argument(
        "--rejoins", type=int, default=1, help="times to cut off and rejoin (--offline-writes)"
    )
    parser.add_argument(
        "--report", type=int, default=0, help="1: print WROTE/GOT lines with wall-clock times"
    )
    args = parser.parse_args()
    replica = Replica(args.name, path=args.path)
    peers = [p for p in args.peers.split(",") if p]
    if args.report:
        seen: set[str] = set()

        def arrived(event: ChangeEvent) -> None:
            if event.local or event.field != "items":
                return
            now = time.time()
            for item in replica.set("items").value - seen:
                seen.add(item)
                say(f"GOT {item} {now:.6f}")

        replica.subscribe(arrived)

    def write(i: int) -> None:
        # One logical write is several updates; the set item goes last, so that holding
        # it means holding the rest (a writer's updates are applied in order): an agent
        # that counts items never reports convergence between the updates of one write,
        # and one killed inside a write redoes the whole write on restart (its log entry
        # and count may then appear twice, the same everywhere).
        replica.list("log").append(f"{args.name}-{i}")
        replica.counter("writes").increment()
        for _ in range(args.churn):
            scratch = replica.list("scratch")
            scratch.append(i)
            scratch.delete(len(scratch) - 1)
        replica.set("items").add(f"{args.name}-{i}")

    gossip = ZmqGossip(replica, bind=args.bind, peers=peers, interval=0.2, dead_after=1.0).start()
    say(f"READY {gossip.address}")
    mine = {item for item in replica.set("items").value if item.startswith(f"{args.name}-")}
    for i in range(len(mine), args.writes):  # a durable agent resumes where it stopped
        write(i)
        say(f"ACK {args.name}-{i}")  # the write returned: acknowledged
        if args.report:
            say(f"WROTE {args.name}-{i} {time.time():.6f}")
        if args.pace:
            time.sleep(args.pace)  # an agent thinking between writes
    written = args.writes
    for cycle in range(args.rejoins if args.offline_writes else 0):
        gossip.stop()  # cut off: keeps writing with no network
        for i in range(written, written + args.offline_writes):
            write(i)
        written += args.offline_writes
        time.sleep(0.5)
        gossip = ZmqGossip(replica, bind=args.bind, peers=peers, interval=0.2, dead_after=1.0)
        gossip.start()
        say("REJOINED")
        if args.rejoins > 1:  # each rejoin must hear from every peer, and spread
            heard = wait_rejoined(gossip, len(peers), time.monotonic(), args.timeout)
            say(f"HEARD {cycle} {heard}/{len(peers)}")
    deadline = time.monotonic() + args.timeout
    done = threading.Event()
    replica.subscribe(lambda _: done.set() if len(replica.set("items")) >= args.expect else None)
    while len(replica.set("items")) < args.expect and time.monotonic() < deadline:
        done.wait(0.05)
    if len(replica.set("items")) < args.expect:
        say(f"TIMEOUT {len(replica.set('items'))}/{args.expect}")
    else:
        # a last beat so that peers that still lack our last items get them
        say(f"CONVERGED {digest(replica)}")
        if args.churn:
            # Deleted items are collected once every member's digest shows them.
            while replica.stats()["list_tombstones"] and time.monotonic() < deadline:
                time.sleep(0.05)
            stats = replica.stats()
            say(f"COLLECTED {stats['list_collected']} {stats['list_tombstones']}")
    sys.stdin.read()  # keep gossiping until the test closes our stdin
    gossip.stop()
    say(f"FINAL {digest(replica)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
