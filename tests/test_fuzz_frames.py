"""Issue 10: a structure-aware fuzz of the frame handler, ``GossipNode.receive``.

Frames are well formed as gossip.py encodes them (PUSH, ACK, SYNC), and lie: huge, zero
and negative integers at every integer position, made-up origins, huge vectors, deep
nesting, a wrong type at any position, and truncations and byte flips of honest frames.
The property: ``receive`` returns, whatever the frame; the replica stays writable and
encodable afterwards (a write of every type, ``delta_since``, and a peer decoding it to
the same value); and the peak memory handling a frame stays within a bound per frame
byte (tracemalloc).

Bounded for CI by the hypothesis profile. ``CRDTMEM_FUZZ_EXAMPLES=N`` runs N inputs by
hand and prints the inputs tried, the crashes (which must be 0) and the worst peak
memory per frame byte, e.g.::

    CRDTMEM_FUZZ_EXAMPLES=20000 .venv/bin/pytest -s -p no:randomly tests/test_fuzz_frames.py
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import random
import traceback
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdtmem import Replica, codec
from crdtmem.codec import MAX_COUNT, MAX_LAMPORT, MAX_LOGICAL, MAX_SEQ, MAX_WALL
from crdtmem.gossip import ACK, PUSH, SYNC, GossipNode
from crdtmem.messages import STATE, UPDATES

ADDRESS = "inproc://node"
HONEST = "inproc://honest"
# Peak memory handling one frame: at most this many bytes per frame byte, plus a fixed
# allowance for what handling any frame costs (a log line, a few small objects). The
# worst measured is ~87x (a legal user value of tiny containers, pushed whole: the
# replica must hold it); tests/test_decode_limits.py pins the finer figures.
MEMORY_PER_BYTE = 3 * 90
MEMORY_FIXED = 512 * 1024

STATS: dict[str, Any] = {
    "inputs": 0,
    "frames": 0,
    "rejected": 0,
    "crashes": 0,
    "transients": 0,
    "worst": 0.0,
    "worst_at": 0,
}

# --- values ---------------------------------------------------------------------------

EDGES = [
    0,
    1,
    -1,
    2,
    MAX_SEQ - 1,
    MAX_SEQ,
    MAX_SEQ + 1,
    MAX_LAMPORT,
    MAX_COUNT + 1,
    MAX_WALL,
    MAX_LOGICAL + 1,
    2**63 - 1,
    2**63,
    2**64 - 1,
    -(2**63),
]


def mostly(usual: st.SearchStrategy[Any], *rare: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``usual`` about 7 times in 8, else one of ``rare`` (hypothesis favours small
    draws, so the usual case is the one a draw of 0 picks)."""

    @st.composite
    def pick(draw: st.DrawFn) -> Any:
        if draw(st.integers(0, 7)) < 7:
            return draw(usual)
        return draw(st.one_of(*rare))

    return pick()


# Mostly in range (so that frames get past the first check), often at or past a bound.
ints = mostly(st.integers(1, 4), st.sampled_from(EDGES), st.integers(-(2**63), 2**64 - 1))
names = st.sampled_from(["c", "g", "r", "mv", "s", "l", "m", "t", "k"])
actors = mostly(
    st.sampled_from(["evil", "node", "honest", "evil~12345678", "x" * 64]),
    st.sampled_from(["", "y" * 65, "z" * 80]),
    st.text(max_size=8),
)
scalars = st.one_of(
    st.none(), st.booleans(), ints, st.floats(), st.text(max_size=4), st.binary(max_size=4)
)
junk = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


deep = st.integers(1, 200).map(nested)


