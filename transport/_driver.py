"""What both ZeroMQ drivers do the same way, whatever runs their loop.

:class:`transport.ZmqGossip` (a thread) and :class:`transport.AsyncZmqGossip` (an
asyncio task) differ only in how they wait: for the ROUTER, a wake-up and the node's
next deadline. Everything else is here, once: the protocol state
(:class:`~crdtmem.gossip.GossipNode`, built from one :class:`~crdtmem.gossip.GossipConfig`),
the socket options, the dealer cache and send path with dropped-send counting, one
turn of the loop (:meth:`DriverCore.step`), the requests other threads hand the loop
(retire, leave), the final flush and the stats.

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
  digest after it returns repairs the gap. Sends never wait, so DEALERs are plain
  (blocking-API) sockets in both drivers.
- ZMTP heartbeats (``HEARTBEAT_IVL``/``TIMEOUT``): a dead TCP connection is noticed and
  re-dialled even when nothing is being sent.
- ``LINGER`` bounded on close: ``stop()`` never hangs on an unreachable peer.
- ``ROUTER_HANDOVER`` on the ROUTER: a peer that comes back under a routing id still
  attached to a dead pipe takes it over instead of being ignored (DEALERs set no
  ``ROUTING_ID`` today, so each connection gets a fresh one; this guards the day one is).
- A socket monitor on each DEALER: when its handshake succeeds, the node is told
  (:meth:`~crdtmem.gossip.GossipNode.peer_connected`) and sends that peer a push and a
  digest in the same turn, so what was written before the connection existed (frames
  sent then were dropped by ``IMMEDIATE``) does not wait for the probing backoff.
  The driver also keeps the addresses whose DEALER is connected (handshake up, not
  disconnected since, socket open): a DEALER outlives the node dropping its peer
  (goodbye, retirement, an unanswered learned address), so when the address is learned
  again no new handshake is reported; each turn, such an address in the node's peers
  but not verified is reported connected then.

Security (docs/security.md): with keys (``identity=`` and ``trusted=``) every socket is
CURVE. The ROUTER is a CURVE server behind a ZAP gate of its own
(:class:`transport.security.Gate`), opened before it binds and closed after it closes,
with a monitor counting the handshakes it refused; each DEALER is a CURVE client of the
key bound to its address (:class:`transport.security.PeerKeys`: configured as
``NAME@address``, proved by a handshake, or claimed first-hand by an authenticated
frame; a bare address is dialled with each trusted key in turn). Frames are received
with ``copy=False``, so each carries the name its connection authenticated as, which
the node checks against the replica id the frame claims. A DEALER whose handshake
fails is closed (libzmq never retries it) and dialled again: at once with the next
candidate key, else after a backoff (RETRY_MIN_SECONDS doubling to RETRY_MAX_SECONDS).
Revocation (:meth:`DriverCore.reload_trusted`) is queued to the loop like a retirement.
Without keys, :func:`transport.endpoints.check_exposure` refuses a bind other machines
reach unless ``insecure=True``.

All sockets are created, used and closed by the loop's own thread (ZeroMQ sockets are
not thread-safe); other threads only write to the replica or call :meth:`retire` and
:meth:`request_leave` here, which queue the request, and then wake the loop.

Socket budget: at most :func:`socket_budget` DEALERs are open at once (the smaller of
:data:`crdtmem.gossip.MAX_OPEN_PEERS` and what fits in half the process's
file-descriptor soft limit and half the context's ZeroMQ socket limit: a DEALER costs
about four descriptors and three ZeroMQ sockets with its monitor; 128 with the usual
limits of 1024 and 1023). A DEALER
is opened only for a peer a frame is actually sent to; to open one past the budget, the
least recently used is closed, a learned peer's before a configured one's. A socket
that cannot be opened anyway (another part of the process used the descriptors) drops
that frame, counted in ``dropped_sends`` and logged, rate-limited; the loop goes on.

Health: a loop that fails anyway (an exception outside the handling of one frame,
which the node contains) ends with its error logged at ERROR with the traceback;
``health`` is then ``"failed"``, ``error`` the exception and ``stats["healthy"]`` 0,
each later local write logs an ERROR (at most once per DEAD_LOOP_LOG_SECONDS) saying it
is not gossiped, and ``stop()`` does not raise.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import queue
import resource
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final, TypeVar, Union

import zmq
from zmq.utils.monitor import parse_monitor_message

from crdtmem import Replica, codec
from crdtmem.errors import ReplicaClosed
from crdtmem.gossip import (
    MAX_OPEN_PEERS,
    MAX_PEERS_LEARNED,
    Frame,
    GossipConfig,
    GossipNode,
    check_leave_timeout,
    check_retire,
)
from crdtmem.identity import name_of
from crdtmem.keys import Identity, load_identity, load_trusted
from transport.endpoints import check_bind, check_exposure
from transport.security import (
    Gate,
    PeerKeys,
    Source,
    check_named_peers,
    dial_curve,
    drop_connections,
    sender_name,
    serve_curve,
)

logger = logging.getLogger("transport.zmq")

# Frames larger than this are refused by the ROUTER (the sender is disconnected).
MAX_FRAME_BYTES: Final = codec.MAX_MESSAGE_BYTES + 64 * 1024
SEND_HWM: Final = 10_000
LINGER_MS: Final = 500
HEARTBEAT_IVL_MS: Final = 1_000
HEARTBEAT_TIMEOUT_MS: Final = 3_000
RECONNECT_IVL_MS: Final = 100
RECONNECT_IVL_MAX_MS: Final = 2_000
# Messages read per turn of the loop: the node also ticks and flushes between batches.
RECEIVE_BATCH: Final = 256
START_TIMEOUT: Final = 10.0
STOP_TIMEOUT: Final = 5.0
STOP_FLUSH_SECONDS: Final = 1.0
# A new DEALER's handshake is looked for this often, for this long after it was made
# (then once a turn): the push of a write made before the connection leaves within
# tens of milliseconds of the connection, not at the next digest round.
HANDSHAKE_POLL_SECONDS: Final = 0.02
HANDSHAKE_WATCH_SECONDS: Final = 3.0
# What one DEALER costs, measured: file descriptors (its mailbox, its monitor's two
# PAIR sockets' mailboxes, and its TCP connection) and ZeroMQ sockets (itself and the
# monitor's pair), each limited per process (RLIMIT_NOFILE) or per context (MAX_SOCKETS).
DEALER_FDS: Final = 4
DEALER_SOCKETS: Final = 3
# The share of each limit a driver's DEALERs may take: half (the rest for the ROUTER,
# the application, and other drivers in the process).
SOCKET_SHARE: Final = 2
# While the loop is dead, a local write logs an ERROR at most this often.
DEAD_LOOP_LOG_SECONDS: Final = 10.0
# Failures to open a socket are logged at most this often.
SOCKET_ERROR_LOG_SECONDS: Final = 10.0
# Failed CURVE handshakes (at the ROUTER: strangers; at a DEALER: a wrong server key, or
# this node refused) are logged at most this often, with the count since the last line:
# a flood of attempts must not flood the log.
HANDSHAKE_LOG_SECONDS: Final = 10.0
HANDSHAKE_FAILED_EVENTS: Final = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
# After a failed handshake libzmq never retries that connection: the driver dials again
# with a new DEALER, first at once with the next candidate key (an address given
# without a name), then after a backoff doubling from RETRY_MIN_SECONDS up to
# RETRY_MAX_SECONDS (a refused node is retried, e.g. once its key was added, without
# hammering a peer that refuses it).
RETRY_MIN_SECONDS: Final = 0.1
RETRY_MAX_SECONDS: Final = 5.0
# An address a frame claims is cut to this many characters in the log (it is the
# sender's choice).
MAX_LOGGED_ADDRESS: Final = 200
# Monitor events read per socket per turn (a flapping peer cannot hold the loop).
MONITOR_EVENTS_PER_TURN: Final = 64

# What the drivers' identity= and trusted= take: paths (loaded at construction), or
# what crdtmem.keys loads from them.
IdentitySource = Union[str, "os.PathLike[str]", Identity]
TrustedSource = Union[
    str, "os.PathLike[str]", Iterable[Union[str, "os.PathLike[str]"]], Mapping[str, bytes]
]
_monitor_ids = itertools.count()

STARTING: Final = "starting"
RUNNING: Final = "running"
STOPPED: Final = "stopped"
FAILED: Final = "failed"


def socket_budget(context: zmq.Context[Any], configured: int = MAX_OPEN_PEERS) -> int:
    """How many DEALERs a driver keeps open at once: ``configured``, lowered so that
    they take at most a SOCKET_SHARE-th of the process's file-descriptor soft limit
    (``RLIMIT_NOFILE``) and of the context's ZeroMQ socket limit (``MAX_SOCKETS``);
    at least 1. With the defaults (1024 descriptors, 1023 sockets): 128."""
    budget = configured
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY:
        budget = min(budget, soft // SOCKET_SHARE // DEALER_FDS)
    with contextlib.suppress(zmq.ZMQError):
        budget = min(budget, context.get(zmq.MAX_SOCKETS) // SOCKET_SHARE // DEALER_SOCKETS)
    return max(1, budget)


S = TypeVar("S", bound=zmq.Socket[Any])


def configure_router(router: S) -> S:
    """The inbound socket's options (see the module docstring)."""
    router.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
    router.setsockopt(zmq.LINGER, 0)
    router.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
    router.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
    router.setsockopt(zmq.ROUTER_HANDOVER, 1)
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


