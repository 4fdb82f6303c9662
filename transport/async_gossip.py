"""``AsyncZmqGossip``: the asyncio twin of :class:`transport.ZmqGossip`, on ``zmq.asyncio``.

Same protocol, same sockets, options, send path and loop turn (the shared driver core,
:mod:`transport._driver`); the loop is a task on the running event loop instead of a
thread, waiting on the ROUTER, a wake-up event and the node's next deadline. Writes may
still come from any thread: the replica's change callback wakes the loop thread-safely.

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
from functools import partial
from types import TracebackType
from typing import Any, cast

import zmq
import zmq.asyncio

from crdtmem import Replica
from crdtmem.gossip import DEFAULTS, LEAVE_TIMEOUT, GossipNode
from crdtmem.replica import ChangeEvent
from transport._driver import (
    FAILED,
    START_TIMEOUT,
    STOP_TIMEOUT,
    DriverBase,
    IdentitySource,
    TrustedSource,
    configure_router,
)

logger = logging.getLogger("transport.zmq")


class AsyncZmqGossip(DriverBase):
    """Gossip a replica over ZeroMQ from an asyncio event loop. The arguments, keys
    (``identity``, ``trusted``) and ``insecure`` included, are those of
    :class:`transport.ZmqGossip`."""

    def __init__(
        self,
        replica: Replica,
        *,
        bind: str,
        peers: Iterable[str] = (),
        interval: float = DEFAULTS.interval,
        dead_after: float = DEFAULTS.dead_after,
        chunk_bytes: int = DEFAULTS.chunk_bytes,
        retire_after: float | None = DEFAULTS.retire_after,
        advertise: str | None = None,
        identity: IdentitySource | None = None,
        trusted: TrustedSource | None = None,
        insecure: bool = False,
    ) -> None:
        self._context = zmq.asyncio.Context.instance()
        # DEALERs only ever send with NOBLOCK: plain sockets on the same context.
        dealers: zmq.Context[Any] = zmq.Context.shadow(self._context.underlying)
        settings = (interval, dead_after, chunk_bytes, retire_after)
        super().__init__(
            replica,
            bind,
            peers,
            dealers,
            settings,
            advertise=advertise,
            identity=identity,
            trusted=trusted,
            insecure=insecure,
        )
        self._router: zmq.asyncio.Socket | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._unsubscribe: Any = None

    async def start(self) -> AsyncZmqGossip:
        """Bind and start the gossip task; returns once bound."""
        if self._task is not None:
            raise RuntimeError("this AsyncZmqGossip is running: stop() it first")
        self._renew()  # after a stop(): a fresh run
        self._wake = asyncio.Event()
        core = self._core
        router = configure_router(self._context.socket(zmq.ROUTER))
        try:
            core.secure_router(router)
            router.bind(self.bind)
        except BaseException:
            core.close_router_monitor()
            router.close(linger=0)
            core.close_gate()
            raise
        self._router = router
        core.bound(router.getsockopt_string(zmq.LAST_ENDPOINT))
        self.address = self.advertise or core.endpoint
        node = core.open(self.address)
        loop = asyncio.get_running_loop()

        def wake_on_local_change(event: ChangeEvent) -> None:
            if event.local:  # agent threads may write: hand the wake-up to the loop
                core.local_write()  # loud while the loop is dead
                with contextlib.suppress(RuntimeError):  # the event loop has closed
                    loop.call_soon_threadsafe(self._wake.set)

        self._unsubscribe = self.replica.subscribe(wake_on_local_change)
        self._task = asyncio.create_task(self._run(node, router))
        core.running()
        return self

    async def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Push what is pending (best effort), close the sockets, end the task. Never
        raises because the loop died (see :attr:`health`, :attr:`error`)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._task is not None:
            self._core.stopping = True
            self._wake.set()
            try:
                await asyncio.wait_for(self._task, timeout)
            except TimeoutError:
                logger.error("async gossip for %s did not stop in %s s", self.bind, timeout)
            except asyncio.CancelledError:
                # The task was cancelled by someone else; our caller was not.
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
            except Exception as exc:  # the task reports its own death (_run): belt and braces
                if self._core.health != FAILED:
                    self._core.ended(exc)
            self._task = None
        self._core.close()
        if self._router is not None:
            self._router.close(linger=0)
            self._router = None
        self._core.close_gate()  # after the ROUTER: its handshakes ask the gate

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
        try:
            await self._loop(node, router)
        except asyncio.CancelledError:
            self._core.ended(None)
            raise
        except Exception as exc:  # reported: health, stats, an ERROR line; not raised
            self._core.ended(exc)
        else:
            self._core.ended(None)

    async def _loop(self, node: GossipNode, router: zmq.asyncio.Socket) -> None:
        core = self._core
        # With keys, frames (copy=False) carry the name their connection proved.
        copy = not core.secured
        receiving: asyncio.Future[Any] = asyncio.ensure_future(router.recv_multipart(copy=copy))
        waking: asyncio.Future[Any] = asyncio.ensure_future(self._wake.wait())
        try:
            while not core.stopping:
                done, _ = await asyncio.wait(
                    {receiving, waking},
                    timeout=core.wait_seconds(node, time.monotonic()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                woke = waking in done
                if woke:
                    self._wake.clear()
                    waking = asyncio.ensure_future(self._wake.wait())
                messages: Iterable[list[bytes]] = ()
                if receiving in done:
                    messages = core.batch(partial(_receive_now, router, copy), receiving.result())
                if not core.step(node, time.monotonic(), woke=woke, messages=messages):
                    break
                if receiving.done():
                    receiving = asyncio.ensure_future(router.recv_multipart(copy=copy))
            core.finish(node)
        finally:
            for future in (receiving, waking):
                future.cancel()
                with contextlib.suppress(asyncio.CancelledError, zmq.ZMQError):
                    await future

    async def leave(self, timeout: float = LEAVE_TIMEOUT) -> bool:
        """Leave the group for good (see :meth:`transport.ZmqGossip.leave`): wait up to
        ``timeout`` seconds for every peer to acknowledge this replica's updates, tell
        the peers to retire it, and stop. Returns whether all were acknowledged.

        The gossip task decides when (the node's leave policy, on its own deadlines and
        acknowledgements); this call awaits the task, bounded."""
        task = self._task
        if self._core.node is None or task is None:
            raise RuntimeError("this AsyncZmqGossip is not running")
        self._core.request_leave(timeout)
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout + START_TIMEOUT)
        except TimeoutError:
            logger.error("async gossip for %s did not leave in time", self.bind)
        await self.stop()
        return self._core.left_spread

    def retire(self, replica_id: str) -> None:
        """Retire a replica that left the group for good (see
        :meth:`crdtmem.gossip.GossipNode.retire`); call it from the event loop. As in
        :meth:`transport.ZmqGossip.retire`, a bad ``replica_id`` raises ``ValueError``
        here and the gossip task applies the rest (once started)."""
        self._core.retire(replica_id)
        self._wake.set()

    def reload_trusted(self, trusted: TrustedSource | None = None) -> None:
        """Trust the keys of ``trusted`` from now on (see
        :meth:`transport.ZmqGossip.reload_trusted`); call it from the event loop. The
        files are read here, synchronously; when a key was removed, the gossip task
        rebinds its ROUTER, which holds the event loop for the milliseconds libzmq takes
        to release the port (at most about 2 s)."""
        self._reload(trusted)
        self._wake.set()


def _receive_now(router: zmq.asyncio.Socket, copy: bool = True) -> list[Any]:
    """A receive that does not wait, for :meth:`transport._driver.DriverCore.batch`:
    pyzmq completes a ``NOBLOCK`` receive of a ``zmq.asyncio`` socket at once (its
    future is done, with the message or ``zmq.Again``), so nothing is awaited."""
    future = cast("asyncio.Future[list[Any]]", router.recv_multipart(zmq.NOBLOCK, copy=copy))
    return future.result()
