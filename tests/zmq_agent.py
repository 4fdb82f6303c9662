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
    args = parser.parse_args()
    replica = Replica(args.name, path=args.path)
    peers = [p for p in args.peers.split(",") if p]

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
    print(f"READY {gossip.address}", flush=True)
    mine = {item for item in replica.set("items").value if item.startswith(f"{args.name}-")}
    for i in range(len(mine), args.writes):  # a durable agent resumes where it stopped
        write(i)
        print(f"ACK {args.name}-{i}", flush=True)  # the write returned: acknowledged
        if args.pace:
            time.sleep(args.pace)  # an agent thinking between writes
    if args.offline_writes:
        gossip.stop()  # cut off: keeps writing with no network
        for i in range(args.writes, args.writes + args.offline_writes):
            write(i)
        time.sleep(0.5)
        gossip = ZmqGossip(replica, bind=args.bind, peers=peers, interval=0.2, dead_after=1.0)
        gossip.start()
        print("REJOINED", flush=True)
    deadline = time.monotonic() + args.timeout
    done = threading.Event()
    replica.subscribe(lambda _: done.set() if len(replica.set("items")) >= args.expect else None)
    while len(replica.set("items")) < args.expect and time.monotonic() < deadline:
        done.wait(0.05)
    if len(replica.set("items")) < args.expect:
        print(f"TIMEOUT {len(replica.set('items'))}/{args.expect}", flush=True)
    else:
        # a last beat so that peers that still lack our last items get them
        print(f"CONVERGED {digest(replica)}", flush=True)
        if args.churn:
            # Deleted items are collected once every member's digest shows them.
            while replica.stats()["list_tombstones"] and time.monotonic() < deadline:
                time.sleep(0.05)
            stats = replica.stats()
            print(f"COLLECTED {stats['list_collected']} {stats['list_tombstones']}", flush=True)
    sys.stdin.read()  # keep gossiping until the test closes our stdin
    gossip.stop()
    print(f"FINAL {digest(replica)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
