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
