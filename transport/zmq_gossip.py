"""Gossip over ZeroMQ: each agent process runs one of these next to its replica.

A thread runs the loop: it waits on the ROUTER, a wake-up pipe and the node's next
deadline, and hands each turn to the shared driver core (:mod:`transport._driver`,
which also documents the sockets and their options). Agent threads only write to the
replica, whose change callback wakes the gossip thread through the pipe.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterable
from functools import partial
from types import TracebackType
from typing import Any

import zmq

from crdtmem import Replica
from crdtmem.gossip import DEFAULTS, LEAVE_TIMEOUT, GossipNode
from crdtmem.replica import ChangeEvent
from transport._driver import (
    START_TIMEOUT,
    STOP_TIMEOUT,
    DriverBase,
    IdentitySource,
    TrustedSource,
    configure_router,
)

logger = logging.getLogger("transport.zmq")


class ZmqGossip(DriverBase):
    """Gossip a replica with peers over ZeroMQ (see the module docstring).

    ``interval``, ``dead_after``, ``chunk_bytes`` and ``retire_after`` are those of
    :class:`~crdtmem.gossip.GossipNode`; ``retire_after`` (off by default) retires peers
    silent that long, for groups of ephemeral agents that may crash without leaving.

    Security (docs/security.md): with ``identity="keys/NAME.key"`` and
    ``trusted="keys/"`` (a folder of ``.pub`` files, a list of them, or a loaded
    mapping) every socket is CURVE: only trusted keys complete a handshake, and each
    connection speaks only for the replica its key names. ``peers`` may then name
    who is where (``"researcher@tcp://10.0.0.5:5555"``). Without keys it binds only
    loopback, ``ipc://`` or ``inproc://`` unless ``insecure=True`` (logged).

    >>> from crdtmem import Replica
    >>> r = Replica("agent-a")
    >>> with ZmqGossip(r, bind="tcp://127.0.0.1:0") as g:   # port 0: any free port
    ...     g.address.startswith("tcp://127.0.0.1:")
    True
    """

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
        context: zmq.Context[Any] | None = None,
        identity: IdentitySource | None = None,
        trusted: TrustedSource | None = None,
        insecure: bool = False,
    ) -> None:
        self._context = context or zmq.Context.instance()
        settings = (interval, dead_after, chunk_bytes, retire_after)
        super().__init__(
            replica,
            bind,
            peers,
            self._context,
            settings,
            advertise=advertise,
            identity=identity,
            trusted=trusted,
            insecure=insecure,
        )
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)
        self._unsubscribe: Any = None

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> ZmqGossip:
        """Bind, start the gossip thread, and return once bound."""
        if self._thread is not None:
            if self._thread.is_alive():
                raise RuntimeError("this ZmqGossip is running: stop() it first")
            # After a stop(): a fresh run on the same replica.
            self._renew()
            self._ready = threading.Event()
            self._error = None
            if self._wake_read < 0:
                self._wake_read, self._wake_write = os.pipe()
                os.set_blocking(self._wake_write, False)
        self._thread = threading.Thread(
            target=self._run, name=f"crdtmem-gossip-{self.replica.replica_id}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            self._core.stopping = True
            raise TimeoutError(f"gossip thread did not bind {self.bind} in {START_TIMEOUT} s")
        if self._error is not None:
            self._thread.join(START_TIMEOUT)
            self._close_pipe()
            raise self._error
        self._unsubscribe = self.replica.subscribe(self._on_change)
        return self

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Push what is pending (best effort), close the sockets, join the thread.
        Never raises because the loop died (see :attr:`health`, :attr:`error`)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        thread = self._thread
        if thread is None or not thread.is_alive():
            self._close_pipe()
            return
        self._core.stopping = True
        self._wake()
        thread.join(timeout)
        if thread.is_alive():
            logger.error("gossip thread for %s did not stop in %s s", self.bind, timeout)
        else:
            self._close_pipe()

    def __enter__(self) -> ZmqGossip:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    def _close_pipe(self) -> None:
        for fd in (self._wake_read, self._wake_write):
            with contextlib.suppress(OSError):  # already closed
                os.close(fd)
        self._wake_read = self._wake_write = -1

    def leave(self, timeout: float = LEAVE_TIMEOUT) -> bool:
        """Leave the group for good: wait up to ``timeout`` seconds for every peer to
        acknowledge this replica's updates, tell the peers to retire it (so they stop
        waiting for it to collect), and stop. Returns whether every peer had
        acknowledged everything. Do not write to the replica afterwards.

        The gossip thread decides when (:meth:`~crdtmem.gossip.GossipNode.begin_leave`,
        :meth:`~crdtmem.gossip.GossipNode.leave_done`); this call joins it."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            raise RuntimeError("this ZmqGossip is not running")
        self._core.request_leave(timeout)
        self._wake()
        thread.join(timeout + START_TIMEOUT)
        self.stop()
        return self._core.left_spread

    def retire(self, replica_id: str) -> None:
        """Retire a replica that left the group for good (see
        :meth:`crdtmem.gossip.GossipNode.retire`). Safe from any thread: the gossip
        thread applies it; a bad ``replica_id`` raises ``ValueError`` here."""
        self._core.retire(replica_id)
        self._wake()

    def reload_trusted(self, trusted: TrustedSource | None = None) -> None:
        """Trust the keys of ``trusted`` from now on (default: read again the
        ``trusted=`` given at construction). Read here (a bad file raises here); the
        gossip thread applies it: a key left out is refused at its next handshake, its
        open connections are dropped (the others reconnect at once), and this node
        stops dialling it. Safe from any thread. ``RuntimeError`` without keys."""
        self._reload(trusted)
        self._wake()

    # --- waking the loop --------------------------------------------------------------

    def _on_change(self, event: ChangeEvent) -> None:
        if event.local:
            self._core.local_write()  # loud while the loop is dead
            self._wake()

    def _wake(self) -> None:
        # A full pipe means the loop is already due to wake; a closed one, it stopped.
        with contextlib.suppress(OSError):
            os.write(self._wake_write, b"\x01")

    # --- the gossip thread ---------------------------------------------------------------

    def _run(self) -> None:
        router: zmq.Socket[bytes] | None = None
        core = self._core
        try:
            router = core.secure_router(configure_router(self._context.socket(zmq.ROUTER)))
            router.bind(self.bind)
            core.bound(router.getsockopt_string(zmq.LAST_ENDPOINT))
            self.address = self.advertise or core.endpoint
            node = core.open(self.address)
        except BaseException as exc:  # reported to start(), which re-raises it
            self._error = exc
            core.close_router_monitor()
            if router is not None:
                router.close(linger=0)
            core.close_gate()
            self._ready.set()
            return
        core.running()
        self._ready.set()
        error: BaseException | None = None
        try:
            self._loop(router, node)
        except BaseException as exc:  # reported: health, stats, an ERROR line; not raised
            error = exc
        finally:
            try:
                core.close()
                router.close(linger=0)
                core.close_gate()  # after the ROUTER: its handshakes ask the gate
            except Exception as exc:  # closing must not hide why the loop ended
                error = error or exc
            core.ended(error)

    def _loop(self, router: zmq.Socket[bytes], node: GossipNode) -> None:
        core = self._core
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(self._wake_read, zmq.POLLIN)
        # With keys, frames (copy=False) carry the name their connection proved.
        receive = partial(router.recv_multipart, zmq.NOBLOCK, copy=not core.secured)
        while not core.stopping:
            wait = core.wait_seconds(node, time.monotonic())
            ready = dict(poller.poll(int(wait * 1000) + 1))
            woke = self._wake_read in ready
            if woke:
                os.read(self._wake_read, 4096)
            messages: Iterable[list[bytes]] = core.batch(receive) if router in ready else ()
            if not core.step(node, time.monotonic(), woke=woke, messages=messages):
                break
        core.finish(node)
