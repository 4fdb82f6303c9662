"""Gossip over ZeroMQ: each agent process runs one of these next to its replica.

Sockets: a ROUTER bound at ``bind`` receives every frame; one DEALER per peer, connected
to that peer's ROUTER, sends. Replies travel over the replier's own DEALER, so every
frame names its sender's bind address and no ROUTER ever routes a reply (unroutable
ROUTER messages are dropped silently). ZeroMQ can also lose frames at high-water marks,
to slow joiners and on reconnect: a successful ``send`` proves nothing, so correctness
comes from the protocol's acknowledgements and anti-entropy digests
(:mod:`crdtmem.gossip`), never from the socket.

Options set, and why:

- ``MAXMSGSIZE`` on the ROUTER: a peer that sends an oversized frame is disconnected
  before the frame is read into memory.
- ``IMMEDIATE`` and a bounded ``SNDHWM`` on DEALERs, sent with ``NOBLOCK``: frames for a
  peer that is down are dropped at once rather than queued without bound; the next
  digest after it returns repairs the gap.
- ZMTP heartbeats (``HEARTBEAT_IVL``/``TIMEOUT``): a dead TCP connection is noticed and
  re-dialled even when nothing is being sent.
- ``LINGER`` bounded on close: ``stop()`` never hangs on an unreachable peer.

All sockets are created, used and closed by the gossip thread (ZeroMQ sockets are not
thread-safe); agent threads only write to the replica, whose change callback wakes the
gossip thread through a pipe.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Final, TypeVar

import zmq

from crdtmem import Replica, codec
from crdtmem.gossip import DEFAULT_CHUNK_BYTES, Frame, GossipNode
from crdtmem.replica import ChangeEvent, check_replica_id

logger = logging.getLogger("transport.zmq")

# Frames larger than this are refused by the ROUTER (the sender is disconnected).
MAX_FRAME_BYTES: Final = codec.MAX_MESSAGE_BYTES + 64 * 1024
SEND_HWM: Final = 10_000
LINGER_MS: Final = 500
HEARTBEAT_IVL_MS: Final = 1_000
HEARTBEAT_TIMEOUT_MS: Final = 3_000
RECONNECT_IVL_MS: Final = 100
RECONNECT_IVL_MAX_MS: Final = 2_000
RECEIVE_BATCH: Final = 256
START_TIMEOUT: Final = 10.0
STOP_FLUSH_SECONDS: Final = 1.0


S = TypeVar("S", bound=zmq.Socket[Any])


def configure_router(router: S) -> S:
    """The inbound socket's options (see the module docstring)."""
    router.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
    router.setsockopt(zmq.LINGER, 0)
    router.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
    router.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
    return router


def connect_dealer(dealer: zmq.Socket[Any], address: str, me: str) -> bool:
    """Set an outbound socket's options and connect it; False (socket closed) if the
    address is unusable."""
    dealer.setsockopt(zmq.IMMEDIATE, 1)
    dealer.setsockopt(zmq.SNDHWM, SEND_HWM)
    dealer.setsockopt(zmq.LINGER, LINGER_MS)
    dealer.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
    dealer.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
    dealer.setsockopt(zmq.RECONNECT_IVL, RECONNECT_IVL_MS)
    dealer.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_IVL_MAX_MS)
    try:
        dealer.connect(address)
    except zmq.ZMQError as exc:
        logger.warning("%s: cannot connect to peer %r: %s", me, address, exc)
        dealer.close(linger=0)
        return False
    return True


def gossip_node(
    replica: Replica,
    address: str,
    peers: list[str],
    *,
    interval: float,
    dead_after: float,
    chunk_bytes: int,
    retire_after: float | None = None,
) -> GossipNode:
    """The protocol state both ZeroMQ drivers run: silent peers are re-probed at most
    every 8 s (or every interval, if that is longer)."""
    return GossipNode(
        replica,
        address,
        peers=peers,
        interval=interval,
        dead_after=dead_after,
        max_backoff=max(8.0, interval),
        chunk_bytes=chunk_bytes,
        retire_after=retire_after,
    )


def receive_parts(node: GossipNode, parts: list[bytes], now: float) -> list[Frame]:
    """Hand a ROUTER message (identity, frame) to the protocol; anything else is
    dropped, counted and logged."""
    if len(parts) != 2:
        node.stats["rejected_frames"] += 1
        logger.warning("%s: dropped a frame of %d parts", node.address, len(parts))
        return []
    return node.receive(parts[1], now)


def driver_stats(node: GossipNode | None, dropped_sends: int) -> dict[str, int]:
    """Frame and byte counters of the protocol, plus sends dropped by ZeroMQ."""
    counters = dict(node.stats) if node is not None else {}
    counters["dropped_sends"] = dropped_sends
    return counters


