"""The gossip protocol, sans-IO: what to send to which peer, and when.

A :class:`GossipNode` wraps one replica. Drivers (``transport.ZmqGossip``,
``transport.SimNetwork``) feed it frames and the time, and send the frames it returns;
it never touches a socket or a clock. Three frame kinds, all carrying the sender's
version vector (which doubles as an acknowledgement):

- ``PUSH``: updates the peer is not known to have (a ``delta_chunk`` of the replica).
- ``ACK``: "I now have this version", sent after merging a push.
- ``SYNC``: the periodic anti-entropy digest, with the peers the sender knows when that
  list changed (so a node learns the whole group from one seed), a digest of the
  replica ids it counts as members, and the replicas retired from the group. Each round
  digests all peers up to 8, then about sqrt(n) of them in turn, so idle traffic stays
  small in large groups. A node that receives a digest pushes what the digest lacks,
  and answers with its own digest if it lacks something.

Causal stability: a digest reports what its sender had applied and whom it counts as
members. Once every member's report is one this node has caught up with, made while the
member agreed on who the members are, the pointwise minimum of the reports is *stable*:
everyone has applied it, and every update made before its maker applied it is already
here. Deleted list elements whose deletes are stable are collected
(:meth:`~crdtmem.Replica.collect_garbage`). A member that left for good holds that back
until it is retired (:meth:`GossipNode.retire`): retirement spreads with the digests, and
a retired replica id is refused from then on, so a replica that comes back under it
cannot bring back state the group has collected; it must rejoin under a new id.

Leaving is a policy of the node, not of a driver: :meth:`GossipNode.begin_leave` starts
it; the node keeps gossiping until :meth:`GossipNode.leave_done` (every peer has
acknowledged this replica's updates, or the deadline passed, which
:meth:`GossipNode.next_deadline` includes, so no driver polls); then the driver sends the
goodbye digests of :meth:`GossipNode.leave` and stops. Both ZeroMQ drivers and
``SimNetwork.leave`` run exactly this, so the simulator tests the real decision. The
settings, with the one set of defaults every driver uses, are a :class:`GossipConfig`.

Per peer it keeps what the peer acknowledged (``known``) and what was pushed since
(``sent``): a push covers only what neither contains, so nothing is sent back to the
peer it came from and nothing acknowledged is sent again (the "BP" and "RR"
optimisations of Enes et al., "Efficient Synchronization of State-based CRDTs", 2019).
ZeroMQ may drop frames silently; a lost push is repaired by the next digest: the node
keeps its recent pushes to each peer (time, what each covered) and on each digest
recomputes ``sent`` from the pushes younger than one interval only, so an older push the
digest does not show is presumed lost and resent, even while new writes keep coming.

Liveness at the first moment: the first frame from a peer never heard from (or silent
past its limit) is answered at once with a push and a digest, and a driver that sees a
connection come up calls :meth:`GossipNode.peer_connected`, which does the same; so a
write made before any connection existed reaches a peer about one interval after the
connection is up, whatever the probing backoff.

Hostile or broken peers (what one frame can do): whatever handling a frame raises is
contained, counted (``stats``: ``rejected_frames``, ``handler_errors``,
``unpersisted``, ``replica_closed``) and logged, rate-limited; the node goes on. A frame
whose version claims more of this replica's own updates than it made is not believed
(``false_claims``): the peer gets this replica's updates again. Membership is earned:
an address learned from a digest or from a frame's claimed sender counts as a member
(causal stability, log trimming, the members digest, leaving, the peer lists sent on)
only once a connection to it came up (:meth:`GossipNode.peer_connected`); until then it
gets digests only (a few per round, MAX_PROBES_PER_ROUND), and unanswered past
:attr:`GossipConfig.unverified_ttl` it is dropped. Learned addresses are bounded
(MAX_PEERS_LEARNED), configured ones are not.

Duplicates: two live processes under one replica name write under distinct writer ids
(``NAME~TOKEN``, :mod:`crdtmem.identity`). A node that hears, at another address, a live
writer id of its own name, or two live writer ids of one name at two addresses, logs a
WARNING once per (writer id, address) and counts ``stats["duplicate_ids"]``.

A two-node loop, no network::

    >>> from crdtmem import Replica
    >>> a = GossipNode(Replica("a"), "node-a", peers=["node-b"])
    >>> b = GossipNode(Replica("b"), "node-b", peers=["node-a"])
    >>> a.replica.counter("votes").increment()
    >>> frames = a.flush(now=0.0)
    >>> while frames:
    ...     out = []
    ...     for frame in frames:
    ...         out += (b if frame.peer == "node-b" else a).receive(frame.data, now=0.0)
    ...     frames = out
    >>> b.replica.counter("votes").value
    1
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any, Final, TypeVar, final

from crdtmem import codec
from crdtmem.causality import check_vector, dominates, join_into, join_vectors, meet_vectors
from crdtmem.codec import as_actor, as_bytes, as_int, as_list, as_str
from crdtmem.errors import DecodeError, ReplicaClosed
from crdtmem.identity import is_writer_id, name_of, token_of
from crdtmem.replica import Replica
from crdtmem.updatelog import MAX_ORIGINS

logger = logging.getLogger("crdtmem.gossip")
T = TypeVar("T")

PUSH: Final = 11
ACK: Final = 12
SYNC: Final = 13

# One frame's update payload. Larger syncs go as several chunks; a receiver buffers
# updates whose dependencies are in a later chunk.
DEFAULT_CHUNK_BYTES: Final = 1024 * 1024
# Chunks pushed to one peer per flush; the rest follow on the next flush or digest, so a
# node catching up a peer never stalls its own loop for long.
MAX_CHUNKS_PER_FLUSH: Final = 16
MAX_ADDRESS_LENGTH: Final = 256
# Addresses one digest may name, and learned addresses (from digests, or claimed by the
# senders of frames) a node holds at once: any frame can name made-up ones, and each
# costs a table entry and, once dialled, a socket. Configured peers (the ``peers``
# argument, :meth:`GossipNode.add_peer`) are not counted. Past it, the oldest address
# not answered yet makes room, or, when all have answered, the new one is refused
# (either way ``stats["peers_dropped"]``).
MAX_PEERS_LEARNED: Final = 1024
# Outbound connections (DEALER sockets) a driver keeps open at once, at most: each
# costs file descriptors and ZeroMQ sockets, both limited per process. Drivers lower it
# to what the process's limits allow (``transport._driver.socket_budget``) and close
# the least recently used idle one to dial another.
MAX_OPEN_PEERS: Final = 256
# Retirements one digest carries: a group's table only grows (every leave, silent
# retirement and superseded life adds one), so past this many a digest carries a
# rotating window of them (its own goodbye always): every entry reaches every peer within
# a few rounds, and no digest grows with the group's history.
MAX_RETIRED_PER_DIGEST: Final = 256
# Retirements of writer ids this replica has never seen that a node takes in: honest ones
# arrive before the writer's updates do, so they are kept, but a peer could otherwise fill
# the table with made-up ids. Past it such retirements are ignored (``ignored_retirements``).
MAX_RETIRED_UNKNOWN: Final = 8192
# Version-vector entries one frame may carry: no replica admits more writer ids than
# crdtmem.updatelog.MAX_ORIGINS, so a longer vector is made up.
MAX_FRAME_VECTOR: Final = MAX_ORIGINS
# Seconds a learned address may stay unanswered (no connection to it ever came up:
# :meth:`GossipNode.peer_connected`) before it is dropped. Until it answers it never
# counts as a member (causal stability, log trimming, the members digest, leaving), so
# one made-up address cannot switch bounded memory off; the drop only frees its entry.
# The TTL used is the largest of this, 4 x ``dead_after`` and 4 x the probing backoff
# cap (:attr:`GossipConfig.unverified_ttl`): an honest address is dialled within a
# probe or two, and answers on its first connection.
UNVERIFIED_PEER_TTL: Final = 30.0
# Unanswered addresses digested (so dialled) per round, in turn, besides the members'
# usual fanout: dialling costs a socket, and made-up addresses must not crowd the
# members' digests out of a round. As many frames per round may answer one at once (a
# joiner's first digest is answered at once; a flood of made-up senders is not).
MAX_PROBES_PER_ROUND: Final = 8
# Silent peers are re-probed at most this often (or every interval, if that is longer):
# a peer back from a partition waits no longer than this for its first digest.
MAX_BACKOFF_FLOOR: Final = 8.0
# How long a leaving node waits, by default, for its peers to acknowledge its updates.
LEAVE_TIMEOUT: Final = 5.0
# Rejected frames are logged at most once per sender per this many seconds (a flood of
# garbage must not flood the log); the next line says how many were not logged. So are
# contained errors, per kind of exception.
REJECT_LOG_SECONDS: Final = 10.0
# Senders (claimed addresses, or connections) whose rejected frames are rate-limited
# one by one; past it, the others share one line per REJECT_LOG_SECONDS. Bounds both
# the table and the log: at most MAX_LOGGED_SENDERS + 1 lines per REJECT_LOG_SECONDS.
MAX_LOGGED_SENDERS: Final = 64
# Kinds of exception rate-limited one by one (the rest share one entry), for the same
# reason.
MAX_LOGGED_ERRORS: Final = 32
# A rejection's reason and a sender are cut to this many characters in the log: both
# may come from the frame.
MAX_LOGGED_CHARS: Final = 200
# Recent pushes remembered per peer (a bound for a writer faster than the interval).
MAX_RECENT_PUSHES: Final = 4096


@dataclass(frozen=True, slots=True)
class GossipConfig:
    """The protocol's settings, with the one set of defaults every driver and the
    simulator start from (see :class:`GossipNode` for what each means).

    ``max_backoff=None`` (the default) caps the probing backoff at
    ``max(MAX_BACKOFF_FLOOR, interval)``, so any interval is valid.

    >>> GossipConfig(interval=0.1).backoff_cap
    8.0
    >>> GossipConfig(interval=0.0)
    Traceback (most recent call last):
    ...
    ValueError: interval, dead_after, chunk_bytes > 0 and max_backoff >= interval
    """

    interval: float = 0.5
    dead_after: float = 3.0
    max_backoff: float | None = None
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    learn_peers: bool = True
    compact: bool = True
    retire_after: float | None = None

    def __post_init__(self) -> None:
        if (
            self.interval <= 0
            or self.dead_after <= 0
            or self.backoff_cap < self.interval
            or self.chunk_bytes < 1
        ):
            raise ValueError("interval, dead_after, chunk_bytes > 0 and max_backoff >= interval")
        if self.retire_after is not None and self.retire_after < self.dead_after:
            raise ValueError("retire_after must be at least dead_after")

    @property
    def unverified_ttl(self) -> float:
        """Seconds a learned address may stay unanswered before it is dropped (see
        UNVERIFIED_PEER_TTL): the largest of that, 4 x ``dead_after`` and 4 x
        :attr:`backoff_cap`."""
        return max(UNVERIFIED_PEER_TTL, 4 * self.dead_after, 4 * self.backoff_cap)

    @property
    def backoff_cap(self) -> float:
        """The longest wait between probes of a silent peer, in seconds."""
        if self.max_backoff is None:
            return max(MAX_BACKOFF_FLOOR, self.interval)
        return self.max_backoff


DEFAULTS: Final = GossipConfig()


def check_retire(own: str, replica_id: str) -> str:
    """Validate an argument of :meth:`GossipNode.retire` for a node whose replica
    writes as ``own`` (a writer id): the one check every driver runs before it queues a
    retirement. The argument is a replica name (every life of it) or a writer id (one
    life).

    Raises:
        ValueError: neither a name nor a writer id, or this node's own replica.
    """
    if type(replica_id) is not str or not is_writer_id(replica_id):
        raise ValueError(
            "retire takes a replica id (1 to 64 characters) or a writer id (NAME~TOKEN), "
            f"got {replica_id!r}"
        )
    if replica_id in (own, name_of(own)):
        raise ValueError("a node cannot retire its own replica")
    return replica_id


def check_leave_timeout(timeout: float) -> float:
    """Validate the ``timeout`` of :meth:`GossipNode.begin_leave` (drivers check it in
    the caller's thread, before the loop begins the leave)."""
    if not timeout >= 0:
        raise ValueError("the leave timeout is a number of seconds >= 0")
    return timeout


@dataclass(frozen=True, slots=True)
class Frame:
    """Bytes for the driver to deliver to ``peer`` (a transport address)."""

    peer: str
    data: bytes


@dataclass(slots=True)
class PeerState:
    """What this node knows about one peer."""

    address: str
    known: dict[str, int] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)
    replica_id: str | None = None
    peers: frozenset[str] = frozenset()  # the peer's own peers, from its last digest
    told: frozenset[str] | None = None  # the peer list we last sent it
    digests: int = 0  # digests sent to it
    pushed_at: float = float("-inf")  # when we last pushed to it
    # Pushes of the last interval or so, (time, what it covered): ``sent`` is their join,
    # recomputed on each digest from the ones younger than one interval.
    recent: deque[tuple[float, dict[str, int]]] = field(default_factory=deque)
    last_heard: float | None = None
    next_probe: float = 0.0
    backoff: float = 0.0
    # From its last digest: its version, and the digest of the members it counted.
    report: dict[str, int] | None = None
    report_members: bytes = b""
    # Its latest report this node had caught up with while they agreed on the members.
    complete: dict[str, int] | None = None
    # Retired replicas as its last digest had them: their bars.
    retired: dict[str, int] = field(default_factory=dict)

    # Configured (the node's ``peers``, :meth:`GossipNode.add_peer`): trusted, kept,
    # counted as a member from the start. Otherwise learned, from a digest or a frame's
    # claimed sender: counted only once verified, i.e. once a connection to the address
    # came up (:meth:`GossipNode.peer_connected`); dropped if that never happens.
    configured: bool = False
    verified: bool = False
    # When a tick first saw it unverified (the unanswered-address clock).
    unverified_since: float | None = None

    def alive(self, now: float, dead_after: float) -> bool:
        return self.last_heard is not None and now - self.last_heard <= dead_after

    @property
    def counts(self) -> bool:
        """Whether it is a member: configured, or a learned address that answered."""
        return self.configured or self.verified


