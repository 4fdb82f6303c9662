"""Liveness of the gossip protocol, sans-IO (issue 9): lost pushes repaired while writes
keep coming, the first moment (a write before any connection), duplicate writer ids of
one name, rate-limited logs of rejected frames, and the drivers' checks at the call."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

import pytest

from crdtmem import Replica, codec
from crdtmem.gossip import PUSH, SYNC, Frame, GossipNode
from transport import ZmqGossip
from transport.async_gossip import AsyncZmqGossip
from transport.endpoints import check_bind, check_endpoint, check_peers

INTERVAL = 0.2


def deliver(
    nodes: dict[str, GossipNode],
    frames: list[Frame],
    now: float,
    drop: Callable[[Frame], bool] = lambda _: False,
) -> None:
    """Deliver frames (and their answers) at ``now``, bounded, dropping those ``drop``
    picks."""
    for _ in range(100):
        if not frames:
            return
        out: list[Frame] = []
        for frame in frames:
            if not drop(frame):
                out += nodes[frame.peer].receive(frame.data, now)
        frames = out
    raise AssertionError("frames still flowing after 100 rounds")


def _kind(frame: Frame) -> int:
    body = codec.unpack(frame.data)
    assert isinstance(body, list)
    value = body[0]
    assert isinstance(value, int)
    return value


def pair() -> dict[str, GossipNode]:
    a = GossipNode(Replica("a"), "A", peers=["B"], interval=INTERVAL, dead_after=1.0)
    b = GossipNode(Replica("b"), "B", peers=["A"], interval=INTERVAL, dead_after=1.0)
    return {"A": a, "B": b}


def test_a_lost_push_is_repaired_while_the_writer_keeps_writing() -> None:
    nodes = pair()
    a, b = nodes["A"], nodes["B"]
    now = 0.0
    deliver(nodes, a.tick(now) + b.tick(now), now)  # both know each other
    # The first push of "lost" is dropped; a writes every 0.2 s from then on, each write
    # flushed at once, and every tick's digests flow.
    a.replica.set("s").add("lost")
    deliver(nodes, a.flush(now), now, drop=lambda f: f.peer == "B" and _kind(f) == PUSH)
    written = ["lost"]
    for step in range(1, 31):
        now = step * 0.1
        if step % 2 == 0:
            item = f"w{step}"
            a.replica.set("s").add(item)
            written.append(item)
            deliver(nodes, a.flush(now), now)
        deliver(nodes, a.tick(now) + b.tick(now), now)
        if "lost" in b.replica.set("s").value:
            break
    assert "lost" in b.replica.set("s").value, (
        f"the lost push was never resent in {now:.1f} s of steady writes"
    )
    assert now <= 4 * INTERVAL + 0.1, f"repaired only after {now:.1f} s"


def test_a_write_before_any_connection_is_answered_at_the_first_contact() -> None:
    nodes = pair()
    a, b = nodes["A"], nodes["B"]
    # No connection yet: every frame of the first seconds is lost, a backs off, and
    # it writes every 0.2 s (an agent that writes right after start()).
    written = set()
    for step in range(0, 40):
        now = step * 0.1
        if step % 2 == 0:
            a.replica.set("s").add(f"early{step}")
            written.add(f"early{step}")
        a.flush(now)
        a.tick(now)
    # The connection comes up: b's first digest reaches a, which answers at once.
    now = 4.0
    deliver(nodes, b.tick(now), now)
    assert b.replica.set("s").value == written


def test_first_frame_from_a_peer_is_answered_with_a_digest_and_push() -> None:
    nodes = pair()
    a, b = nodes["A"], nodes["B"]
    a.replica.set("s").add("x")
    b.replica.set("s").add("y")
    # b's first frame to a is a push (b writes before it ever heard of a): a answers it
    # with its ACK, and, since it is a first contact, its own push and a digest.
    answer = a.receive(b.flush(0.0)[0].data, 0.0)
    kinds = sorted(_kind(f) for f in answer)
    assert PUSH in kinds and SYNC in kinds, kinds
    # A second frame from the same live peer is not answered with a digest again.
    b.replica.set("s").add("z")
    again = a.receive(b.flush(0.05)[0].data, 0.05)
    assert SYNC not in [_kind(f) for f in again]


def test_peer_connected_pushes_and_digests_at_once() -> None:
    nodes = pair()
    a, b = nodes["A"], nodes["B"]
    a.replica.counter("c").increment()
    assert a.flush(0.0)  # pushed before the connection was up: dropped by the transport
    frames = a.peer_connected("B", 0.01)
    assert sorted(_kind(f) for f in frames) == [PUSH, SYNC]
    deliver(nodes, frames, 0.0)
    assert b.replica.counter("c").value == 1
    assert a.peer_connected("A", 0.0) == []  # its own address: nothing


class Token(random.Random):
    """Draws the one incarnation token given, so a test knows each writer id."""

    def __init__(self, token: str) -> None:
        super().__init__(0)
        self.token = int(token, 16)

    def getrandbits(self, k: int, /) -> int:
        return self.token


def agent(address: str, token: str, peers: list[str], **options: bool) -> GossipNode:
    """A node of replica "agent" whose life writes as ``agent~TOKEN``."""
    return GossipNode(Replica("agent", rng=Token(token)), address, peers=peers, **options)


def test_own_name_live_at_another_address_is_warned_once_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    one = agent("A1", "0000aaaa", peers=["A2"])
    two = agent("A2", "0000bbbb", peers=["A1"])
    assert two.replica.writer_id == "agent~0000bbbb"
    nodes = {"A1": one, "A2": two}
    with caplog.at_level(logging.WARNING, logger="crdtmem.gossip"):
        for step in range(5):
            now = step * 0.5
            deliver(nodes, one.tick(now) + two.tick(now), now)
    assert one.stats["duplicate_ids"] == 1
    assert two.stats["duplicate_ids"] == 1
    lines = [r.getMessage() for r in caplog.records if "live twice" in r.getMessage()]
    assert len(lines) == 2, lines
    assert any("agent~0000bbbb" in m and "A2" in m and "A1" in m for m in lines)


def test_a_third_node_sees_two_live_writers_of_one_name() -> None:
    one = agent("A1", "0000aaaa", peers=["C"])
    two = agent("A2", "0000bbbb", peers=["C"], learn_peers=False)
    third = GossipNode(Replica("c"), "C", peers=[], learn_peers=False)
    nodes = {"A1": one, "A2": two, "C": third}
    deliver(nodes, one.tick(0.0) + two.tick(0.0), 0.0, drop=lambda f: f.peer not in nodes)
    assert third.stats["duplicate_ids"] >= 1
    # A restart at the same address under a new writer id is not a duplicate.
    solo = GossipNode(Replica("c"), "C", peers=[])
    first = agent("A1", "0000aaaa", peers=["C"])
    deliver({"A1": first, "C": solo}, first.tick(0.0), 0.0)
    again = agent("A1", "0000cccc", peers=["C"])
    deliver({"A1": again, "C": solo}, again.tick(0.5), 0.5)
    assert solo.stats["duplicate_ids"] == 0


def test_rejected_frames_are_logged_at_most_once_per_sender_per_10_s(
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = GossipNode(Replica("a"), "A")
    with caplog.at_level(logging.WARNING, logger="crdtmem.gossip"):
        for i in range(2000):
            node.receive(b"garbage", now=i * 0.001)
        node.receive(b"garbage", now=11.0)
    lines = [r.getMessage() for r in caplog.records]
    assert node.stats["rejected_frames"] == 2001
    assert len(lines) == 2, lines
    assert "1999 more rejected" in lines[1]


def test_a_rejected_frame_log_passes_the_codec_reason_through(
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = GossipNode(Replica("a"), "A")
    frame = GossipNode(Replica("b"), "B", peers=["A"]).tick(0.0)[0].data
    older = frame[:2] + bytes([frame[2] - 1 or 0xFF]) + frame[3:]  # another header version
    with caplog.at_level(logging.WARNING, logger="crdtmem.gossip"):
        node.receive(older, now=0.0)
    try:
        codec.unpack(older)
    except Exception as exc:  # the codec's own words, whatever the version says
        reason = str(exc)
    else:
        pytest.fail("a frame of another header version decoded")
    assert any(reason in r.getMessage() for r in caplog.records), caplog.text


# --- checks at the call -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peers", "words"),
    [
        ("tcp://127.0.0.1:5555", "did you mean ['tcp://127.0.0.1:5555']"),
        (["tcp://127.0.0.1:0"], "port '0'"),
        (["tcp://127.0.0.1:70000"], "port '70000'"),
        (["tcp://127.0.0.1"], "tcp://HOST:PORT"),
        (["tcp://no-such-host.invalid:5555"], "host 'no-such-host.invalid'"),
        (["udp://127.0.0.1:5555"], "tcp://HOST:PORT, ipc://PATH"),
        (["tcp://0.0.0.0:5555"], "wildcard"),
        ([5555], "must be a str"),
    ],
)
def test_bad_peers_raise_naming_the_problem(peers: object, words: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        check_peers(peers)  # type: ignore[arg-type]
    assert words in str(info.value)
    with pytest.raises(ValueError):
        ZmqGossip(Replica("a"), bind="tcp://127.0.0.1:0", peers=peers)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        AsyncZmqGossip(Replica("a"), bind="tcp://127.0.0.1:0", peers=peers)  # type: ignore[arg-type]


def test_good_endpoints_pass() -> None:
    good = [
        "tcp://127.0.0.1:1",
        "tcp://localhost:65535",
        "tcp://[::1]:5555",
        "ipc:///tmp/x",
        "inproc://n",
    ]
    assert check_peers(tuple(good)) == good
    assert check_endpoint("tcp://127.0.0.1:0", "bind", bind=True)
    assert check_endpoint("tcp://*:*", "bind", bind=True)


@pytest.mark.parametrize("bind", ["tcp://0.0.0.0:5555", "tcp://*:5555", "tcp://[::]:5555"])
def test_a_wildcard_bind_needs_advertise(bind: str) -> None:
    with pytest.raises(ValueError, match="advertise"):
        check_bind(bind, None)
    with pytest.raises(ValueError, match="advertise"):
        ZmqGossip(Replica("a"), bind=bind)
    assert check_bind(bind, "tcp://127.0.0.1:5555") == "tcp://127.0.0.1:5555"
    with pytest.raises(ValueError, match="advertise"):
        check_bind(bind, "tcp://0.0.0.0:5555")


def test_advertise_is_the_nodes_address_in_frames() -> None:
    replica = Replica("a")
    # A wildcard bind without keys: insecure=True on purpose (safe by default refuses it).
    wildcard = ZmqGossip(
        replica, bind="tcp://0.0.0.0:0", advertise="tcp://127.0.0.1:5999", insecure=True
    )
    with wildcard as g:
        assert g.address == "tcp://127.0.0.1:5999"
        assert g.node is not None and g.node.address == "tcp://127.0.0.1:5999"


def test_start_after_stop_is_a_fresh_run() -> None:
    a, b = Replica("a"), Replica("b")
    gb = ZmqGossip(b, bind="tcp://127.0.0.1:0", interval=0.05).start()
    try:
        ga = ZmqGossip(a, bind="tcp://127.0.0.1:0", peers=[gb.address], interval=0.05)
        for round_ in range(2):
            ga.start()
            try:
                with pytest.raises(RuntimeError, match="running"):
                    ga.start()
                a.counter("c").increment()
                deadline = time.monotonic() + 20
                while b.counter("c").value < round_ + 1 and time.monotonic() < deadline:
                    time.sleep(0.02)
                assert b.counter("c").value == round_ + 1
            finally:
                ga.stop()
    finally:
        gb.stop()


@pytest.mark.asyncio
async def test_async_start_after_stop_is_a_fresh_run() -> None:
    a, b = Replica("a"), Replica("b")
    gb = await AsyncZmqGossip(b, bind="tcp://127.0.0.1:0", interval=0.05).start()
    try:
        ga = AsyncZmqGossip(a, bind="tcp://127.0.0.1:0", peers=[gb.address], interval=0.05)
        for round_ in range(2):
            await ga.start()
            try:
                a.counter("c").increment()
                for _ in range(400):
                    if b.counter("c").value == round_ + 1:
                        break
                    await asyncio.sleep(0.05)
                assert b.counter("c").value == round_ + 1
            finally:
                await ga.stop()
    finally:
        await gb.stop()