class ZmqGossip:
    """Gossip a replica with peers over ZeroMQ (see the module docstring).

    ``interval``, ``dead_after``, ``chunk_bytes`` and ``retire_after`` are those of
    :class:`~crdtmem.gossip.GossipNode`; ``retire_after`` (off by default) retires peers
    silent that long, for groups of ephemeral agents that may crash without leaving.

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
        interval: float = 0.5,
        dead_after: float = 3.0,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        retire_after: float | None = None,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        self.replica = replica
        self.bind = bind
        self._peers = [p for p in peers if p != bind]
        self._interval, self._dead_after, self._chunk_bytes = interval, dead_after, chunk_bytes
        self._retire_after = retire_after
        self._context = context or zmq.Context.instance()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._error: BaseException | None = None
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)
        self._unsubscribe: Any = None
        self.address = bind
        self.node: GossipNode | None = None
        self.dropped_sends = 0
        self._retirements: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._leave_by: float | None = None  # set by leave(): the deadline to say goodbye
        self.left_spread: bool | None = None

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> ZmqGossip:
        """Bind, start the gossip thread, and return once bound."""
        if self._thread is not None:
            raise RuntimeError("this ZmqGossip was already started")
        self._thread = threading.Thread(
            target=self._run, name=f"crdtmem-gossip-{self.replica.replica_id}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            self._stopping.set()
            raise TimeoutError(f"gossip thread did not bind {self.bind} in {START_TIMEOUT} s")
        if self._error is not None:
            self._thread.join(START_TIMEOUT)
            self._close_pipe()
            raise self._error
        self._unsubscribe = self.replica.subscribe(self._on_change)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Push what is pending (best effort), close the sockets, join the thread."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        thread = self._thread
        if thread is None or not thread.is_alive():
            self._close_pipe()
            return
        self._stopping.set()
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

    def leave(self, timeout: float = 5.0) -> bool:
        """Leave the group for good: wait up to ``timeout`` seconds for every peer to
        acknowledge this replica's updates, tell the peers to retire it (so they stop
        waiting for it to collect), and stop. Returns whether every peer had
        acknowledged everything. Do not write to the replica afterwards."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            raise RuntimeError("this ZmqGossip is not running")
        self._leave_by = time.monotonic() + timeout
        self._wake()
        thread.join(timeout + START_TIMEOUT)
        self.stop()
        return bool(self.left_spread)

    def retire(self, replica_id: str) -> None:
        """Retire a replica that left the group for good (see
        :meth:`crdtmem.gossip.GossipNode.retire`). Safe from any thread: the gossip
        thread applies it."""
        check_replica_id(replica_id)
        if replica_id == self.replica.replica_id:
            raise ValueError("a node cannot retire its own replica")
        self._retirements.put(replica_id)
        self._wake()

    # --- waking the loop --------------------------------------------------------------

    def _on_change(self, event: ChangeEvent) -> None:
        if event.local:
            self._wake()

    def _wake(self) -> None:
        # A full pipe means the loop is already due to wake; a closed one, it stopped.
        with contextlib.suppress(OSError):
            os.write(self._wake_write, b"\x01")

    # --- the gossip thread ---------------------------------------------------------------

    def _run(self) -> None:
        router: zmq.Socket[bytes] | None = None
        dealers: dict[str, zmq.Socket[bytes]] = {}
        try:
            router = configure_router(self._context.socket(zmq.ROUTER))
            router.bind(self.bind)
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
        except BaseException as exc:  # reported to start(), which re-raises it
            self._error = exc
            if router is not None:
                router.close(linger=0)
            self._ready.set()
            return
        self._ready.set()
        try:
            self._loop(router, dealers, self.node)
        finally:
            for dealer in dealers.values():
                dealer.close(linger=LINGER_MS)
            router.close(linger=0)

    def _loop(
        self, router: zmq.Socket[bytes], dealers: dict[str, zmq.Socket[bytes]], node: GossipNode
    ) -> None:
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(self._wake_read, zmq.POLLIN)
        while not self._stopping.is_set():
            wait = max(0.0, node.next_deadline() - time.monotonic())
            if self._leave_by is not None:
                if node.spread() or time.monotonic() >= self._leave_by:
                    self.left_spread = node.spread()
                    self._send(node.leave(), dealers)
                    break
                wait = min(wait, 0.01)
            ready = dict(poller.poll(int(wait * 1000) + 1))
            now = time.monotonic()
            frames: list[Frame] = []
            if self._wake_read in ready:
                os.read(self._wake_read, 4096)
                while not self._retirements.empty():
                    node.retire(self._retirements.get())
                frames += node.flush(now)
            if router in ready:
                for _ in range(RECEIVE_BATCH):
                    if self._stopping.is_set():
                        break  # what is left unread, the peers resend after we return
                    try:
                        parts = router.recv_multipart(zmq.NOBLOCK, copy=True)
                    except zmq.Again:
                        break
                    frames += receive_parts(node, parts, now)
            frames += node.tick(now)
            self._send(frames, dealers)
        # Best effort: hand what is pending to the sockets, for at most STOP_FLUSH_SECONDS;
        # LINGER then bounds how long closing waits for them to leave.
        now = time.monotonic()
        self._send(node.flush(now), dealers, deadline=now + STOP_FLUSH_SECONDS)

    def _send(
        self,
        frames: list[Frame],
        dealers: dict[str, zmq.Socket[bytes]],
        deadline: float | None = None,
    ) -> None:
        for frame in frames:
            # stop() is waiting: what is not handed over now, anti-entropy resends later.
            if deadline is None and self._stopping.is_set():
                return
            if deadline is not None and time.monotonic() > deadline:
                return
            dealer = dealers.get(frame.peer)
            if dealer is None:
                dealer = self._dealer(frame.peer)
                if dealer is None:
                    continue
                dealers[frame.peer] = dealer
            try:
                dealer.send(frame.data, zmq.NOBLOCK, copy=False)
            except zmq.Again:
                self.dropped_sends += 1  # peer down or slow: anti-entropy repairs it

    def _dealer(self, address: str) -> zmq.Socket[bytes] | None:
        dealer: zmq.Socket[bytes] = self._context.socket(zmq.DEALER)
        if connect_dealer(dealer, address, self.address):
            return dealer
        if self.node is not None:
            self.node.remove_peer(address)
        return None

    # --- observation ---------------------------------------------------------------------

    @property
    def stats(self) -> dict[str, int]:
        """Frame and byte counters of the protocol, plus sends dropped by ZeroMQ."""
        return driver_stats(self.node, self.dropped_sends)
