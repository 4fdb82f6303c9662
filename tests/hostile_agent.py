"""A hostile peer and a constrained honest node, for tests/test_hostile_peers.py (issue 10).

Two modes, each a separate process so that a test can stop it and constrain it:

- ``send``: a raw ZeroMQ DEALER connected to a node's ROUTER sends the crafted frames of
  one case (:data:`CASES`), then prints ``SENT <frames> <bytes>`` and exits. Every frame
  is well-formed where the case says so, built with the library's own encoders (a real
  :class:`~crdtmem.gossip.GossipNode` makes the frame templates, ``crdtmem.messages``
  the replica messages, the CRDT types their deltas), then altered so that it lies.
- ``node``: an honest :class:`~transport.ZmqGossip` node, optionally durable, under a
  lowered ``RLIMIT_NOFILE`` or ``RLIMIT_AS``, or with a disk that fills up (``os.write``
  of regular files is replaced *in this process only*: writes succeed up to a byte
  budget, the one crossing it is cut short, later ones fail with ``ENOSPC``). Prints
  ``READY <address>``, then answers one stdin command per line with one stdout line:
  ``write NAME K`` (adds K items ``NAME-i`` to the set ``items``; prints ``WROTE <n>`` with
  how many writes returned, ``FULL <n>`` if one raised), ``stats`` (``STATS <json>``),
  ``space`` (the disk has room again; ``SPACE``), ``quit`` (``FINAL <json>``, then exits).

The frame builders are plain functions, so the tests run the same frames in the
simulator (:class:`~transport.SimNetwork`) as against real sockets.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import resource
import stat
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Final

import zmq

from crdtmem import Replica, codec
from crdtmem.gcounter import GCounter
from crdtmem.gossip import ACK, PUSH, SYNC, GossipNode
from crdtmem.hlc import Timestamp
from crdtmem.lwwregister import LWWRegister
from crdtmem.messages import LogEntry, Run, array_header, state_message, updates_message
from crdtmem.pncounter import PNCounter
from crdtmem.rga import RGA
from transport import ZmqGossip

# The hostile's own address as its frames claim it (nothing listens there) and writer id.
EVIL_ADDRESS: Final = "tcp://127.0.0.1:7"
EVIL_WRITER: Final = "mallory"
# The address of issue 10's case 8: the discard port, which never answers.
GHOST_ADDRESS: Final = "tcp://127.0.0.1:9"
MIB: Final = 1024 * 1024


# --- frames, built from the library's own encoders then altered ------------------------


def _templates() -> dict[int, list[Any]]:
    """One real frame body of each kind, as a GossipNode makes it: ``[kind, sender
    address, writer id, version, extra]``; the builders below replace fields of a copy."""
    evil = GossipNode(Replica(EVIL_WRITER), EVIL_ADDRESS, peers=["victim"])
    honest = GossipNode(Replica("victim"), "victim", peers=[EVIL_ADDRESS])
    evil.replica.counter("c").increment()
    frames = [*evil.tick(0.0), *evil.flush(0.0)]
    for frame in list(frames):
        frames += honest.receive(frame.data, 0.0)
    bodies = [codec.unpack(f.data) for f in frames]
    return {kind: next(b for b in bodies if b[0] == kind) for kind in (PUSH, ACK, SYNC)}


_TEMPLATES: Final = _templates()


def frame(
    kind: int,
    *,
    version: dict[str, int] | None = None,
    extra: Any = None,
    sender: str = EVIL_ADDRESS,
    writer: str = EVIL_WRITER,
) -> bytes:
    """A gossip frame of ``kind`` from ``sender``/``writer`` claiming ``version``;
    ``extra`` replaces the template's last field (a PUSH's message, a SYNC's digest)."""
    body = list(_TEMPLATES[kind])
    body[1], body[2], body[3] = sender, writer, dict(sorted((version or {}).items()))
    if extra is not None:
        body[4] = extra
    return codec.pack(body)


def digest(addresses: list[str] | None = None) -> list[Any]:
    """A SYNC's digest (``[peers, members, retired, forgotten]``) naming ``addresses``."""
    extra = list(_TEMPLATES[SYNC][4])
    extra[0] = addresses
    return extra


def push(message: bytes, version: dict[str, int] | None = None, **who: str) -> bytes:
    """A PUSH frame carrying the replica message ``message``."""
    return frame(PUSH, version=version, extra=message, **who)


