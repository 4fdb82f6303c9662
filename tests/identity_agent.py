"""An agent process for tests/test_identity.py (the second life of an agent).

``hold FOLDER``: open a durable replica at ``FOLDER``; print ``holding`` and keep it
open until stdin closes (or 60 s), or print ``locked <message>`` if another process
holds the folder.

``agent NAME BIND PEERS WRITES [PATH]``: gossip on ``BIND`` with ``PEERS`` (comma
separated), append ``WRITES`` items ``NAME-<writer id>-<i>`` to the list ``items`` (``i``
counting on from the items it already holds),
printing ``ACK <item>`` once each write has returned; then print ``ITEMS <n> <digest>``
whenever its items change, until stdin closes (or 120 s).
"""

from __future__ import annotations

import hashlib
import sys
import threading
import time

from crdtmem import Replica, StorageLocked
from transport import ZmqGossip


def _until_stdin_closes() -> threading.Event:
    closed = threading.Event()

    def wait() -> None:
        sys.stdin.read()
        closed.set()

    threading.Thread(target=wait, daemon=True).start()
    return closed


def hold(folder: str) -> int:
    try:
        replica = Replica("holder", path=folder)
    except StorageLocked as exc:
        print(f"locked {exc}", flush=True)
        return 0
    print("holding", flush=True)
    _until_stdin_closes().wait(60)
    replica.close()
    return 0


def agent(name: str, bind: str, peers: str, writes: int, path: str | None) -> int:
    replica = Replica(name, path=path)
    changed = threading.Event()
    replica.subscribe(lambda _: changed.set())
    with ZmqGossip(
        replica, bind=bind, peers=[p for p in peers.split(",") if p], interval=0.2
    ) as gossip:
        print(f"READY {gossip.address} {replica.writer_id}", flush=True)
        first = len(replica.list("items").value)  # a durable agent goes on counting
        for i in range(first, first + writes):
            item = f"{name}-{replica.writer_id}-{i}"
            replica.list("items").append(item)
            print(f"ACK {item}", flush=True)
            time.sleep(0.02)
        closed = _until_stdin_closes()
        deadline = time.monotonic() + 120
        last = None
        while not closed.is_set() and time.monotonic() < deadline:
            changed.wait(0.1)
            changed.clear()
            items = sorted(replica.list("items").value)
            if items != last:
                last = items
                digest = hashlib.sha256(repr(items).encode()).hexdigest()[:16]
                print(f"ITEMS {len(items)} {digest}", flush=True)
    replica.close()
    return 0


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    if mode == "hold":
        sys.exit(hold(rest[0]))
    name, bind, peers, writes, *path = rest
    sys.exit(agent(name, bind, peers, int(writes), path[0] if path else None))
