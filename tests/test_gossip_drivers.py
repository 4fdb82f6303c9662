"""The two ZeroMQ drivers share one core: the same defaults, the same checks, the same
leave policy (the node's), and a closed replica does not end either loop.

Loopback only (127.0.0.1); every driver a test starts, the test stops; waits are
conditions with deadlines.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from crdtmem import Replica
from crdtmem.gossip import DEFAULTS, GossipConfig, GossipNode
from tests.test_async_gossip import until
from tests.test_zmq_integration import _wait_until
from transport import AsyncZmqGossip, SimNetwork, ZmqGossip
from transport._driver import STOP_FLUSH_SECONDS
from transport.loopback import free_loopback_addresses as addresses

BAD_RETIREMENTS: list[Any] = ["", "x" * 65, 7, None, "a"]  # "a": the node's own replica


def _rejections(retire: Callable[[Any], object]) -> list[str]:
    """What ``retire`` says to each bad argument."""
    said = []
    for bad in BAD_RETIREMENTS:
        with pytest.raises(ValueError) as caught:
            retire(bad)
        said.append(str(caught.value))
    return said


def test_one_set_of_defaults_for_the_node_both_drivers_and_the_simulator() -> None:
    (addr,) = addresses(1)
    assert GossipNode(Replica("a"), "A").config == DEFAULTS == GossipConfig()
    threaded = ZmqGossip(Replica("a"), bind=addr)
    threaded.stop()  # never started: closes its wake-up pipe
    assert threaded._core.config == DEFAULTS
    assert AsyncZmqGossip(Replica("a"), bind=addr)._core.config == DEFAULTS
    sim = SimNetwork().config
    assert sim.compact == DEFAULTS.compact and sim.retire_after == DEFAULTS.retire_after
    # A bad setting is refused when the driver is made, by the one check.
    for make in (ZmqGossip, AsyncZmqGossip):
        with pytest.raises(ValueError, match="interval"):
            make(Replica("a"), bind=addr, interval=0)
        with pytest.raises(ValueError, match="retire_after"):
            make(Replica("a"), bind=addr, dead_after=5, retire_after=1)


def test_the_node_and_both_drivers_reject_a_bad_retire_argument_the_same_way() -> None:
    a = Replica("a")
    node = GossipNode(a, "A")
    addr_s, addr_a = addresses(2)

    async def rejections_of_a_running_async_driver() -> list[str]:
        async with AsyncZmqGossip(a, bind=addr_a) as gossip:
            return _rejections(gossip.retire)

    with ZmqGossip(a, bind=addr_s) as sync:
        threaded = _rejections(sync.retire)
    sans_io = _rejections(node.retire)
    assert threaded == sans_io == asyncio.run(rejections_of_a_running_async_driver())
    assert "own replica" in sans_io[-1] and "replica id" in sans_io[0]
    assert not node.retired and a.retired() == {}


def test_a_router_message_of_other_than_two_parts_is_rejected_by_the_node() -> None:
    node = GossipNode(Replica("a"), "A")
    assert node.receive_message([b"identity"], 0.0) == []
    assert node.receive_message([b"identity", b"x", b"y"], 0.0) == []
    assert node.stats["rejected_frames"] == 2


def test_threaded_leave_gives_up_at_its_deadline_when_no_peer_answers() -> None:
    addr, nobody = addresses(2)
    a = Replica("a")
    gossip = ZmqGossip(a, bind=addr, peers=[nobody], interval=0.1).start()
    try:
        a.counter("c").increment()
        with pytest.raises(ValueError, match="timeout"):
            gossip.leave(timeout=-1)
        started = time.monotonic()
        assert gossip.leave(timeout=0.5) is False
        elapsed = time.monotonic() - started
        assert 0.5 <= elapsed < 0.5 + STOP_FLUSH_SECONDS + 2.0
        assert gossip.node is not None and gossip.node.left
    finally:
        gossip.stop()


@pytest.mark.asyncio
async def test_async_leave_gives_up_at_its_deadline_when_no_peer_answers() -> None:
    addr, nobody = addresses(2)
    a = Replica("a")
    gossip = await AsyncZmqGossip(a, bind=addr, peers=[nobody], interval=0.1).start()
    try:
        a.counter("c").increment()
        with pytest.raises(ValueError, match="timeout"):
            await gossip.leave(timeout=-1)
        started = time.monotonic()
        assert await gossip.leave(timeout=0.5) is False
        elapsed = time.monotonic() - started
        assert 0.5 <= elapsed < 0.5 + STOP_FLUSH_SECONDS + 2.0
        assert gossip.node is not None and gossip.node.left
    finally:
        await gossip.stop()


@pytest.fixture
def durable(tmp_path: Path) -> Iterator[Replica]:
    replica = Replica("a", path=str(tmp_path / "a"))
    try:
        yield replica
    finally:
        replica.close()


def _closed_logs(caplog: pytest.LogCaptureFixture) -> int:
    return sum("was closed" in record.getMessage() for record in caplog.records)


def test_a_replica_closed_under_the_threaded_driver_does_not_end_its_thread(
    durable: Replica, caplog: pytest.LogCaptureFixture
) -> None:
    b = Replica("b")
    addr_a, addr_b = addresses(2)
    with (
        caplog.at_level("ERROR", logger="crdtmem.gossip"),
        ZmqGossip(durable, bind=addr_a, peers=[addr_b], interval=0.1) as ga,
        ZmqGossip(b, bind=addr_b, peers=[addr_a], interval=0.1) as gb,
    ):
        b.counter("c").increment()
        assert _wait_until(lambda: durable.value() == {"c": 1})
        durable.close()  # the agent shut its memory while the gossip runs
        for _ in range(5):
            b.counter("c").increment()
        assert _wait_until(lambda: ga.stats["replica_closed"] >= 3)
        heard = ga.stats["frames_in"]
        assert _wait_until(lambda: ga.stats["frames_in"] > heard + 3)  # still serving
        assert durable.value() == {"c": 1}
        assert ga.leave(timeout=0.5) is True  # the thread is alive to say goodbye
        assert _wait_until(lambda: gb.node is not None and durable.writer_id in gb.node.retired)
    assert _closed_logs(caplog) == 1


@pytest.mark.asyncio
async def test_a_replica_closed_under_the_async_driver_does_not_end_its_task(
    durable: Replica, caplog: pytest.LogCaptureFixture
) -> None:
    b = Replica("b")
    addr_a, addr_b = addresses(2)
    with caplog.at_level("ERROR", logger="crdtmem.gossip"):
        async with (
            AsyncZmqGossip(durable, bind=addr_a, peers=[addr_b], interval=0.1) as ga,
            AsyncZmqGossip(b, bind=addr_b, peers=[addr_a], interval=0.1),
        ):
            b.counter("c").increment()
            assert await until(lambda: durable.value() == {"c": 1})
            durable.close()
            for _ in range(5):
                b.counter("c").increment()
            assert await until(lambda: ga.stats["replica_closed"] >= 3)
            heard = ga.stats["frames_in"]
            assert await until(lambda: ga.stats["frames_in"] > heard + 3)
            assert durable.value() == {"c": 1}
            assert await ga.leave(timeout=0.5) is True
    assert _closed_logs(caplog) == 1