def update(origin: str, seq: int, name: str, delta: Any, deps: dict[str, int] | None = None) -> Run:
    """One run of one update: ``delta`` (a CRDT) for field ``name``, the ``seq``-th of
    ``origin``."""
    entry: LogEntry = (deps or {}, name, delta.TAG, codec.pack_body(delta.to_wire()))
    return (origin, seq, [entry])


def register_delta(value: object, wall: int = 1, logical: int = 0) -> LWWRegister:
    return LWWRegister(Timestamp(wall, logical), EVIL_WRITER, value)


def list_delta(lamport: int, value: object) -> RGA:
    """An RGA insert delta (first element, at the head) with element id ``lamport``,
    from a real insert whose id is then altered."""
    replica = Replica(EVIL_WRITER)
    before = replica.version()
    replica.list("l").append(value)
    runs: list[list[Any]] = codec.unpack(replica.delta_since(before))[1]
    # (a message splices each delta in, packed: it decodes in place)
    wire: list[Any] = runs[0][2][0][3]
    wire[0] = [EVIL_WRITER]  # the element's writer: the update's origin
    elements = list(wire[1]) + list(wire[2])  # (in the tree, or an orphan: one of them)
    elements[0][0] = lamport
    return RGA.from_wire(wire)


# --- the cases ---------------------------------------------------------------------------


def case_overflow(victim: str) -> list[bytes]:
    """Case 1: claims of ``{victim: 2**64-1}`` (the largest msgpack integer) as a full
    state, in a digest, and as the sequence number of an update run."""
    huge = 2**64 - 1
    return [
        push(state_message("evil", {victim: huge}, {})),
        frame(SYNC, version={victim: huge}, extra=digest()),
        push(updates_message([update(victim, huge, "notes", register_delta("x"))])),
        push(updates_message([update(EVIL_WRITER, huge, "notes", register_delta("x"))])),
    ]


def case_wide_digest(count: int) -> list[bytes]:
    """Case 2: one digest naming ``count`` peer addresses (privileged ports of the
    loopback address: nothing of the test's listens there, a connection is refused)."""
    addresses = [f"tcp://127.0.0.1:{port}" for port in range(1, count + 1) if port != 7]
    return [frame(SYNC, extra=digest(addresses[:count]))]


def case_false_claim(victim: str, claim: int) -> list[bytes]:
    """Case 3: a full state claiming ``victim``'s first ``claim`` updates (and a digest
    claiming the same)."""
    return [
        push(state_message("evil", {victim: claim}, {})),
        frame(SYNC, version={victim: claim}, extra=digest()),
    ]


def case_largest(max_wall: int, max_logical: int, max_lamport: int, max_count: int) -> list[bytes]:
    """Case 4: updates carrying the largest timestamp, lamport and count allowed, on a
    register, a list, a counter, a grow-only counter and a register of an existing
    name (``shared``, which the honest nodes write too)."""
    counts = GCounter({EVIL_WRITER: max_count}, {})
    runs = [
        update(EVIL_WRITER, 1, "notes", register_delta("evil", max_wall, max_logical)),
        update(EVIL_WRITER, 2, "shared", register_delta("evil", max_wall, max_logical)),
        update(EVIL_WRITER, 3, "findings", list_delta(max_lamport, "evil")),
        update(EVIL_WRITER, 4, "votes", PNCounter(counts, GCounter({}, {}))),
        update(EVIL_WRITER, 5, "hits", counts),
    ]
    # One run per update: each names its seq (dependencies are carried per run).
    return [push(updates_message([run])) for run in runs]


def bomb(size: int) -> bytes:
    """Case 6: ``size`` bytes of msgpack that decode to ``size`` empty arrays."""
    return array_header(size) + b"\x90" * size


def case_bomb(size: int) -> list[bytes]:
    """Case 6: the 0x90 bomb as a whole frame and as the message a PUSH carries, then
    nested where a well-formed frame has an array or a map: as a frame's version vector,
    and as an updates message's list of runs."""
    pack = codec.pack_body
    nested_frame = [array_header(5), pack(PUSH), pack(EVIL_ADDRESS), pack(EVIL_WRITER)]
    nested_frame += [bomb(size), pack(b"")]
    return [
        codec.HEADER + bomb(size),
        push(codec.HEADER + bomb(size)),
        codec.HEADER + b"".join(nested_frame),
        push(codec.HEADER + array_header(2) + pack(1) + bomb(size)),
    ]


