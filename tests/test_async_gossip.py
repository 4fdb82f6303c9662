"""The asyncio twin converges with itself and with the threaded driver."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from crdtmem import Replica
from transport import AsyncZmqGossip, ZmqGossip
from transport.loopback import free_loopback_addresses as addresses


async def until(condition: object, timeout: float = 20.0) -> bool:
    """Wait for ``condition()`` with a deadline, yielding to the event loop."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.01)
    return bool(condition())  # type: ignore[operator]


@pytest.mark.asyncio
async def test_two_async_nodes_converge() -> None:
    a, b = Replica("a"), Replica("b")
    addr_a, addr_b = addresses(2)
    async with (
        AsyncZmqGossip(a, bind=addr_a, peers=[addr_b], interval=0.1),
        AsyncZmqGossip(b, bind=addr_b, peers=[addr_a], interval=0.1),
    ):
        a.list("findings").append("from a")
        b.counter("votes").increment(2)
        assert await until(lambda: a.value() == b.value() and a.version() == b.version())
    assert a.value() == {"findings": ["from a"], "votes": 2}


@pytest.mark.asyncio
async def test_async_node_with_a_threaded_node_and_writes_from_another_thread() -> None:
    a, b = Replica("a"), Replica("b")
    addr_a, addr_b = addresses(2)
    with ZmqGossip(b, bind=addr_b, peers=[addr_a], interval=0.1):
        async with AsyncZmqGossip(a, bind=addr_a, peers=[addr_b], interval=0.1):

            def fifty_adds() -> None:
                for i in range(50):
                    a.set("s").add(i)

            writer = threading.Thread(target=fifty_adds)
            writer.start()
            writer.join(timeout=30)
            assert await until(lambda: len(b.set("s")) == 50)
            b.register("r").set("back")
            assert await until(lambda: a.register("r").value == "back")


@pytest.mark.asyncio
async def test_async_bind_failure_raises() -> None:
    (addr,) = addresses(1)
    async with AsyncZmqGossip(Replica("a"), bind=addr):
        with pytest.raises(Exception, match="Address already in use"):
            await AsyncZmqGossip(Replica("b"), bind=addr).start()


@pytest.mark.asyncio
async def test_an_async_node_leaves_and_the_others_forget_it() -> None:
    a, b, c = Replica("a"), Replica("b"), Replica("c")
    addrs = addresses(3)
    nodes = [
        AsyncZmqGossip(r, bind=addr, peers=[x for x in addrs if x != addr], interval=0.1)
        for r, addr in zip((a, b, c), addrs, strict=True)
    ]
    for node in nodes:
        await node.start()
    try:
        for i in range(5):
            c.list("notes").append(i)
        assert await nodes[2].leave(timeout=10)
        a.list("notes").delete(0)
        assert await until(
            lambda: all(
                c.writer_id not in r.version() and r.stats()["list_tombstones"] == 0 for r in (a, b)
            )
        )
        assert a.list("notes").value == b.list("notes").value == [1, 2, 3, 4]
        with pytest.raises(RuntimeError, match="not running"):
            await nodes[2].leave()
    finally:
        for node in nodes:
            await node.stop()