class DriverCore:
    """The socket-independent half of a ZeroMQ gossip driver (see the module docstring).

    Args:
        replica: the replica to gossip.
        bind: the ROUTER's endpoint; the node's address is where it really bound,
            unless ``advertise`` names the address peers dial.
        peers: endpoints to start gossiping with.
        config: the protocol settings.
        context: a (blocking-API) context for the DEALER sockets.
    """

    def __init__(
        self,
        replica: Replica,
        bind: str,
        peers: Iterable[tuple[str | None, str]],
        config: GossipConfig,
        context: zmq.Context[Any],
        *,
        advertise: str | None = None,
        identity: Identity | None = None,
        trusted: Mapping[str, bytes] | None = None,
    ) -> None:
        self.replica = replica
        self.bind = bind
        self.advertise = advertise
        named = [(name, p) for name, p in peers if p not in (bind, advertise)]
        self.peers = [p for _, p in named]
        # CURVE (both given, or neither: DriverBase checks): every socket is secured.
        self.identity = identity
        self.peer_keys: PeerKeys | None = None
        if identity is not None and trusted is not None:
            self.peer_keys = PeerKeys(trusted)
            for name, address in named:
                if name is not None:
                    self.peer_keys.bind(address, name, Source.CONFIGURED)
        self.gate: Gate | None = None
        self.router: zmq.Socket[Any] | None = None
        self.router_monitor: zmq.Socket[bytes] | None = None
        self.endpoint = ""
        # Per address: the name whose server key its DEALER dials with, the candidate
        # keys tried since the last success, and when (and after what backoff) to dial
        # again after a failed handshake.
        self.dialled_as: dict[str, str] = {}
        self.tried: dict[str, int] = {}
        self.retry_at: dict[str, float] = {}
        self.backoff: dict[str, float] = {}
        self.handshakes_failed = 0  # at the ROUTER: clients refused (strangers)
        self.dials_failed = 0  # at DEALERs: a wrong server key, or refused by the peer
        self.unauthenticated = 0
        self.address_claims = 0  # frames naming an address known to be another's
        self._handshake_logged: dict[str, tuple[float, int]] = {}
        self._reloads: queue.SimpleQueue[dict[str, bytes]] = queue.SimpleQueue()
        self.config = config
        self.context = context
        self.node: GossipNode | None = None
        # Open DEALERs, least recently used first (at most `budget`).
        self.dealers: dict[str, zmq.Socket[bytes]] = {}
        self.budget = socket_budget(context)
        self.dealers_closed = 0
        self.health = STARTING
        self.error: BaseException | None = None
        self._dead_logged = float("-inf")
        self._socket_error_logged = float("-inf")
        # Per dealer, the PAIR socket its monitor reports handshakes on.
        self.monitors: dict[str, zmq.Socket[bytes]] = {}
        # DEALERs whose handshake is up and not disconnected since: the node is told
        # of them again when it (re)learns their address (see _verify_up).
        self.up: set[str] = set()
        # New DEALERs whose first handshake is awaited: address -> watched until.
        self.awaiting: dict[str, float] = {}
        self.dropped_sends = 0
        # Set from any thread (stop); read by the loop between sends and receives.
        self.stopping = False
        self._retirements: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._leave_timeout: float | None = None

    def open(self, address: str) -> GossipNode:
        """The protocol state, once the ROUTER is bound at ``address`` (the node's
        address is ``advertise`` when given: what peers dial)."""
        address = self.advertise or address
        self.node = GossipNode.from_config(self.replica, address, self.config, self.peers)
        return self.node

    # --- CURVE ---------------------------------------------------------------------------

    @property
    def secured(self) -> bool:
        """Whether this node runs over CURVE (``identity`` and ``trusted`` given)."""
        return self.peer_keys is not None

    def secure_router(self, router: S) -> S:
        """Before the ROUTER binds: with keys, make it a CURVE server behind a gate of
        its own (:class:`transport.security.Gate`) and monitor its failed handshakes
        (NULL, PLAIN, unknown or unproved keys: seen only there). Without keys, nothing."""
        self.router = router
        if self.peer_keys is None or self.identity is None:
            return router
        self.gate = Gate.open(self.context, self.peer_keys.trusted)
        serve_curve(router, self.identity, self.gate)
        # A monitor socket on this (blocking-API) context: the asyncio driver's ROUTER
        # lives in a shadow of the same context, and inproc works across shadows.
        address = f"inproc://crdtmem-router-monitor-{os.getpid()}-{next(_monitor_ids)}"
        router.monitor(address, HANDSHAKE_FAILED_EVENTS)
        monitor: zmq.Socket[bytes] = self.context.socket(zmq.PAIR)
        monitor.setsockopt(zmq.LINGER, 0)
        monitor.connect(address)
        self.router_monitor = monitor
        return router

    def bound(self, endpoint: str) -> None:
        """The ROUTER is bound at ``endpoint`` (its ``LAST_ENDPOINT``): where
        :func:`~transport.security.drop_connections` binds it again on revocation."""
        self.endpoint = endpoint

    def close_router_monitor(self) -> None:
        """Before the ROUTER closes."""
        monitor, self.router_monitor = self.router_monitor, None
        if monitor is None:
            return
        if self.router is not None:
            with contextlib.suppress(zmq.ZMQError):
                self.router.disable_monitor()
        monitor.close(linger=0)

    def close_gate(self) -> None:
        """After the ROUTER closed (and before the context is terminated): stop admitting."""
        gate, self.gate = self.gate, None
        if gate is not None:
            gate.close()
        self.router = None

    def reload_trusted(self, trusted: Mapping[str, bytes]) -> None:
        """Queue a new trusted set for the loop (any thread; the driver wakes it)."""
        self._reloads.put(dict(trusted))

    def _apply_reloads(self, node: GossipNode) -> None:
        """The loop's side of :meth:`reload_trusted`: the gate and the dialling side
        trust the new set; a name left out (or whose key changed) is cut off now: the
        DEALERs dialling it are closed and the ROUTER's connections dropped (each honest
        client reconnects and passes the gate again; the revoked key is refused)."""
        while not self._reloads.empty():
            trusted = self._reloads.get()
            if self.peer_keys is None or self.gate is None:
                continue
            # A name whose key changed (rotation) is a revocation of the old key too.
            before = self.peer_keys.trusted
            removed = {name for name, key in before.items() if trusted.get(name) != key}
            self.gate.reload(trusted)
            self.peer_keys.reload(trusted)
            for address, name in list(self.dialled_as.items()):
                if name in removed and address in self.dealers:
                    self._close_dealer(address)
            logger.warning(
                "%s: trusted keys reloaded: %d trusted; removed: %s",
                node.address,
                len(trusted),
                ", ".join(sorted(removed)) or "none",
            )
            if removed and self.router is not None and self.endpoint:
                try:
                    drop_connections(self.router, self.endpoint)
                except zmq.ZMQError as exc:  # the port was taken meanwhile: say so loudly
                    logger.error(
                        "%s: could not drop the connections of revoked keys (%s): they "
                        "stay open until they reconnect",
                        node.address,
                        exc,
                    )

    def deliver(self, node: GossipNode, parts: list[Any], now: float) -> list[Frame]:
        """Hand one received message to the node. With keys, the message's frames
        (``copy=False``) carry the name the connection authenticated as: the node
        refuses a frame speaking for another replica; a frame claiming an address
        configured or proved to be another replica's is refused here (counted in
        ``address_claims``, logged rate-limited); otherwise the claimed address is bound
        to that name first-hand (what to dial it with)."""
        if self.peer_keys is None:
            return node.receive_message(parts, now)
        name = sender_name(parts[-1]) if parts else None
        data: list[bytes] = [part.bytes for part in parts]
        if name is None:  # cannot happen behind serve_curve; fail closed if it does
            self.unauthenticated += 1
            return []
        head = codec.peek(data[-1], 3)
        if head is not None and isinstance(head[1], str) and isinstance(head[2], str):
            claimed = head[1]
            bound = self.peer_keys.name_at(claimed)
            source = self.peer_keys.source_at(claimed)
            if bound not in (None, name) and source is not None and source >= Source.PROVED:
                # The address is known (configured, or proved by a handshake with its
                # key) to be another replica's: a member posing as it is refused.
                self.address_claims += 1
                self._log_handshake(
                    "claim:" + name,
                    now,
                    "%s: refused a frame of %r claiming the address %s of %r (%d such)",
                    node.address,
                    name,
                    claimed[:MAX_LOGGED_ADDRESS],
                    bound,
                    self.address_claims,
                )
                return []
            if name_of(head[2]) == name and claimed != node.address:
                with contextlib.suppress(ValueError):  # a bad name: nothing to bind
                    self.peer_keys.bind(claimed, name, Source.FIRST_HAND)
        return node.receive_message(data, now, authenticated=name)

    def _router_failures(self, node: GossipNode, now: float) -> None:
        """Count (and log, rate-limited) the handshakes the ROUTER refused."""
        monitor = self.router_monitor
        if monitor is None:
            return
        for _ in range(MONITOR_EVENTS_PER_TURN):
            try:
                parse_monitor_message(monitor.recv_multipart(zmq.NOBLOCK))
            except zmq.ZMQError:  # zmq.Again: none left
                return
            self.handshakes_failed += 1
            self._log_handshake(
                "in",
                now,
                "%s: refused a connection at its handshake (no key, PLAIN, an untrusted or "
                "unproved key); %d refused so far",
                node.address,
                self.handshakes_failed,
            )

    def _log_handshake(self, key: str, now: float, message: str, *args: object) -> None:
        last, skipped = self._handshake_logged.get(key, (float("-inf"), 0))
        if now - last < HANDSHAKE_LOG_SECONDS:
            self._handshake_logged[key] = (last, skipped + 1)
            return
        self._handshake_logged[key] = (now, 0)
        logger.warning(message, *args)

    def _dial_failed(self, node: GossipNode, address: str, now: float) -> None:
        """A DEALER's handshake failed (libzmq will not retry it): close it; dial again
        with the next candidate key at once, or after a bounded backoff once every
        candidate failed (or the name was known)."""
        self.dials_failed += 1
        name = self.dialled_as.get(address, "?")
        if address in self.dealers:
            self._close_dealer(address)
        if len(self.retry_at) >= MAX_PEERS_LEARNED:  # bounded: forget departed addresses
            for gone in [a for a in self.retry_at if a not in node.peers]:
                for table in (self.retry_at, self.backoff, self.tried):
                    table.pop(gone, None)
        keys = self.peer_keys
        source = keys.source_at(address) if keys is not None else None
        if keys is not None and source is not None and source < Source.CONFIGURED:
            keys.forget(address)  # only a claim, and the handshake says it is wrong
        tried = self.tried.get(address, 0) + 1
        self.tried[address] = tried
        if (
            keys is not None
            and source is None
            and tried % max(1, len(self._candidates(address))) != 0
        ):
            return  # the next candidate key, at once
        backoff = min(RETRY_MAX_SECONDS, max(RETRY_MIN_SECONDS, 2 * self.backoff.get(address, 0)))
        self.backoff[address] = backoff
        self.retry_at[address] = now + backoff
        self._log_handshake(
            "out:" + address,
            now,
            "%s: handshake with %s (dialled as %r) failed: a wrong server key, or it does "
            "not trust this node's key; retrying in %.1f s",
            node.address,
            address,
            name,
            backoff,
        )

    # --- health ----------------------------------------------------------------------

    def running(self) -> None:
        """The loop has started."""
        self.health = RUNNING

    def ended(self, error: BaseException | None) -> None:
        """The loop has ended: cleanly (``error`` None), or killed by ``error``, which is
        logged at ERROR with its traceback and kept (``health`` "failed")."""
        if error is None:
            if self.health != FAILED:
                self.health = STOPPED
            return
        self.error = error
        self.health = FAILED
        logger.error(
            "gossip loop of %s died: %s: %s; nothing is gossiped any more (restart it: "
            "stop() then start())",
            self.node.address if self.node is not None else self.bind,
            type(error).__name__,
            error,
            exc_info=error,
        )

    def local_write(self) -> None:
        """A local write happened (any thread): while the loop is dead, say loudly that
        it is not gossiped (at most once per DEAD_LOOP_LOG_SECONDS)."""
        if self.health != FAILED:
            return
        now = time.monotonic()
        if now - self._dead_logged < DEAD_LOOP_LOG_SECONDS:
            return
        self._dead_logged = now
        logger.error(
            "a write to %s is not gossiped: its gossip loop died (%s: %s)",
            self.replica.replica_id,
            type(self.error).__name__,
            self.error,
        )

    # --- requests from any thread (the driver wakes the loop after each) ---------------

    def retire(self, replica_id: str) -> None:
        """Queue a retirement for the loop, after the one validation every driver
        shares (:func:`crdtmem.gossip.check_retire`)."""
        self._retirements.put(check_retire(self.replica.writer_id, replica_id))

    def request_leave(self, timeout: float) -> None:
        """Ask the loop to leave (:meth:`crdtmem.gossip.GossipNode.begin_leave`)."""
        self._leave_timeout = check_leave_timeout(timeout)

    # --- the loop ------------------------------------------------------------------------

    def wait_seconds(self, node: GossipNode, now: float) -> float:
        """How long the loop may wait for a message or a wake-up before :meth:`step`."""
        wait = max(0.0, node.next_deadline() - now)
        for address, until in list(self.awaiting.items()):
            if now > until:
                del self.awaiting[address]  # down, it seems: found at a later turn
            else:
                wait = min(wait, HANDSHAKE_POLL_SECONDS)
        return wait

    def batch(
        self, receive_now: Callable[[], list[Any]], first: list[Any] | None = None
    ) -> Iterator[list[Any]]:
        """The messages waiting at the ROUTER, ``first`` then at most RECEIVE_BATCH more,
        each read (``receive_now``: a non-blocking receive, raising ``zmq.Again`` when
        none is left) only as :meth:`step` comes to it: what arrives while the node
        handles one is handled in the same turn, and what is left unread when stopping,
        the peers resend after we return."""
        if first is not None:
            yield first
        for _ in range(RECEIVE_BATCH):
            try:
                yield receive_now()
            except zmq.Again:
                return

    def step(
        self, node: GossipNode, now: float, *, woke: bool, messages: Iterable[list[Any]]
    ) -> bool:
        """One turn of the loop: requests, then a flush of local writes (``woke``), the
        received ``messages``, the timer, and the sends. Returns False once the node has
        said goodbye (leave): the loop then ends."""
        frames: list[Frame] = []
        self._apply_reloads(node)
        self._router_failures(node, now)
        while not self._retirements.empty():
            replica_id = self._retirements.get()
            try:
                node.retire(replica_id)
            except ReplicaClosed as exc:
                logger.error("%s: cannot retire %r: %s", node.address, replica_id, exc)
        timeout, self._leave_timeout = self._leave_timeout, None
        if timeout is not None:
            frames += node.begin_leave(now, timeout)
        if woke:
            frames += node.flush(now)
        frames += self._connected(node, now)
        for parts in messages:
            if self.stopping:
                break  # stop() is waiting: peers resend what is left, after we return
            frames += self.deliver(node, parts, now)
        frames += self._verify_up(node, now)
        frames += node.tick(now)
        self.send(node, frames)
        if node.leave_done(now):
            self.send(node, node.leave())
            return False
        return True

    def _connected(self, node: GossipNode, now: float) -> list[Frame]:
        """Frames for the peers whose DEALER completed a handshake since the last turn
        (read without waiting; the loop turns at least once an interval)."""
        frames: list[Frame] = []
        for address, monitor in list(self.monitors.items()):
            up = failed = False
            for _ in range(MONITOR_EVENTS_PER_TURN):
                try:
                    event = parse_monitor_message(monitor.recv_multipart(zmq.NOBLOCK))
                except zmq.Again:
                    break
                except zmq.ZMQError:
                    break
                kind = event["event"]
                up = up or kind == zmq.EVENT_HANDSHAKE_SUCCEEDED
                failed = failed or bool(kind & HANDSHAKE_FAILED_EVENTS)
                # The last of these events read says whether it is connected now.
                if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    self.up.add(address)
                elif kind == zmq.EVENT_DISCONNECTED:
                    self.up.discard(address)
            if up:
                self.awaiting.pop(address, None)
                self.tried.pop(address, None)
                self.backoff.pop(address, None)
                name = self.dialled_as.get(address)
                if self.peer_keys is not None and name is not None:
                    self.peer_keys.bind(address, name, Source.PROVED)
                if address in node.peers:
                    frames += node.peer_connected(address, now)
            elif failed:
                self._dial_failed(node, address, now)
        return frames

    def _verify_up(self, node: GossipNode, now: float) -> list[Frame]:
        """Frames for the peers the node has (again) but has not seen connect, whose
        DEALER is connected all the same: its handshake came while the node did not
        have the address (dropped, then learned again), and none comes again while the
        connection stays up. Bounded: at most one per open DEALER (the socket budget)."""
        frames: list[Frame] = []
        for address in list(self.up):
            peer = node.peers.get(address)
            if peer is not None and not peer.verified:
                frames += node.peer_connected(address, now)
        return frames

    def finish(self, node: GossipNode) -> None:
        """Best effort on the way out: hand what is pending to the sockets, for at most
        STOP_FLUSH_SECONDS; LINGER then bounds how long closing waits for them."""
        now = time.monotonic()
        self.send(node, node.flush(now), deadline=now + STOP_FLUSH_SECONDS)

    def send(self, node: GossipNode, frames: list[Frame], deadline: float | None = None) -> None:
        """Hand ``frames`` to their peers' DEALERs, never waiting: a frame ZeroMQ will
        not take now is counted in ``dropped_sends`` and left to anti-entropy."""
        for frame in frames:
            # stop() is waiting: what is not handed over now, anti-entropy resends later.
            if deadline is None and self.stopping:
                return
            if deadline is not None and time.monotonic() > deadline:
                return
            dealer = self.dealers.pop(frame.peer, None)
            if dealer is None:
                self._make_room(node)
                dealer = self._dealer(node, frame.peer)
                if dealer is None:
                    continue
            self.dealers[frame.peer] = dealer  # now the most recently used
            try:
                dealer.send(frame.data, zmq.NOBLOCK, copy=False)
            except zmq.Again:
                self.dropped_sends += 1  # peer down or slow: anti-entropy repairs it

    def _make_room(self, node: GossipNode) -> None:
        """Close DEALERs until one more fits the budget: the least recently used of a
        learned peer first, else the least recently used one."""
        while self.dealers and len(self.dealers) >= self.budget:
            victim = next(iter(self.dealers))  # least recently used
            for address in self.dealers:
                peer = node.peers.get(address)
                if peer is None or not peer.configured:
                    victim = address
                    break
            self._close_dealer(victim)
            self.dealers_closed += 1

    def _close_dealer(self, address: str) -> None:
        dealer = self.dealers.pop(address)
        self.awaiting.pop(address, None)
        self.up.discard(address)
        self.dialled_as.pop(address, None)
        monitor = self.monitors.pop(address, None)
        if monitor is not None:
            with contextlib.suppress(zmq.ZMQError):
                dealer.disable_monitor()
            monitor.close(linger=0)
        dealer.close(linger=LINGER_MS)

    def _server_key(self, address: str) -> tuple[str, bytes] | None:
        """With keys: the (name, server key) to dial ``address`` with now, or ``None``
        (its name is revoked): the frame is dropped, and anti-entropy repairs it once a
        connection is up."""
        if self.peer_keys is None:
            return None
        candidates = self._candidates(address)
        if not candidates:
            return None
        return candidates[self.tried.get(address, 0) % len(candidates)]

    def _candidates(self, address: str) -> list[tuple[str, bytes]]:
        """The (name, server key) pairs to dial ``address`` with, in order."""
        if self.peer_keys is None:
            return []
        candidates = self.peer_keys.candidates(address)
        own = self.identity.name if self.identity is not None else None
        # This node's own key is never a peer's (a peer under its name is refused).
        return [c for c in candidates if c[0] != own] or candidates

    def _dealer(self, node: GossipNode, address: str) -> zmq.Socket[bytes] | None:
        if time.monotonic() < self.retry_at.get(address, 0.0):
            self.dropped_sends += 1  # a failed handshake's backoff runs
            return None
        server: tuple[str, bytes] | None = None
        if self.identity is not None:
            server = self._server_key(address)
            if server is None:  # never a plain-text DEALER on a secured node
                self.dropped_sends += 1
                return None
        try:
            dealer: zmq.Socket[bytes] = self.context.socket(zmq.DEALER)
        except zmq.ZMQError as exc:  # out of descriptors or sockets: drop this frame
            self._socket_error(node, address, exc)
            return None
        try:
            # Monitored before connecting, so the first handshake is not missed.
            monitor = dealer.get_monitor_socket(
                zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | HANDSHAKE_FAILED_EVENTS
            )
        except zmq.ZMQError as exc:
            dealer.close(linger=0)
            self._socket_error(node, address, exc)
            return None
        if server is not None and self.identity is not None:
            dial_curve(dealer, self.identity, server[1])
            self.dialled_as[address] = server[0]
        if connect_dealer(dealer, address, node.address):
            self.monitors[address] = monitor
            self.awaiting[address] = time.monotonic() + HANDSHAKE_WATCH_SECONDS
            return dealer
        monitor.close(linger=0)
        node.remove_peer(address)
        return None

    def _socket_error(self, node: GossipNode, address: str, exc: zmq.ZMQError) -> None:
        self.dropped_sends += 1
        now = time.monotonic()
        if now - self._socket_error_logged >= SOCKET_ERROR_LOG_SECONDS:
            self._socket_error_logged = now
            logger.error(
                "%s: cannot open a socket to %r (%s); frames to it are dropped until one "
                "can be opened (%d open)",
                node.address,
                address,
                exc,
                len(self.dealers),
            )

    def close(self) -> None:
        """Close the DEALERs (LINGER bounds how long what is queued may take) and the
        ROUTER's monitor."""
        for address in list(self.dealers):
            self._close_dealer(address)
        self.close_router_monitor()

    @property
    def left_spread(self) -> bool:
        """Whether every peer had acknowledged this replica's updates when it left."""
        return self.node is not None and bool(self.node.left_spread)