def case_undeliverable(count: int, size: int) -> list[bytes]:
    """Case 7: ``count`` updates of ``size`` bytes each that can never be delivered
    (each is the 2nd update of a made-up origin whose 1st never comes)."""
    blob = b"\xee" * size
    return [
        push(updates_message([update(f"ghost-{i}", 2, "notes", register_delta(blob))]))
        for i in range(count)
    ]


def case_origins(count: int, per_frame: int, *, deliverable: bool) -> list[bytes]:
    """Cases 7 and 9: one small update from each of ``count`` made-up origins, ``per_frame``
    origins per PUSH; deliverable (seq 1, no dependencies: each enters the version
    vector) or not (seq 2: each waits in the early-update buffer for good)."""
    seq = 1 if deliverable else 2
    frames = []
    for start in range(0, count, per_frame):
        runs = [
            update(f"o{i}", seq, "hits", GCounter({f"o{i}": 1}, {}))
            for i in range(start, min(count, start + per_frame))
        ]
        frames.append(push(updates_message(runs)))
    return frames


def case_ghost_ack() -> list[bytes]:
    """Case 8: one ACK from an address that never answers."""
    return [frame(ACK, sender=GHOST_ADDRESS, writer="ghost")]


def case_garbage(count: int) -> list[bytes]:
    """Case 10: ``count`` frames that are rejected, each claiming another sender (so a
    per-sender log limit alone does not help), some not even msgpack."""
    frames = []
    for i in range(count):
        if i % 4 == 3:
            frames.append(b"\x00garbage" + i.to_bytes(4, "big"))
        else:
            sender = f"tcp://127.0.0.1:{10_000 + i % 50_000}/{i}"
            frames.append(codec.pack([SYNC, sender, EVIL_WRITER, {}, "not a digest"]))
    return frames


# A trailer every ``send`` ends with: rejected frames, processed after the case's frames
# (one connection is first-in first-out), so a test that sees enough frames handled
# knows the case's frames were.
TRAILER: Final = 64


def trailer() -> list[bytes]:
    return [b"trailer"] * TRAILER


def build(case: str, victim: str, count: int, size: int) -> list[bytes]:
    """The frames of ``case`` (see :data:`CASES`)."""
    return CASES[case](victim, count, size)


CASES: Final[dict[str, Callable[[str, int, int], list[bytes]]]] = {
    "overflow": lambda victim, _count, _size: case_overflow(victim),
    "wide-digest": lambda _victim, count, _size: case_wide_digest(count),
    "false-claim": lambda victim, count, _size: case_false_claim(victim, count),
    "bomb": lambda _victim, _count, size: case_bomb(size),
    "undeliverable": lambda _victim, count, size: case_undeliverable(count, size),
    "early-origins": lambda _v, count, size: case_origins(count, size, deliverable=False),
    "origins": lambda _v, count, size: case_origins(count, size, deliverable=True),
    "ghost-ack": lambda _victim, _count, _size: case_ghost_ack(),
    "largest": lambda _victim, _count, _size: case_largest(
        codec.MAX_WALL, codec.MAX_LOGICAL, codec.MAX_LAMPORT, codec.MAX_COUNT
    ),
    "garbage": lambda _victim, count, _size: case_garbage(count),
}


def send(target: str, frames: list[bytes]) -> tuple[int, int]:
    """Send ``frames`` and the trailer from a raw DEALER to ``target``'s ROUTER; returns
    (frames, bytes) once ZeroMQ has handed all of them to the kernel."""
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.SNDHWM, 0)  # queue everything: this peer is in no hurry
    # Closing waits until every frame is handed over, however slow the node is (the test
    # bounds this process's life).
    dealer.setsockopt(zmq.LINGER, -1)
    dealer.connect(target)
    sent = 0
    for data in [*frames, *trailer()]:
        dealer.send(data, copy=False)
        sent += len(data)
    dealer.close()
    # (term waits, LINGER -1, until every frame is handed over to the kernel)
    context.term()
    return len(frames) + TRAILER, sent


# --- an honest node under constraints --------------------------------------------------