def lying(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly ``strategy``; now and then a value of another type, or nested deep."""
    return mostly(strategy, junk, deep)


vectors = st.dictionaries(actors, ints, max_size=4) | st.dictionaries(
    st.text(min_size=1, max_size=6), st.integers(1, 3), min_size=50, max_size=300
)
dots = st.lists(st.tuples(actors, ints).map(list), max_size=3)
contexts = st.tuples(lying(vectors), lying(dots)).map(list)
gcounters = st.tuples(lying(vectors), lying(vectors)).map(list)
list_nodes = st.one_of(
    st.tuples(ints, st.integers(0, 2), st.none() | st.just(True) | st.tuples(ints, ints).map(list)),
    st.tuples(ints, st.integers(0, 2), st.none() | st.just(True), junk),
    st.lists(ints, min_size=1, max_size=6).map(lambda flat: (flat,)),
).map(list)
WIRES: dict[int, st.SearchStrategy[Any]] = {
    1: gcounters,
    2: st.tuples(gcounters, gcounters).map(list),
    3: st.just([]) | st.tuples(ints, ints, actors, junk).map(list),
    4: st.tuples(st.lists(st.tuples(actors, ints, junk).map(list), max_size=3), contexts).map(list),
    5: st.tuples(st.lists(st.tuples(scalars, dots).map(list), max_size=3), contexts).map(list),
    6: st.tuples(
        st.lists(actors, max_size=3),
        st.lists(list_nodes, max_size=4),
        st.lists(st.tuples(ints, ints, ints, ints, st.booleans(), junk).map(list), max_size=2),
        st.lists(st.tuples(ints, ints).map(list), max_size=2),
    ).map(list),
    8: st.lists(st.tuples(st.binary(max_size=6), st.binary(max_size=12)).map(list), max_size=2),
}


@st.composite
def crdt_wire(draw: st.DrawFn, depth: int = 0) -> tuple[int, Any]:
    tag = draw(st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 0, 99]))
    if tag == 7 and depth < 2:
        keys = draw(WIRES[5])
        fields = draw(
            st.lists(
                st.tuples(names, st.lists(crdt_wire(depth + 1).map(list), max_size=2)).map(list),
                max_size=2,
            )
        )
        return tag, [keys, fields]
    return tag, draw(lying(WIRES.get(tag, junk)))


fields = st.lists(
    st.tuples(lying(names), st.lists(crdt_wire().map(list), max_size=2)).map(list), max_size=3
)


@st.composite
def update_entry(draw: st.DrawFn) -> list[Any]:
    tag, wire = draw(crdt_wire())
    deps = draw(st.none() | lying(vectors))
    return [deps, draw(lying(names)), draw(lying(st.just(tag))), wire]


messages = st.one_of(
    st.tuples(
        st.just(UPDATES),
        st.lists(
            st.tuples(lying(actors), lying(ints), st.lists(update_entry(), max_size=3)).map(list),
            max_size=3,
        ),
    ).map(list),
    st.tuples(st.just(STATE), lying(actors), lying(vectors), lying(fields)).map(list),
    junk,
)
addresses = st.one_of(
    st.sampled_from([HONEST, ADDRESS, "inproc://evil", "tcp://127.0.0.1:9"]), st.text(max_size=10)
)
digests = st.tuples(
    st.none() | st.lists(addresses, max_size=5),
    mostly(st.binary(min_size=8, max_size=8), st.binary(max_size=10)),
    st.lists(st.tuples(actors, ints).map(list), max_size=3),
    st.lists(actors, max_size=3),
).map(list)


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    kind = draw(mostly(st.sampled_from([PUSH, ACK, SYNC]), ints))
    if kind == PUSH:
        extra: Any = draw(lying(messages.map(codec.pack)))
    elif kind == SYNC:
        extra = draw(lying(digests))
    else:
        extra = draw(st.none() | junk)
    sender = draw(mostly(st.just(HONEST), lying(addresses)))
    body = [kind, sender, draw(lying(actors)), draw(lying(vectors)), extra]
    cut = draw(mostly(st.just(5), st.sampled_from([4, 6])))
    return codec.pack(body[:cut] + [None] * (cut - 5))


@functools.cache
def honest_frames() -> list[bytes]:
    """Frames an honest node sends: a digest, pushes of a delta and of a full state."""
    replica = Replica("honest", clock=lambda: 5.0, rng=random.Random(1))
    write_everything(replica, "h")
    node = GossipNode(replica, HONEST, peers=[ADDRESS])
    digest = node.tick(0.0)
    version = replica.version()
    state = replica.delta_since()
    replica.counter("h.counter").increment()
    delta = replica.delta_since(version)
    writer = replica.writer_id
    pushes = [
        codec.pack([PUSH, HONEST, writer, replica.version(), message]) for message in (state, delta)
    ]
    ack = codec.pack([ACK, HONEST, writer, replica.version(), None])
    return [frame.data for frame in digest] + pushes + [ack]


@st.composite
def mangled(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(honest_frames())))
    for _ in range(draw(st.integers(1, 4))):
        operation = draw(st.sampled_from(["flip", "cut", "insert"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if operation == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif operation == "cut":
            del data[at:]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
    return bytes(data)


# The cheapest msgpack objects per byte, repeated (see tests/test_decode_limits.py).
UNITS = [b"\x90", b"\x80", b"\x91\x90", b"\x91" * 7 + b"\x90", b"\xe0", b"\xa2ab", b"\x81\xa0\xc0"]


@st.composite
def bombs(draw: st.DrawFn) -> bytes:
    """A frame (or pushed message) holding a long run of one cheap object somewhere."""
    unit = draw(st.sampled_from(UNITS))
    count = draw(st.integers(1000, 20000))
    run = b"\xdd" + count.to_bytes(4, "big") + unit * count
    pack = codec.pack_body
    where = draw(st.sampled_from(["top", "extra", "fields", "runs", "value", "nodes", "vector"]))
    if where == "top":
        return codec.HEADER + run
    if where == "extra":
        return codec.HEADER + b"\x95\x0d" + pack(HONEST) + pack("evil") + pack({}) + run
    if where == "vector":
        keys = b"".join(b"\xa4" + k.to_bytes(4, "big") + b"\x01" for k in range(count))
        vector = b"\xdf" + count.to_bytes(4, "big") + keys
        return codec.HEADER + b"\x95\x0c" + pack(HONEST) + pack("evil") + vector + b"\xc0"
    if where == "fields":
        message = codec.HEADER + b"\x94\x02" + pack("evil") + pack({}) + run
    elif where == "runs":
        message = codec.HEADER + b"\x92\x01" + run
    elif where == "value":
        head = b"\x94\x02" + pack("evil") + pack({"evil": 1}) + b"\x91\x92" + pack("r")
        message = codec.HEADER + head + b"\x91\x92\x03\x94\x01\x00" + pack("evil") + run
    else:
        head = b"\x94\x02" + pack("evil") + pack({"evil": 1}) + b"\x91\x92" + pack("l")
        message = codec.HEADER + head + b"\x91\x92\x06\x94\x91" + pack("evil") + run + b"\x90\x90"
    return codec.pack([PUSH, HONEST, "evil", {}, message])


any_frame = st.one_of(frames(), frames(), frames(), mangled(), bombs(), st.binary(max_size=64))


# --- the property -------------------------------------------------------------------------


def write_everything(replica: Replica, prefix: str) -> None:
    replica.counter(f"{prefix}.counter").increment(2)
    replica.gcounter(f"{prefix}.gcounter").increment()
    replica.register(f"{prefix}.register").set({"k": [1, "v"]})
    replica.mvregister(f"{prefix}.mvregister").set([None, 2.5])
    replica.set(f"{prefix}.set").add("x")
    replica.list(f"{prefix}.list").append(b"item")
    replica.list(f"{prefix}.list").insert(0, "first")
    replica.map(f"{prefix}.map").counter("votes").increment()
    replica.text(f"{prefix}.text").insert(0, "héllo")


class Formatted(logging.Handler):
    """Formats each log record (its cost is part of handling a frame) and keeps none:
    the test's own log capture, growing over thousands of examples, is not the node's."""

    def emit(self, record: logging.LogRecord) -> None:
        self.format(record)


def receive_all(data: list[bytes]) -> None:
    """Send ``data`` to a fresh node; check that it returns, stays within the memory
    bound, and leaves a replica that writes, encodes and is decoded by a peer."""
    replica = Replica("node", clock=lambda: 10.0, rng=random.Random(2))
    node = GossipNode(replica, ADDRESS, peers=[HONEST])
    STATS["inputs"] += 1
    log = logging.getLogger("crdtmem")
    handler, propagate = Formatted(), log.propagate
    log.addHandler(handler)
    log.propagate = False
    try:
        receive_frames(node, data)
    finally:
        log.removeHandler(handler)
        log.propagate = propagate
    STATS["rejected"] += node.stats["rejected_frames"]
    write_everything(replica, "own")
    message = replica.delta_since()
    peer = Replica("peer", rng=random.Random(3))
    peer.merge(message)
    assert peer.value() == replica.value()
    node.tick(100.0)


def receive_frames(node: GossipNode, data: list[bytes], replay: bool = True) -> None:
    """Hand ``data`` to ``node`` frame by frame, each within the memory bound."""
    for now, frame in enumerate(data, start=1):
        peak = measured(node, frame, float(now))
        STATS["frames"] += 1
        per_byte = peak / max(1, len(frame))
        if len(frame) >= 16 * 1024 and per_byte > STATS["worst"]:
            STATS["worst"], STATS["worst_at"] = per_byte, len(frame)
        if peak > MEMORY_PER_BYTE * len(frame) + MEMORY_FIXED and replay:
            # Once in a few thousand frames a transient of ~2 MB shows up inside the
            # measurement that replaying the same frames never shows (the process's own
            # caches, warmed by the test's encoding); only an excess that comes back
            # counts.
            STATS["transients"] += 1
            replica = Replica("node", clock=lambda: 10.0, rng=random.Random(2))
            fresh = GossipNode(replica, ADDRESS, peers=[HONEST])
            receive_frames(fresh, data[:now], replay=False)
        else:
            assert peak <= MEMORY_PER_BYTE * len(frame) + MEMORY_FIXED, (peak, len(frame))


def measured(node: GossipNode, frame: bytes, now: float) -> int:
    """The peak memory traced while ``node`` handles ``frame``."""
    # Only what is allocated from start() on is traced: no need to collect first; the
    # collector is held off meanwhile, so that no finalizer of the test's own objects
    # runs inside the measurement.
    gc.disable()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        node.receive(frame, now)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        gc.enable()


def check(data: list[bytes]) -> None:
    if not os.environ.get("CRDTMEM_FUZZ_EXAMPLES"):
        receive_all(data)
        return
    try:  # by hand: count crashes and go on, to report them all at the end
        receive_all(data)
    except Exception:
        STATS["crashes"] += 1
        if STATS["crashes"] <= 5:
            print(f"crash on {[f.hex() for f in data]}:\n{traceback.format_exc()}")


EXAMPLES = int(os.environ.get("CRDTMEM_FUZZ_EXAMPLES", "0"))


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    yield
    if EXAMPLES:
        print(
            f"\nframe fuzz: {STATS['inputs']} inputs ({STATS['frames']} frames, "
            f"{STATS['rejected']} rejected as malformed) tried, {STATS['crashes']} crashes, "
            f"{STATS['transients']} memory transients not seen again on replay, "
            f"worst peak memory {STATS['worst']:.1f} bytes per frame byte (frames of "
            f"16 KiB or more; that one {STATS['worst_at']} bytes)"
        )
        assert STATS["crashes"] == 0


@(
    settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    if EXAMPLES
    else settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
)
@given(st.lists(any_frame, min_size=1, max_size=3))
def test_receive_returns_whatever_the_frame_and_the_node_goes_on(data: list[bytes]) -> None:
    check(data)


def test_honest_frames_are_accepted() -> None:
    """The fuzz starts from frames the handler accepts (else it only tests rejection)."""
    replica = Replica("node", rng=random.Random(2))
    node = GossipNode(replica, ADDRESS, peers=[HONEST])
    for now, frame in enumerate(honest_frames(), start=1):
        node.receive(frame, float(now))
    assert node.stats["rejected_frames"] == 0
    assert "h.text" in replica.value()