class DriverBase:
    """What both ZeroMQ drivers share outside their loop: their settings (``settings``:
    the ``interval``, ``dead_after``, ``chunk_bytes`` and ``retire_after`` of
    :class:`~crdtmem.gossip.GossipConfig`), their keys, their :class:`DriverCore`, and
    the protocol state and counters read from it.

    Keys (both or neither): ``identity``, the node's own secret key file (or a loaded
    :class:`~crdtmem.keys.Identity`), whose name must be the replica's; ``trusted``, a
    folder of ``.pub`` files, a list of them, or a loaded ``{name: public key}``. Both
    are read here, so a bad file raises at the call. Without keys the node may bind
    only loopback, ``ipc://`` or ``inproc://`` unless ``insecure=True``
    (:func:`transport.endpoints.check_exposure`)."""

    def __init__(
        self,
        replica: Replica,
        bind: str,
        peers: Iterable[str],
        context: zmq.Context[Any],
        settings: tuple[float, float, int, float | None],
        *,
        advertise: str | None = None,
        identity: IdentitySource | None = None,
        trusted: TrustedSource | None = None,
        insecure: bool = False,
    ) -> None:
        # Checks at the call (transport.endpoints): a typo raises here, not in the loop.
        named = check_named_peers(peers)
        advertise = check_bind(bind, advertise)
        if (identity is None) != (trusted is None):
            raise ValueError(
                "pass both identity= (this node's .key file) and trusted= (the folder or "
                "list of .pub files it trusts), or neither"
            )
        check_exposure(bind, secured=identity is not None, insecure=insecure)
        self._identity: Identity | None = None
        self._trusted_source = trusted
        self._trusted: dict[str, bytes] | None = None
        if identity is not None and trusted is not None:
            self._identity = identity if isinstance(identity, Identity) else load_identity(identity)
            if self._identity.name != replica.replica_id:
                raise ValueError(
                    f"identity is the key of {self._identity.name!r} but the replica is "
                    f"{replica.replica_id!r}: a key speaks only for the replica of its name"
                )
            self._trusted = _load_trusted(trusted)
        interval, dead_after, chunk_bytes, retire_after = settings
        self._config = GossipConfig(
            interval=interval,
            dead_after=dead_after,
            chunk_bytes=chunk_bytes,
            retire_after=retire_after,
        )
        self.replica = replica
        self.bind = bind
        # Where it really bound once started (port 0: any), or what it advertises.
        self.address = advertise or bind
        self.advertise = advertise
        self._named_peers = named
        self._dealer_context = context
        self._core = self._fresh()

    def _fresh(self) -> DriverCore:
        return DriverCore(
            self.replica,
            self.bind,
            self._named_peers,
            self._config,
            self._dealer_context,
            advertise=self.advertise,
            identity=self._identity,
            trusted=self._trusted,
        )

    def _renew(self) -> None:
        """Before a start: after an earlier run stopped, a fresh core (new protocol
        state and sockets) for a fresh run on the same replica."""
        if self._core.node is not None:
            self._core = self._fresh()

    @property
    def secured(self) -> bool:
        """Whether this node gossips over CURVE (built with ``identity`` and ``trusted``)."""
        return self._identity is not None

    def _reload(self, trusted: TrustedSource | None) -> None:
        """Load the new trusted set here (errors at the call) and queue it for the loop;
        the driver then wakes the loop."""
        if self._identity is None:
            raise RuntimeError("this node has no keys: build it with identity= and trusted=")
        source = self._trusted_source if trusted is None else trusted
        if source is None:  # pragma: no cover - set whenever there is an identity
            raise RuntimeError("no trusted keys to reload")
        keys = _load_trusted(source)
        self._trusted_source, self._trusted = source, keys
        self._core.reload_trusted(keys)

    @property
    def node(self) -> GossipNode | None:
        """The protocol state, once started."""
        return self._core.node

    @property
    def dropped_sends(self) -> int:
        """Frames ZeroMQ would not take (peer down or slow); anti-entropy repairs them."""
        return self._core.dropped_sends

    @property
    def left_spread(self) -> bool:
        """Whether every peer had acknowledged this replica's updates when it left."""
        return self._core.left_spread

    @property
    def health(self) -> str:
        """``"starting"`` before the loop runs, ``"running"``, ``"stopped"`` once it
        ended (stop or leave), ``"failed"`` once an exception killed it (see
        :attr:`error`; the gossip is dead until ``stop()`` and ``start()``)."""
        return self._core.health

    @property
    def error(self) -> BaseException | None:
        """The exception that killed the loop, or ``None``."""
        return self._core.error

    @property
    def stats(self) -> dict[str, int]:
        """Frame and byte counters of the protocol, plus sends dropped by ZeroMQ, the
        DEALERs open (``open_peers``) and closed to keep the budget
        (``peers_closed``), and ``healthy`` (0 once the loop failed)."""
        counters = dict(self._core.node.stats) if self._core.node is not None else {}
        counters["dropped_sends"] = self._core.dropped_sends
        counters["open_peers"] = len(self._core.dealers)
        counters["peers_closed"] = self._core.dealers_closed
        counters["healthy"] = 0 if self._core.health == FAILED else 1
        if self.secured:
            core = self._core
            counters["handshakes_failed"] = core.handshakes_failed
            counters["handshakes_refused"] = core.gate.refused if core.gate is not None else 0
            counters["dials_failed"] = core.dials_failed
            counters["unauthenticated"] = core.unauthenticated
            counters["address_claims"] = core.address_claims
        return counters


def _load_trusted(source: TrustedSource) -> dict[str, bytes]:
    """``trusted=`` as ``{name: Z85 public key}``: loaded from files, or a mapping as is."""
    if isinstance(source, Mapping):
        return {str(name): bytes(key) for name, key in source.items()}
    return load_trusted(source)