class DiskBudget:
    """A disk that fills up: ``os.write`` to a regular file succeeds while ``budget``
    bytes last, the write crossing it is cut short, and later ones raise ENOSPC, until
    :meth:`refill`. Pipes and sockets are untouched. Installed in this process only."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.lock = threading.Lock()
        self.failures = 0
        self._write = os.write

    def install(self) -> None:
        os.write = self.write

    def refill(self) -> None:
        with self.lock:
            self.budget = -1

    def write(self, fd: int, data: Any, /) -> int:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return self._write(fd, data)
        with self.lock:
            if self.budget < 0:
                return self._write(fd, data)
            if self.budget == 0:
                self.failures += 1
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            part = bytes(memoryview(data)[: self.budget])
            written = self._write(fd, part)
            self.budget -= written
            return written


def _limit(which: int, soft: int) -> None:
    _, hard = resource.getrlimit(which)
    resource.setrlimit(which, (soft, hard if hard == resource.RLIM_INFINITY else max(soft, hard)))


def _mapped_bytes() -> int:
    """This process's virtual memory size (VmSize), in bytes."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def node(args: argparse.Namespace) -> int:
    if args.nofile:
        _limit(resource.RLIMIT_NOFILE, args.nofile)
    disk = DiskBudget(args.disk_budget) if args.disk_budget >= 0 else None
    replica = Replica(args.name, path=args.path)
    if disk is not None:
        disk.install()
    peers = [p for p in args.peers.split(",") if p]
    gossip = ZmqGossip(replica, bind=args.bind, peers=peers, interval=0.1, dead_after=1.0)
    gossip.start()
    if args.address_space_mib:  # headroom above what the running node already maps
        _limit(resource.RLIMIT_AS, _mapped_bytes() + args.address_space_mib * MIB)
    print(f"READY {gossip.address}", flush=True)

    def report() -> dict[str, Any]:
        driver = gossip.stats
        return {
            "replica": replica.stats(),
            "gossip": driver() if callable(driver) else driver,
            "health": getattr(gossip, "health", None),
            "error": repr(getattr(gossip, "error", None)),
            "version": len(replica.version()),
            "items": sorted(replica.set("items").value),
            "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "open_fds": len(os.listdir("/proc/self/fd")),
            "disk_failures": disk.failures if disk is not None else 0,
        }

    for line in sys.stdin:
        command, *rest = line.split()
        if command == "write":
            name, count = rest[0], int(rest[1])
            done = 0
            try:
                for i in range(count):
                    replica.set("items").add(f"{name}-{i}")
                    done += 1
            except Exception as exc:
                print(f"FULL {done} {type(exc).__name__}", flush=True)
                continue
            print(f"WROTE {done}", flush=True)
        elif command == "stats":
            print("STATS " + json.dumps(report()), flush=True)
        elif command == "space" and disk is not None:
            disk.refill()
            print("SPACE", flush=True)
        elif command == "quit":
            break
    try:
        gossip.stop()
    finally:
        print("FINAL " + json.dumps(report()), flush=True)
        replica.close()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    hostile = modes.add_parser("send", help="send one case's frames to a node")
    hostile.add_argument("--target", required=True)
    hostile.add_argument("--case", required=True, choices=sorted(CASES))
    hostile.add_argument("--victim", default="victim", help="a writer id to lie about")
    hostile.add_argument("--count", type=int, default=1)
    hostile.add_argument("--size", type=int, default=1)
    honest = modes.add_parser("node", help="an honest node under constraints")
    honest.add_argument("--name", required=True)
    honest.add_argument("--bind", required=True)
    honest.add_argument("--peers", default="")
    honest.add_argument("--path", help="a durable replica in this folder")
    honest.add_argument("--nofile", type=int, default=0, help="RLIMIT_NOFILE soft limit")
    honest.add_argument(
        "--address-space-mib", type=int, default=0, help="RLIMIT_AS: MiB above the started node"
    )
    honest.add_argument("--disk-budget", type=int, default=-1, help="bytes before ENOSPC")
    args = parser.parse_args()
    if args.mode == "node":
        return node(args)
    started = time.monotonic()
    frames, sent = send(args.target, build(args.case, args.victim, args.count, args.size))
    print(f"SENT {frames} {sent} {time.monotonic() - started:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
