"""``AsyncZmqGossip``: the asyncio twin of :class:`transport.ZmqGossip`, on ``zmq.asyncio``.

Same protocol (:class:`crdtmem.gossip.GossipNode`), same sockets and options; the
gossip loop is a task on the running event loop instead of a thread. Writes may still
come from any thread: the replica's change callback wakes the loop thread-safely.

>>> import asyncio
>>> from crdtmem import Replica
>>> async def demo() -> bool:
...     async with AsyncZmqGossip(Replica("a"), bind="tcp://127.0.0.1:0") as gossip:
...         return gossip.address.startswith("tcp://127.0.0.1:")
>>> asyncio.run(demo())
True
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import zmq
import zmq.asyncio

from crdtmem import Replica
from crdtmem.gossip import DEFAULT_CHUNK_BYTES, Frame, GossipNode
from crdtmem.replica import ChangeEvent
from transport.zmq_gossip import (
    RECEIVE_BATCH,
    STOP_FLUSH_SECONDS,
    configure_router,
    connect_dealer,
    driver_stats,
    gossip_node,
    receive_parts,
)

logger = logging.getLogger("transport.zmq")


class AsyncZmqGossip:
    """Gossip a replica over ZeroMQ from an asyncio event loop."""

    def __init__(
        self,
        replica: Replica,
        *,
        bind: str,
        peers: Iterable[str] = (),
        interval: float = 0.5,
        dead_after: float = 3.0,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        retire_after: float | None = None,
    ) -> None:
        self.replica = replica
        self.bind = bind
        self.address = bind
        self._peers = [p for p in peers if p != bind]
        self._interval, self._dead_after, self._chunk_bytes = interval, dead_after, chunk_bytes
        self._retire_after = retire_after
        self._context = zmq.asyncio.Context.instance()
        self._router: zmq.asyncio.Socket | None = None
        self._dealers: dict[str, zmq.asyncio.Socket] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._unsubscribe: Any = None
        self.node: GossipNode | None = None
        self.dropped_sends = 0

    async def start(self) -> AsyncZmqGossip:
        """Bind and start the gossip task; returns once bound."""
        if self._task is not None:
            raise RuntimeError("this AsyncZmqGossip was already started")
        router = configure_router(self._context.socket(zmq.ROUTER))
        try:
            router.bind(self.bind)
        except zmq.ZMQError:
            router.close(linger=0)
            raise
        self._router = router
        self.address = router.getsockopt_string(zmq.LAST_ENDPOINT)
        self.node = gossip_node(
            self.replica,
            self.address,
            self._peers,
            interval=self._interval,
            dead_after=self._dead_after,
            chunk_bytes=self._chunk_bytes,
            retire_after=self._retire_after,
        )
        loop = asyncio.get_running_loop()

        def wake_on_local_change(event: ChangeEvent) -> None:
            if event.local:  # agent threads may write: hand the wake-up to the loop
                loop.call_soon_threadsafe(self._wake.set)

        self._unsubscribe = self.replica.subscribe(wake_on_local_change)
        self._task = asyncio.create_task(self._run(self.node, router))
        return self

    async def stop(self, timeout: float = 5.0) -> None:
        """Push what is pending (best effort), close the sockets, end the task."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._task is not None:
            self._stopping = True
            self._wake.set()
            try:
                await asyncio.wait_for(self._task, timeout)
            except TimeoutError:
                logger.error("async gossip for %s did not stop in %s s", self.bind, timeout)
            self._task = None
        for dealer in self._dealers.values():
            dealer.close(linger=500)
        self._dealers.clear()
        if self._router is not None:
            self._router.close(linger=0)
            self._router = None

    async def __aenter__(self) -> AsyncZmqGossip:
        return await self.start()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _run(self, node: GossipNode, router: zmq.asyncio.Socket) -> None:
        receiving: asyncio.Future[Any] = asyncio.ensure_future(router.recv_multipart())
        waking: asyncio.Future[Any] = asyncio.ensure_future(self._wake.wait())
        try:
            while not self._stopping:
                wait = max(0.0, node.next_deadline() - time.monotonic())
                done, _ = await asyncio.wait(
                    {receiving, waking}, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
                now = time.monotonic()
                frames: list[Frame] = []
                if waking in done:
                    self._wake.clear()
                    waking = asyncio.ensure_future(self._wake.wait())
                    frames += node.flush(now)
                if receiving in done:
                    frames += receive_parts(node, receiving.result(), now)
                    for _ in range(RECEIVE_BATCH):
                        if self._stopping:
                            break
                        try:
                            parts = router.recv_multipart(zmq.NOBLOCK)
                            frames += receive_parts(node, await parts, now)
                        except zmq.Again:
                            break
                    receiving = asyncio.ensure_future(router.recv_multipart())
                frames += node.tick(now)
                await self._send(frames)
            now = time.monotonic()
            await self._send(node.flush(now), deadline=now + STOP_FLUSH_SECONDS)
        finally:
            for future in (receiving, waking):
                future.cancel()
                with contextlib.suppress(asyncio.CancelledError, zmq.ZMQError):
                    await future

    async def _send(self, frames: list[Frame], deadline: float | None = None) -> None:
        for frame in frames:
            if deadline is not None and time.monotonic() > deadline:
                return
            dealer = self._dealers.get(frame.peer)
            if dealer is None:
                dealer = self._context.socket(zmq.DEALER)
                if not connect_dealer(dealer, frame.peer, self.address):
                    if self.node is not None:
                        self.node.remove_peer(frame.peer)
                    continue
                self._dealers[frame.peer] = dealer
            try:
                await dealer.send(frame.data, zmq.NOBLOCK)
            except zmq.Again:
                self.dropped_sends += 1  # peer down or slow: anti-entropy repairs it

    async def leave(self, timeout: float = 5.0) -> bool:
        """Leave the group for good (see :meth:`transport.ZmqGossip.leave`): wait up to
        ``timeout`` seconds for every peer to acknowledge this replica's updates, tell
        the peers to retire it, and stop. Returns whether all were acknowledged."""
        node = self.node
        if node is None or self._task is None:
            raise RuntimeError("this AsyncZmqGossip is not running")
        deadline = time.monotonic() + timeout
        while not node.spread() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        spread = node.spread()
        await self._send(node.leave())
        await self.stop()
        return spread

    def retire(self, replica_id: str) -> None:
        """Retire a replica that left the group for good (see
        :meth:`crdtmem.gossip.GossipNode.retire`); call it from the event loop."""
        if self.node is None:
            raise RuntimeError("start the gossip before retiring replicas")
        self.node.retire(replica_id)

    @property
    def stats(self) -> dict[str, int]:
        """Frame and byte counters of the protocol, plus sends dropped by ZeroMQ."""
        return driver_stats(self.node, self.dropped_sends)