@final
class GossipNode:
    """Gossip protocol state for one replica at transport address ``address``.

    Args:
        replica: the replica to keep in sync.
        address: this node's own address, as peers reach it.
        peers: addresses to gossip with; more are learned from digests.
        interval: seconds between anti-entropy digests.
        dead_after: silence, in seconds, after which a peer counts as down; it is then
            probed with exponential backoff up to ``max_backoff`` seconds (``None``:
            ``max(MAX_BACKOFF_FLOOR, interval)``).
        chunk_bytes: payload budget per push frame.
        learn_peers: add the peers named in received digests (off: a fixed topology).
        compact: trim the replica's log of updates every peer has acknowledged, and
            collect deleted list elements once causally stable.
        retire_after: retire a peer silent for this many seconds (``None``, the
            default: only :meth:`retire` and :meth:`leave` do). For groups of ephemeral
            agents that may crash without leaving; a peer that was only partitioned for
            that long is refused when it comes back, and must rejoin under a new id.

    The defaults are those of :class:`GossipConfig`; :meth:`from_config` builds a node
    from one.
    """

    def __init__(
        self,
        replica: Replica,
        address: str,
        *,
        peers: Iterable[str] = (),
        interval: float = DEFAULTS.interval,
        dead_after: float = DEFAULTS.dead_after,
        max_backoff: float | None = DEFAULTS.max_backoff,
        chunk_bytes: int = DEFAULTS.chunk_bytes,
        learn_peers: bool = DEFAULTS.learn_peers,
        compact: bool = DEFAULTS.compact,
        retire_after: float | None = DEFAULTS.retire_after,
    ) -> None:
        self.config = GossipConfig(
            interval=interval,
            dead_after=dead_after,
            max_backoff=max_backoff,
            chunk_bytes=chunk_bytes,
            learn_peers=learn_peers,
            compact=compact,
            retire_after=retire_after,
        )
        self.replica = replica
        self.address = address
        self.interval = interval
        self.dead_after = dead_after
        self.max_backoff = self.config.backoff_cap
        self.chunk_bytes = chunk_bytes
        self.learn_peers = learn_peers
        self.compact = compact
        self.retire_after = retire_after
        self.peers: dict[str, PeerState] = {}
        self.retired: dict[str, int] = {}  # replica id -> last update accepted of it
        self.left = False
        # Leaving (begin_leave): the deadline to say goodbye by, and whether every peer
        # had acknowledged this replica's updates when it did (set by leave()).
        self._leave_by: float | None = None
        self.left_spread: bool | None = None
        self._warned: set[str] = set()
        # Duplicate writer ids already warned about: (writer id, address).
        self._duplicates: set[tuple[str, str]] = set()
        # Rejected-frame logging, per sender: (when last logged, frames not logged since);
        # at most MAX_LOGGED_SENDERS entries, then one shared entry (_OTHER_SENDERS).
        self._rejects: dict[str, tuple[float, int]] = {}
        # Contained errors, per kind: (when last logged, not logged since).
        self._errors: dict[str, tuple[float, int]] = {}
        # Learned (not configured) addresses among the peers: bounded by
        # MAX_PEERS_LEARNED; those not answered yet, oldest first (the first evicted).
        self._learned: set[str] = set()
        self._unanswered: dict[str, None] = {}
        self._probe_round = 0
        # A lower bound of this replica's own update count (see _check_claims).
        self._own_made = 0
        # Answers to unanswered addresses left this round (see _answer).
        self._answers_left = MAX_PROBES_PER_ROUND
        self._warned_closed = False
        # Addresses of retired replicas: not learned again from peer lists (a peer that
        # has not heard of the retirement yet still names them), only by direct contact.
        self._gone_addresses: set[str] = set()
        self.next_sync = 0.0
        self._round = 0
        self.stats = {
            "frames_in": 0,
            "frames_out": 0,
            "bytes_in": 0,
            "bytes_out": 0,
            "rejected_frames": 0,
            "refused_retired": 0,
            "pushes": 0,
            "syncs": 0,
            "collected": 0,
            "replica_closed": 0,
            "duplicate_ids": 0,
            "handler_errors": 0,
            "false_claims": 0,
            "peers_dropped": 0,
            "unpersisted": 0,
            "maintenance_errors": 0,
            "ignored_retirements": 0,
            "impersonations": 0,
        }
        for peer in peers:
            self.add_peer(peer)
        # Earlier lives of this replica (a durable one whose log could not prove it held
        # all of them) are gone: the group stops waiting for them.
        self._retire_superseded(replica.predecessors())

    @classmethod
    def from_config(
        cls, replica: Replica, address: str, config: GossipConfig, peers: Iterable[str] = ()
    ) -> GossipNode:
        """A node with the settings of ``config`` (what the drivers and the simulator
        use, so that the defaults live in :class:`GossipConfig` only)."""
        settings = {f.name: getattr(config, f.name) for f in fields(config)}
        return cls(replica, address, peers=peers, **settings)

    def _own_writer(self) -> str:
        """The writer id of this node's replica: the id its frames carry, and its key
        in version vectors (its name is ``replica.replica_id``)."""
        return self.replica.writer_id

    def peer_connected(self, address: str, now: float) -> list[Frame]:
        """A driver saw a connection to ``address`` come up: push what the peer is not
        known to have and send it a digest now, instead of waiting for the next round
        (or the probing backoff) while a write made before the connection waits.

        It is also what makes a learned address a member: it answered (see
        UNVERIFIED_PEER_TTL)."""
        peer = self._learn(address)
        if peer is None:
            return []
        peer.verified = True
        self._unanswered.pop(address, None)
        if self.left:
            return []
        # What was pushed before this connection was up was most likely dropped (ZeroMQ
        # drops frames for a peer with no connection): push from what it acknowledged.
        peer.sent = {}
        peer.recent.clear()
        return [*self._push(peer, now), self._frame(peer, SYNC)]

    def add_peer(self, address: str) -> PeerState | None:
        """Start gossiping with ``address``, a configured peer: trusted, counted as a
        member from the start, and never dropped (no-op for this node's own address; a
        learned one becomes configured)."""
        if address == self.address or not address:
            return None
        state = self.peers.get(address)
        if state is None:
            state = self.peers[address] = PeerState(address)
        state.configured = True
        self._learned.discard(address)
        self._unanswered.pop(address, None)
        return state

    def _learn(self, address: str) -> PeerState | None:
        """The peer at ``address``, added as learned (unanswered) if new.

        The table of learned addresses holds MAX_PEERS_LEARNED: when it is full, the
        oldest address that has not answered yet makes room (an honest one answers on
        its first connection, within a round trip, and is then kept); when every one
        has answered, the new address is refused (``None``). Either way counted in
        ``stats["peers_dropped"]``."""
        if address == self.address or not address:
            return None
        state = self.peers.get(address)
        if state is not None:
            return state
        if len(self._learned) >= MAX_PEERS_LEARNED:
            self.stats["peers_dropped"] += 1
            if not self._unanswered:
                return None  # refused: every learned address answered
            self.remove_peer(next(iter(self._unanswered)))
        self._learned.add(address)
        self._unanswered[address] = None
        state = self.peers[address] = PeerState(address)
        return state

    def remove_peer(self, address: str) -> None:
        """Stop gossiping with ``address``."""
        self.peers.pop(address, None)
        self._learned.discard(address)
        self._unanswered.pop(address, None)

    def retire(self, replica_id: str) -> None:
        """Declare that replica ``replica_id`` left the group for good: a name retires
        every life of it this node knows of (version keys and peers), a writer id
        (``NAME~TOKEN``) that one life.

        It stops counting as a member (so it no longer holds back causal stability),
        its addresses are dropped, and its frames are refused from now on, here and, as
        the retirement spreads with digests, everywhere. Retire a replica only once its
        updates have spread (every live member's version covers its own entry): updates
        it made that reached no one are lost, and one that reaches a member after lists
        were collected may not find what it refers to. A retired replica that wants
        back must start over under a new replica id.

        Raises:
            ValueError: ``replica_id`` is not a replica id, or is this node's own
                (:func:`check_retire`).
        """
        target = check_retire(self._own_writer(), replica_id)
        for writer in self._lives_of(target):
            self._retire(writer, 0)

    def _lives_of(self, target: str) -> list[str]:
        """``target`` if it is a writer id; for a name, every life of it this node
        knows of (the bare name too, for a life written before incarnations existed),
        or the name itself when none is known (retired before it is ever heard of)."""
        if token_of(target) is not None:
            return [target]
        known = set(self.replica.version()) | {p.replica_id for p in self.peers.values()}
        lives = {w for w in known if w and name_of(w) == target} - {self._own_writer()}
        return sorted(lives) or [target]

    def _retire_superseded(self, lives: Iterable[str]) -> None:
        """Retire earlier lives of this replica, or of a peer, that a newer life has
        replaced (their process is gone: only what they spread survives). The bar each
        gets rises to the most any member applied, so nothing a member holds is lost."""
        for writer in lives:
            if writer not in self.retired and writer != self._own_writer():
                logger.info("%s: retiring %r, superseded by a newer life", self.address, writer)
                self._retire(writer, 0)

    def spread(self) -> bool:
        """Whether every peer has acknowledged all of this replica's own updates (what
        a node waits for before it leaves; a peer never heard from has not). A learned
        peer that has not answered a dial yet but has sent frames counts too: it is a
        live replica that may hold nothing of ours yet."""
        own = self._own_writer()
        count = self.replica.version().get(own, 0)
        return all(
            p.known.get(own, 0) >= count
            for p in self.peers.values()
            if p.counts or p.last_heard is not None
        )

    # --- leaving: the policy every driver and the simulator follow --------------------
    #
    #   begin_leave(now, timeout)   keep gossiping; next_deadline() includes the deadline
    #   leave_done(now)             after every event: true once spread() or past it
    #   leave()                     the goodbye digests; then the driver stops

    def begin_leave(self, now: float, timeout: float = LEAVE_TIMEOUT) -> list[Frame]:
        """Start leaving the group for good: the node keeps gossiping until every peer
        has acknowledged this replica's updates, or ``timeout`` seconds pass, whichever
        comes first (:meth:`leave_done`); then the driver sends :meth:`leave`'s goodbye
        and stops. Returns the pushes of what is still pending. A second call keeps the
        earlier deadline.

        Raises:
            ValueError: ``timeout`` is negative.
        """
        deadline = now + check_leave_timeout(timeout)
        if self._leave_by is None or deadline < self._leave_by:
            self._leave_by = deadline
        return self.flush(now)

    @property
    def leaving(self) -> bool:
        """Whether :meth:`begin_leave` was called and the goodbye not yet said."""
        return self._leave_by is not None and not self.left

    def leave_done(self, now: float) -> bool:
        """Whether a leaving node should say goodbye now: every peer acknowledged its
        updates (:meth:`spread`), or the leave deadline has passed. Drivers ask after
        each turn of their loop; the deadline is in :meth:`next_deadline`, so no driver
        needs to poll for it."""
        if self._leave_by is None or self.left:
            return False
        return now >= self._leave_by or self.spread()

    def leave(self) -> list[Frame]:
        """Say goodbye: digests to every peer that retire this replica at its current
        version, so the group stops waiting for it (see :meth:`retire`). Call it when the
        agent is done, ideally once :meth:`spread` is true (:meth:`begin_leave` and
        :meth:`leave_done` wait for that, bounded); :attr:`left_spread` records whether it
        was. Afterwards the group refuses this replica's frames, so stop gossiping; the
        replica refuses writes from now on (:class:`~crdtmem.ReplicaLeft`)."""
        own = self._own_writer()
        # First, so that no write lands between reading the bar and saying goodbye: the
        # group would refuse it, and the agent would never know.
        self.replica.mark_left()
        self.left_spread = self.spread()
        self.left = True
        self.retired[own] = self.replica.version().get(own, 0)
        return [self._frame(peer, SYNC) for peer in self.peers.values()]

    def _retire(self, replica_id: str, bar: int) -> None:
        if replica_id == self._own_writer():
            raise ValueError("a node cannot retire its own replica")
        # The bar: the highest any member had applied when it learned of the retirement.
        self.retired[replica_id] = self.replica.retire(replica_id, bar)
        for address in [a for a, p in self.peers.items() if p.replica_id == replica_id]:
            self.remove_peer(address)
            self._gone_addresses.add(address)

    def _retire_silent(self, now: float, retire_after: float) -> None:
        for peer in list(self.peers.values()):
            heard = peer.last_heard
            if peer.replica_id and heard is not None and now - heard > retire_after:
                logger.warning(
                    "%s: retiring %r, silent for %.0f s", self.address, peer.replica_id, now - heard
                )
                self._retire(peer.replica_id, 0)

    def _forget_retired(self, stable: dict[str, int]) -> None:
        """Drop a retired replica from version vectors once every member agrees on its
        bar and has applied everything up to it (then no one needs it from anyone)."""
        forgotten = self.replica.retired()
        for replica_id, bar in self.retired.items():
            if replica_id == self._own_writer():
                continue  # this node left: nothing to forget
            if forgotten.get(replica_id, (0, False))[1] or stable.get(replica_id, 0) < bar:
                continue
            if all(peer.retired.get(replica_id) == bar for peer in self._members_now()):
                self.replica.forget(replica_id)

    def _members_now(self) -> list[PeerState]:
        """The peers that count as members (configured, or learned and answered)."""
        return [peer for peer in self.peers.values() if peer.counts]

    def _drop_unanswered(self, now: float) -> None:
        """Drop learned addresses unanswered for longer than the TTL (they never counted
        as members; this frees their entry in the bounded table)."""
        ttl = self.config.unverified_ttl
        dropped = 0
        # (in case a caller edited `peers` directly)
        self._learned &= self.peers.keys()
        self._unanswered = {a: None for a in self._unanswered if a in self.peers}
        for address in list(self._unanswered):
            peer = self.peers[address]
            if peer.unverified_since is None:
                peer.unverified_since = now
            elif now - peer.unverified_since > ttl:
                self.remove_peer(address)
                dropped += 1
        if dropped:
            self.stats["peers_dropped"] += dropped
            logger.info(
                "%s: dropped %d learned address(es) that never answered in %.0f s",
                self.address,
                dropped,
                ttl,
            )

    # --- outgoing ---------------------------------------------------------------------

    def _frame(self, peer: PeerState, kind: int, payload: bytes | None = None) -> Frame:
        body: list[Any] = [kind, self.address, self._own_writer(), self.replica.version()]
        if kind == SYNC:
            # The peer list rides along only when it changed for this peer: at 64 nodes
            # it would be most of every digest.
            # It is resent every 8th digest too, in case the one that carried it was lost.
            # Only members: an address that never answered is not spread further.
            current = frozenset(a for a, p in self.peers.items() if p.counts and a != peer.address)
            fresh = current != peer.told or peer.digests % 8 == 0
            retired = [[r, bar] for r, bar in sorted(self.retired.items())]
            forgotten = sorted(r for r, (_, gone) in self.replica.retired().items() if gone)
            if len(retired) > MAX_RETIRED_PER_DIGEST:
                retired = self._window(retired, peer.digests)
            if len(forgotten) > MAX_RETIRED_PER_DIGEST:
                forgotten = _rotating(forgotten, peer.digests, MAX_RETIRED_PER_DIGEST)
            body.append([sorted(current) if fresh else None, self._members(), retired, forgotten])
            peer.told = current
            peer.digests += 1
        else:
            body.append(payload)
        data = codec.pack(body)
        self.stats["frames_out"] += 1
        self.stats["bytes_out"] += len(data)
        return Frame(peer.address, data)

    def _of_ours(self, version: dict[str, int]) -> dict[str, int]:
        """The entries of a peer's ``version`` for writers this replica has: what the
        peer has of them is all that decides what to send it, and a peer's made-up
        writers then cost no memory here."""
        ours = self.replica.version()
        if len(version) <= len(ours) and version.keys() <= ours.keys():
            return version
        return {k: v for k, v in version.items() if k in ours}

    def _window(self, retired: list[list[Any]], turn: int) -> list[list[Any]]:
        """A rotating window of ``retired`` that always holds this node's own entry (its
        goodbye, while leaving)."""
        own = self._own_writer()
        mine = [entry for entry in retired if entry[0] == own]
        others = [entry for entry in retired if entry[0] != own]
        return mine + _rotating(others, turn, MAX_RETIRED_PER_DIGEST - len(mine))

    def _push(self, peer: PeerState, now: float, skip: dict[str, int] | None = None) -> list[Frame]:
        frames: list[Frame] = []
        if not peer.counts:
            # Not yet answered: a digest dials it; pushes wait for the connection
            # (peer_connected), so a made-up address costs no state chunks.
            return frames
        ours = self.replica.version()
        for _ in range(MAX_CHUNKS_PER_FLUSH):
            base = join_vectors(peer.known, peer.sent, skip or {})
            if dominates(base, ours):
                break
            message, covered = self.replica.delta_chunk(base, self.chunk_bytes)
            join_into(peer.sent, covered)
            peer.recent.append((now, dict(covered)))
            if len(peer.recent) > MAX_RECENT_PUSHES:
                peer.recent.popleft()  # forgotten: presumed lost at the next digest
            peer.pushed_at = now
            self.stats["pushes"] += 1
            frames.append(self._frame(peer, PUSH, message))
        return frames

    def flush(self, now: float) -> list[Frame]:
        """Frames pushing what each live (or never yet heard) peer lacks; call after
        local writes."""
        frames: list[Frame] = []
        for peer in self.peers.values():
            if peer.last_heard is None or peer.alive(now, self._silence_limit()):
                frames += self._push(peer, now)
        return frames

    def _relay(self, now: float, sender: PeerState) -> list[Frame]:
        """After a push: forward what is new to the peers that do not hear from its origin
        directly (by their digests' peer lists; a peer whose list is not known yet is
        left to anti-entropy). Anything lost that way is repaired by the next digest."""
        ours = self.replica.version()
        addresses = {
            p.replica_id: p.address for p in self.peers.values() if p.replica_id and p.counts
        }
        frames: list[Frame] = []
        for peer in self.peers.values():
            limit = self._silence_limit()
            if peer is sender or not peer.peers or not peer.counts or not peer.alive(now, limit):
                continue
            skip = {
                origin: count
                for origin, count in ours.items()
                if origin != self._own_writer() and addresses.get(origin) in peer.peers
            }
            frames += self._push(peer, now, skip)
        return frames

    def next_deadline(self) -> float:
        """When :meth:`tick` next has work, or a leave's deadline falls: the driver's
        timer."""
        if self._leave_by is not None and not self.left:
            return min(self.next_sync, self._leave_by)
        return self.next_sync

    def _fanout(self) -> int:
        """Members digested per round: all of them up to 8, then about sqrt(n), in
        turn (unanswered addresses come on top, MAX_PROBES_PER_ROUND at most)."""
        members = len(self.peers) - len(self._unanswered)
        return max(8, math.isqrt(members - 1) + 1) if members > 0 else 0

    def _silence_limit(self) -> float:
        """How long a live peer may stay silent: each member hears from us every
        ``members / fanout`` rounds, and we from it."""
        members = len(self.peers) - len(self._unanswered)
        rounds = -(-members // max(1, self._fanout()))
        return max(self.dead_after, self.interval * rounds * 3)

    def stable_version(self) -> dict[str, int]:
        """What every known peer has acknowledged (pointwise minimum), or nothing when
        there is no peer.

        A peer that has not answered yet holds trimming back, so that a slow start does
        not cost it a full state; a peer gone for good should be removed
        (:meth:`remove_peer`), or it holds the log forever."""
        members = self._members_now()
        if not members:
            return {}
        return meet_vectors(self.replica.version(), [p.known for p in members])

    def _members(self) -> bytes:
        """A digest of the replica ids this node counts as members: its own and its
        peers'. Reports made under another membership do not count towards stability."""
        ids = {self._own_writer()}
        ids.update(p.replica_id or f"?{p.address}" for p in self._members_now())
        return hashlib.blake2b("\0".join(sorted(ids)).encode(), digest_size=8).digest()

    def causally_stable(self, now: float | None = None) -> dict[str, int] | None:
        """The causally stable version, or ``None`` while a member has not reported.

        Stable means every member has applied it, and this node has applied everything
        any member made before applying it; so no update still to come can refer to a
        list element it deletes. Members are this node and its peers, and each peer's
        report must be its latest digest that this node has caught up with, sent while
        the two agreed on the members (a newcomer's state then came from a member that
        already counted it). A silent member holds stability back until retired. So does
        a learned peer that is heard from but has not answered a dial yet (it may hold
        inserts next to what this node deletes): at ``now``, while heard within the
        silence limit; without ``now``, once heard at all.
        """
        ours = self.replica.version()
        # What this replica has, counting forgotten replicas as applied up to their bars.
        have = {r: bar for r, (bar, gone) in self.replica.retired().items() if gone} | ours
        members = self._members()
        reports: list[dict[str, int]] = []
        # A learned peer that sends frames but whose address has not answered a dial yet
        # is a live replica that may hold updates referring to list elements: while it is
        # heard from (within the silence limit; ever, without ``now``), nothing is stable.
        # One frame from a made-up address holds collection back that long only.
        limit = self._silence_limit()
        for peer in self.peers.values():
            heard = not peer.counts and peer.last_heard is not None
            if heard and (now is None or peer.alive(now, limit)):
                return None
        for peer in self._members_now():
            report = peer.report
            if report is not None and peer.report_members == members and dominates(have, report):
                peer.complete = report
            if peer.complete is None:
                return None
            reports.append(peer.complete)
        return meet_vectors(ours, reports)

    def tick(self, now: float) -> list[Frame]:
        """Periodic anti-entropy: a digest to the next peers in turn, backing off from
        silent ones; and trimming the log of what every peer has acknowledged."""
        if now < self.next_sync:
            return []
        self.next_sync = now + self.interval
        self._drop_unanswered(now)
        self._answers_left = MAX_PROBES_PER_ROUND
        try:
            if self.retire_after is not None:
                self._retire_silent(now, self.retire_after)
            if self.compact:
                self.replica.compact_log(self.stable_version())
                stable = self.causally_stable(now)
                if stable is not None:
                    self.stats["collected"] += self.replica.collect_garbage(stable)
                    self._forget_retired(stable)
        except ReplicaClosed as exc:  # digests still go out: they only read the replica
            self._replica_closed(exc)
        except Exception as exc:
            # Trimming and collection only save memory; they can fail on a full disk
            # (retirements and forgetting are stored). Counted and logged, rate-limited,
            # and tried again next round; digests still go out.
            self.stats["maintenance_errors"] += 1
            self._log_error(exc, now, "maintenance_errors", "in the periodic maintenance")
        frames: list[Frame] = []
        chosen: list[str] = []
        order = sorted(a for a, p in self.peers.items() if p.counts)
        if order:
            start = self._round % len(order)
            chosen = (order[start:] + order[:start])[: self._fanout()]
            self._round += len(chosen)
        # Unanswered addresses, a few per round in turn: the digest dials them.
        waiting = list(self._unanswered)
        if waiting:
            start = self._probe_round % len(waiting)
            probes = (waiting[start:] + waiting[:start])[:MAX_PROBES_PER_ROUND]
            self._probe_round += len(probes)
            chosen += probes
        limit = self._silence_limit()
        for address in chosen:
            peer = self.peers[address]
            if peer.alive(now, limit):
                peer.backoff = 0.0
            elif now < peer.next_probe:
                continue
            else:
                peer.backoff = min(self.max_backoff, max(self.interval, peer.backoff * 2))
                peer.next_probe = now + peer.backoff
            self.stats["syncs"] += 1
            frames.append(self._frame(peer, SYNC))
        return frames

    # --- incoming ---------------------------------------------------------------------

    def receive_message(
        self, parts: list[bytes], now: float, *, authenticated: str | None = None
    ) -> list[Frame]:
        """Handle one message of a ROUTER socket (the sender's routing identity, then
        the frame); anything else is dropped, counted and logged (rate-limited per
        connection). The routing identity names the connection in the log only: it is
        how undecodable frames are told apart. ``authenticated``: as in :meth:`receive`."""
        if len(parts) != 2:
            self.stats["frames_in"] += 1
            self.stats["rejected_frames"] += 1
            where = _connection_name(parts[0]) if parts else "?"
            self._log_rejected(where, f"dropped a frame of {len(parts)} parts", now)
            return []
        return self.receive(parts[1], now, connection=parts[0], authenticated=authenticated)

    def receive(
        self,
        data: bytes,
        now: float,
        *,
        connection: bytes | None = None,
        authenticated: str | None = None,
    ) -> list[Frame]:
        """Handle one frame from a peer; return the frames to send in answer.

        A node never dies of its input: whatever handling one frame raises is
        contained, counted and logged (rate-limited), and the node goes on. Garbage is
        rejected (``stats["rejected_frames"]``); a replica closed under a running node
        (:class:`~crdtmem.ReplicaClosed`) is counted in ``stats["replica_closed"]``
        (logged once): the frame is not applied nor acknowledged; updates that could not
        be stored (:class:`~crdtmem.StorageError` or ``OSError`` from the merge, e.g. a
        full disk) in ``stats["unpersisted"]``: the node acknowledges only what it
        holds, so the peer resends the rest later; any other exception in
        ``stats["handler_errors"]``, logged with its traceback the first time per kind.

        ``connection``: the transport's name for the connection the frame came on (a
        ROUTER routing identity), for the log only: rejected frames that do not say who
        sent them are rate-limited per connection.

        ``authenticated``: the replica name the transport proved the connection speaks
        for (a CURVE key's name), or ``None`` on a transport without authentication. A
        frame whose sender replica id is of another name is rejected before anything
        in it is applied, counted (``stats["impersonations"]``) and logged
        (rate-limited): a key speaks only for its own replica. (Updates of other
        origins relayed inside a push are not checked here: see docs/security.md.)
        """
        self.stats["frames_in"] += 1
        self.stats["bytes_in"] += len(data)
        try:
            return self._receive(data, now, connection, authenticated)
        except ReplicaClosed as exc:
            self._replica_closed(exc)
        except Exception as exc:  # contained: one frame must not stop a node
            self.stats["handler_errors"] += 1
            self._log_error(exc, now, "handler_errors")
        return []

    def _replica_closed(self, exc: ReplicaClosed) -> None:
        self.stats["replica_closed"] += 1
        if not self._warned_closed:  # once: every frame from now on would say it again
            self._warned_closed = True
            logger.error(
                "%s: %s; gossip goes on without applying anything (counted in "
                "stats['replica_closed'])",
                self.address,
                exc,
            )

    def _receive(
        self, data: bytes, now: float, connection: bytes | None, authenticated: str | None
    ) -> list[Frame]:
        try:
            kind, sender, replica_id, version, extra = _decode_frame(data)
            if authenticated is not None and name_of(replica_id) != authenticated:
                self.stats["impersonations"] += 1
                self._log_rejected(
                    f"connection authenticated as {authenticated!r}",
                    f"it claims to be replica {replica_id!r}: a key speaks only for its own",
                    now,
                    what="refused an impersonation",
                )
                return []
            if sender == self.address:
                raise DecodeError("frame claims to come from this node's own address")
            if kind == PUSH:
                self._merge(as_bytes(extra, "push payload"), now)
        except DecodeError as exc:
            self.stats["rejected_frames"] += 1
            where = _connection_name(connection) if connection is not None else None
            self._log_rejected(where or _claimed_sender(data), exc, now, data=data)
            return []
        if replica_id in self.retired:
            self.stats["refused_retired"] += 1
            if replica_id not in self._warned:  # once: it may keep trying every interval
                self._warned.add(replica_id)
                logger.warning(
                    "%s: refusing frames of retired replica %r", self.address, replica_id
                )
            return []
        self._gone_addresses.discard(sender)  # a new replica at a retired one's address
        peer = self._learn(sender)  # only a sender whose frame was valid
        if peer is None:
            return []
        version = self._check_claims(peer, version, now)
        # First contact, or back after a silence: answer at once (push and digest), so
        # what was written before the connection existed does not wait for a round.
        first = not peer.alive(now, self._silence_limit())
        if peer.replica_id is not None and peer.replica_id != replica_id:
            # A new life at the same address: whatever it had is gone, and so is the old
            # life's process (an address is bound by one process at a time).
            if name_of(peer.replica_id) == name_of(replica_id):
                configured, verified = peer.configured, peer.verified
                self._retire_superseded([peer.replica_id])
                self._gone_addresses.discard(sender)  # the address is the new life's
                peer = self.add_peer(sender) if configured else self._learn(sender)
                if peer is None:
                    return []
                if verified:  # the address answered; only the process behind it changed
                    peer.verified = True
                    self._unanswered.pop(sender, None)
            peer.known, peer.sent = {}, {}
            peer.recent.clear()
            peer.report, peer.complete = None, None
            first = True
        peer.replica_id = replica_id
        peer.last_heard = now
        peer.backoff = 0.0
        self._check_duplicate(peer, replica_id, now)
        if kind == SYNC:
            addresses, members, retired, forgotten = extra
            ours = self.replica.version()
            for gone, bar in retired.items():
                if gone == self._own_writer():
                    if not self.left:
                        logger.error("%s: this replica was retired by the group", self.address)
                elif self.retired.get(gone, -1) < bar:
                    if (
                        gone not in self.retired
                        and gone not in ours
                        and len(self.retired) >= MAX_RETIRED_UNKNOWN
                    ):
                        self.stats["ignored_retirements"] += 1
                        continue
                    self._retire(gone, bar)
            if replica_id in retired:  # the sender said goodbye (leave)
                return []
            # Digests carry a window of a long table: what a peer reported adds up. Only
            # retirements this node took in are kept (bars only rise, so a join is exact).
            for gone, bar in retired.items():
                if gone in self.retired and peer.retired.get(gone, -1) < bar:
                    peer.retired[gone] = bar
            # A replica it forgot it had applied up to the bar: count that in its report.
            report = dict(version)
            for gone in forgotten:
                report.setdefault(gone, peer.retired.get(gone, retired.get(gone, 0)))
            peer.report, peer.report_members = report, members
            if addresses is not None:
                peer.peers = frozenset(addresses)
                if self.learn_peers:
                    for address in addresses:
                        if address not in self._gone_addresses:
                            self._learn(address)
            # What a peer acknowledged it keeps (a durable replica restarts with it; one
            # that lost its memory comes back under a new replica id, handled above),
            # so a digest only adds to `known`: one overtaken by a newer ACK must not
            # drag it back below what the log was trimmed to. Pushes the digest does not
            # show are presumed lost once an interval old, and resent.
            join_into(peer.known, self._of_ours(version))
            self._forget_old_pushes(peer, now)
            frames = self._push(peer, now)
            if first or not dominates(self.replica.version(), version):
                frames.append(self._frame(peer, SYNC))
            return self._answer(peer, frames)
        join_into(peer.known, self._of_ours(version))  # a PUSH or ACK: the sender has this much
        frames = []
        if kind == PUSH:
            frames = [self._frame(peer, ACK), *self._relay(now, peer)]
        if first:
            frames += [*self._push(peer, now), self._frame(peer, SYNC)]
        return self._answer(peer, frames)

    def _answer(self, peer: PeerState, frames: list[Frame]) -> list[Frame]:
        """``frames``, unless they answer an address that has not answered yet and this
        round's MAX_PROBES_PER_ROUND such answers are spent: each dials the address,
        and frames may name a new made-up sender each. The round's probes reach it."""
        if peer.counts or not any(f.peer == peer.address for f in frames):
            return frames
        if self._answers_left <= 0:
            return [f for f in frames if f.peer != peer.address]
        self._answers_left -= 1
        return frames

    def _merge(self, payload: bytes, now: float) -> None:
        """Merge a push; what could not be stored is counted and logged, not raised: the
        replica applied only what it stored, so the ACK and the next digest show what
        it still lacks, and the peer resends that later (when space has returned)."""
        try:
            self.replica.merge(payload)
        except OSError as exc:  # StorageError too; e.g. a full disk
            self.stats["unpersisted"] += 1
            self.stats["handler_errors"] += 1
            self._log_error(exc, now, "unpersisted")

    def _check_claims(self, peer: PeerState, version: dict[str, int], now: float) -> dict[str, int]:
        """Claims are not facts: a frame whose version claims more of this replica's
        own updates than it made lies (or its sender was fed a lie). The claim is
        ignored, counted (``stats["false_claims"]``), and what the peer has of this
        replica is taken as unknown: the next push resends this replica's own updates
        from the start of its log (or a full state), which the peer applies again."""
        own = self._own_writer()
        claimed = version.get(own, 0)
        # This replica's own count only grows: the last one read bounds it from below,
        # so the version is read (a copy) only when a claim passes that.
        if claimed <= self._own_made:
            return version
        self._own_made = self.replica.version().get(own, 0)
        if claimed <= self._own_made:
            return version
        self.stats["false_claims"] += 1
        self._log_rejected(
            peer.address,
            f"it claims {claimed} updates of this replica, more than it made; resending",
            now,
            what="ignored a false claim",
        )
        peer.known.pop(own, None)
        peer.sent.pop(own, None)
        for _, covered in peer.recent:
            covered.pop(own, None)
        return {origin: count for origin, count in version.items() if origin != own}

    def _forget_old_pushes(self, peer: PeerState, now: float) -> None:
        """On a digest (``peer.known`` already joined with it): a push older than one
        interval that the peer does not show is presumed lost. What was pushed is a
        version vector (everything up to), so a younger push of the same origin does
        not cover the gap: ``sent`` forgets those origins entirely (the next push
        resends from what the peer has) and keeps the rest of the younger pushes."""
        lost: set[str] = set()
        while peer.recent and now - peer.recent[0][0] > self.interval:
            _, covered = peer.recent.popleft()
            lost.update(o for o, n in covered.items() if n > peer.known.get(o, 0))
        peer.sent = {}
        for _, covered in peer.recent:
            for origin in lost.intersection(covered):
                del covered[origin]
            join_into(peer.sent, covered)

    def _check_duplicate(self, peer: PeerState, writer: str, now: float) -> None:
        """Warn (once per writer id and address) when a replica name is spoken by two
        live writer ids at two addresses: this node's own name at another address, or
        two peers of one name. Both keep working (distinct writers lose nothing), but
        two processes under one name is almost always a mistake."""
        name = name_of(writer)
        own = self._own_writer()
        others: list[tuple[str, str]] = []
        if name == name_of(own) and writer != own:
            others.append((own, self.address))
        limit = self._silence_limit()
        for other in self.peers.values():
            if (
                other is not peer
                and other.replica_id is not None
                and other.replica_id != writer
                and name_of(other.replica_id) == name
                and other.alive(now, limit)
            ):
                others.append((other.replica_id, other.address))
        for other_writer, other_address in others:
            if (writer, peer.address) in self._duplicates:
                return
            if len(self._duplicates) >= MAX_PEERS_LEARNED:
                self._duplicates.clear()  # bounded: frames may name made-up writers
            self._duplicates.add((writer, peer.address))
            self.stats["duplicate_ids"] += 1
            logger.warning(
                "%s: replica name %r is live twice: writer %r at %s and writer %r at %s "
                "(two processes under one name? give each its own name)",
                self.address,
                name,
                writer,
                peer.address,
                other_writer,
                other_address,
            )

    def _log_rejected(
        self,
        sender: str,
        reason: object,
        now: float,
        *,
        data: bytes | None = None,
        what: str = "rejected a frame",
    ) -> None:
        """Log a rejected frame, at most once per sender per REJECT_LOG_SECONDS with
        the count of those not logged in between; the reason (e.g. which side to
        upgrade, for an older wire format) is passed through as the codec says it.

        At most MAX_LOGGED_SENDERS senders are rate-limited one by one; past that, the
        others share one entry, so a flood of made-up senders writes at most
        MAX_LOGGED_SENDERS + 1 lines per REJECT_LOG_SECONDS. ``data``: the frame, read
        for the address it claims only when a line is written."""
        key = sender
        if key not in self._rejects and len(self._rejects) >= MAX_LOGGED_SENDERS:
            for stale in [
                k for k, (t, _) in self._rejects.items() if now - t >= REJECT_LOG_SECONDS
            ]:
                del self._rejects[stale]
            if len(self._rejects) >= MAX_LOGGED_SENDERS:
                key = _OTHER_SENDERS
        last, suppressed = self._rejects.get(key, (float("-inf"), 0))
        if now - last < REJECT_LOG_SECONDS:
            self._rejects[key] = (last, suppressed + 1)
            return
        self._rejects[key] = (now, 0)
        who = _cut(sender)
        if data is not None and sender.startswith("connection "):
            claimed = _claimed_sender(data)
            if claimed != "?":
                who = f"{who} (claiming to be {_cut(claimed)})"
        if key == _OTHER_SENDERS:
            who = f"{who} (one of many senders)"
        more = f" ({suppressed} more rejected since the last line)" if suppressed else ""
        logger.warning("%s: %s from %s: %s%s", self.address, what, who, _cut(str(reason)), more)

    def _log_error(
        self, exc: BaseException, now: float, counter: str, where: str = "while handling a frame"
    ) -> None:
        """Log an exception contained while handling a frame: with its traceback the
        first time for its kind, then at most once per kind per REJECT_LOG_SECONDS
        with the count of those not logged (at most MAX_LOGGED_ERRORS kinds apart)."""
        kind = type(exc).__name__
        if kind not in self._errors and len(self._errors) >= MAX_LOGGED_ERRORS:
            kind = "other"
        first = kind not in self._errors
        last, suppressed = self._errors.get(kind, (float("-inf"), 0))
        if now - last < REJECT_LOG_SECONDS:
            self._errors[kind] = (last, suppressed + 1)
            return
        self._errors[kind] = (now, 0)
        more = f" ({suppressed} more since the last line)" if suppressed else ""
        logger.error(
            "%s: %s %s, contained (counted in stats[%r]): %s%s",
            self.address,
            type(exc).__name__,
            where,
            counter,
            _cut(str(exc)),
            more,
            exc_info=exc if first else None,
        )


# The shared rate-limit entry for senders past MAX_LOGGED_SENDERS.
_OTHER_SENDERS: Final = "\0others"


def _cut(text: str) -> str:
    """``text`` for a log line: at most MAX_LOGGED_CHARS characters, printable."""
    text = text if len(text) <= MAX_LOGGED_CHARS else text[:MAX_LOGGED_CHARS] + "..."
    return text if text.isprintable() else repr(text)


def _connection_name(routing_id: bytes) -> str:
    """A connection as the log names it (a ROUTER routing identity, at most 255 bytes:
    cut; the peer may choose it)."""
    return f"connection {bytes(routing_id[:16]).hex()}"


def _claimed_sender(data: bytes) -> str:
    """The address a rejected frame claims to come from, for the log line only (it is
    not trusted for anything): ``?`` when even that does not decode."""
    head = codec.peek(data, 2)  # (not decoded whole again: only the first two items)
    if head is not None and isinstance(head[1], str):
        return head[1][:MAX_ADDRESS_LENGTH]
    return "?"


def _rotating(items: list[T], turn: int, size: int) -> list[T]:
    """The ``turn``-th window of ``size`` items of ``items``, wrapping around."""
    start = (turn * size) % len(items) if items else 0
    window = items[start : start + size]
    return window + items[: size - len(window)]


def _decode_frame(data: bytes) -> tuple[int, str, str, dict[str, int], Any]:
    body = as_list(codec.unpack(data), "gossip frame")
    if len(body) != 5:
        raise DecodeError(f"gossip frame: expected 5 items, got {len(body)}")
    kind = as_int(body[0], "gossip frame kind")
    if kind not in (PUSH, ACK, SYNC):
        raise DecodeError(f"gossip frame: unknown kind {kind}")
    sender = as_str(body[1], "gossip sender address")
    if not 0 < len(sender) <= MAX_ADDRESS_LENGTH:
        raise DecodeError("gossip sender address: 1 to 256 characters")
    replica_id = as_actor(body[2], "gossip sender replica id")
    version = check_vector(body[3], "gossip sender version")
    if len(version) > MAX_FRAME_VECTOR:
        raise DecodeError(f"gossip sender version: more than {MAX_FRAME_VECTOR} writers")
    extra = body[4]
    if kind == SYNC:
        peers, members, retired_obj, forgotten_obj = as_list(extra, "gossip digest", 4)
        if peers is not None:
            peers = as_list(peers, "gossip peer list")
            if len(peers) > MAX_PEERS_LEARNED:
                raise DecodeError("gossip peer list too long")
            for address in peers:
                if not 0 < len(as_str(address, "gossip peer address")) <= MAX_ADDRESS_LENGTH:
                    raise DecodeError("gossip peer address: 1 to 256 characters")
        if len(as_bytes(members, "gossip members digest")) != 8:
            raise DecodeError("gossip members digest: 8 bytes")
        pairs = as_list(retired_obj, "gossip retired list")
        names = as_list(forgotten_obj, "gossip forgotten list")
        # (Nodes send at most MAX_RETIRED_PER_DIGEST; a longer list, from an older node
        # or a hostile one, is cut rather than costing the whole digest.)
        pairs, names = pairs[:MAX_PEERS_LEARNED], names[:MAX_PEERS_LEARNED]
        retired: dict[str, int] = {}
        for pair in pairs:
            gone, bar = as_list(pair, "gossip retired replica", 2)
            retired[as_actor(gone, "gossip retired replica")] = as_int(
                bar, "retired bar", 0, codec.MAX_SEQ
            )
        forgotten = [as_actor(r, "gossip forgotten replica") for r in names]
        extra = [peers, members, retired, forgotten]
    elif kind == PUSH:
        as_bytes(extra, "push payload")
    return kind, sender, replica_id, version, extra
