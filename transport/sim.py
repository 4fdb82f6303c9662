"""A deterministic, seeded, virtual-time network running many replicas in one process.

Every node is a real :class:`~crdtmem.Replica` driven by a real
:class:`~crdtmem.gossip.GossipNode`; only the wire is simulated. Faults come from one
seeded ``random.Random``: latency (so messages overtake each other), drop, duplication,
partitions of any shape (symmetric or one-way), crashes and restarts, and per-node
clock skew for LWW timestamps. The same seed replays the same run exactly.

Connections are simulated as ZeroMQ's are where the protocol can tell: the first frame
a node sends to an address it has learned but not heard answer (not yet a member, see
:data:`crdtmem.gossip.UNVERIFIED_PEER_TTL`) dials it; if a live node is there and the
link is up both ways, the dialler's :meth:`~crdtmem.gossip.GossipNode.peer_connected`
runs one latency later, as the drivers' socket monitor calls it on a handshake. An
address where no node runs never answers.

>>> net = SimNetwork(seed=7, drop=0.3)
>>> a, b = net.add_node("a"), net.add_node("b")
>>> net.write("a", lambda r: r.counter("votes").increment())
>>> net.run_until_converged(timeout=30.0)
True
>>> net.replica("b").counter("votes").value
1
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from crdtmem import Replica
from crdtmem.gossip import DEFAULTS, LEAVE_TIMEOUT, Frame, GossipConfig, GossipNode


@dataclass
class SimNode:
    """One simulated process: a replica, its gossip state, whether it is up."""

    name: str
    replica: Replica
    gossip: GossipNode
    clock_skew: float = 0.0
    up: bool = True
    incarnation: int = 0
    path: str | None = None


@dataclass(order=True)
class _Event:
    time: float
    order: int
    kind: str = field(compare=False)
    target: str = field(compare=False)
    data: bytes = field(compare=False, default=b"")
    source: str = field(compare=False, default="")


class SimNetwork:
    """Virtual network; see the module docstring.

    Args:
        seed: the only source of randomness; print it to replay a failing run.
        latency: ``(low, high)`` seconds, drawn uniformly per message.
        drop: probability that a message is lost.
        duplicate: probability that a message is delivered twice.
        interval: anti-entropy period of every node, in virtual seconds; peers count as
            down after 6 silent intervals and are probed at most 4 intervals apart.
        chunk_bytes: payload budget per push frame.
        learn_peers: whether nodes adopt peers named in digests (off keeps a ring a ring).
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        latency: tuple[float, float] = (0.001, 0.010),
        drop: float = 0.0,
        duplicate: float = 0.0,
        interval: float = DEFAULTS.interval,
        chunk_bytes: int = 64 * 1024,
        learn_peers: bool = True,
    ) -> None:
        if not 0 <= drop < 1 or not 0 <= duplicate < 1 or not 0 <= latency[0] <= latency[1]:
            raise ValueError("drop and duplicate in [0, 1), 0 <= latency low <= high")
        self.seed = seed
        self.random = random.Random(seed)
        # Incarnation tokens: seeded too, apart from the fault model's stream, so that
        # adding a node does not change which messages a seed drops.
        self.identities = random.Random(f"identities-{seed}")
        self.latency = latency
        self.drop = drop
        self.duplicate = duplicate
        self.interval = interval
        self.chunk_bytes = chunk_bytes
        self.learn_peers = learn_peers
        # Every node's protocol settings: the drivers' defaults, timed by `interval`.
        self.config = GossipConfig(
            interval=interval,
            dead_after=interval * 6,
            max_backoff=interval * 4,
            chunk_bytes=chunk_bytes,
            learn_peers=learn_peers,
        )
        self.now = 0.0
        self.nodes: dict[str, SimNode] = {}
        self.blocked: set[tuple[str, str]] = set()
        self._queue: list[_Event] = []
        self._order = itertools.count()
        self.messages = 0
        self.bytes = 0
        self.dropped = 0
        # Dials in flight: (dialler, address).
        self._dialling: set[tuple[str, str]] = set()

    # --- topology -----------------------------------------------------------------------

    def add_node(
        self,
        name: str,
        *,
        peers: Iterable[str] | None = None,
        clock_skew: float = 0.0,
        path: str | None = None,
        replica_id: str | None = None,
    ) -> SimNode:
        """A node gossiping with ``peers`` (default: every node added so far, which
        also learns about this one); durable, on disk at ``path``, when given. Its
        address is ``name``; its replica id too, unless ``replica_id`` says otherwise
        (two nodes under one replica id: an agent started twice by mistake)."""
        replica = self._replica(replica_id or name, path, clock_skew)
        known = list(self.nodes) if peers is None else list(peers)
        gossip = self._gossip(replica, name, known)
        node = SimNode(name, replica, gossip, clock_skew, path=path)
        for other in known if peers is not None else self.nodes:
            if other in self.nodes:
                self.nodes[other].gossip.add_peer(name)  # links are symmetric
        self.nodes[name] = node
        self._schedule(self.now + self.random.uniform(0, self.interval), "tick", name)
        return node

    def _replica(self, replica_id: str, path: str | None, skew: float) -> Replica:
        return Replica(
            replica_id,
            path=path,
            clock=lambda: max(0.0, self.now + skew),
            rng=random.Random(self.identities.getrandbits(64)),
        )

    def _gossip(self, replica: Replica, name: str, peers: list[str]) -> GossipNode:
        return GossipNode.from_config(replica, name, self.config, peers)

    def missing_updates(self) -> int:
        """Divergence: updates some live node has that others lack, summed over nodes."""
        live = [n.replica.version() for n in self.nodes.values() if n.up]
        union: dict[str, int] = {}
        for version in live:
            for origin, count in version.items():
                union[origin] = max(union.get(origin, 0), count)
        total = sum(union.values())
        return sum(total - sum(version.values()) for version in live)

    def replica(self, name: str) -> Replica:
        return self.nodes[name].replica

    def partition(self, *groups: Iterable[str]) -> None:
        """Cut every link between different groups (nodes in no group are isolated)."""
        membership = {n: i for i, group in enumerate(groups) for n in group}
        for a in self.nodes:
            for b in self.nodes:
                if a != b and (a not in membership or membership.get(a) != membership.get(b)):
                    self.blocked.add((a, b))

    def cut(self, source: str, target: str, *, both_ways: bool = True) -> None:
        """Cut one link (``both_ways=False``: only ``source`` -> ``target``)."""
        self.blocked.add((source, target))
        if both_ways:
            self.blocked.add((target, source))

    def heal(self) -> None:
        """Restore every link."""
        self.blocked.clear()

    def crash(self, name: str) -> None:
        """Stop a node: it sends and receives nothing; frames in flight to it are lost."""
        self.nodes[name].up = False

    def leave(self, name: str, timeout: float = LEAVE_TIMEOUT, max_events: int = 5_000_000) -> bool:
        """A node leaves the group for good, as the drivers' ``leave`` does: it keeps
        gossiping, the whole network running in virtual time, until every peer has
        acknowledged its updates or ``timeout`` virtual seconds pass
        (:meth:`~crdtmem.gossip.GossipNode.begin_leave`); then it says goodbye
        (:meth:`~crdtmem.gossip.GossipNode.leave`) and stops. Returns whether every peer
        had acknowledged everything."""
        node = self.nodes[name]
        if not node.up:
            raise RuntimeError(f"node {name} is down")
        self._send(name, node.gossip.begin_leave(self.now, timeout))
        self._schedule(node.gossip.next_deadline(), "tick", name)  # the leave's deadline
        self._settle_leave(node)
        for _ in range(max_events):
            if not node.up or not self.step():
                break
        return bool(node.gossip.left_spread)

    def _settle_leave(self, node: SimNode) -> None:
        """After each event of a leaving node: say goodbye and stop once the node's
        leave policy says so (the drivers ask the same after each turn of their loop)."""
        if node.gossip.leave_done(self.now):
            self._send(node.name, node.gossip.leave())
            node.up = False

    def restart(self, name: str, *, durable: bool = True) -> None:
        """Bring a crashed node back under the same replica id, as a supervisor restarts
        an agent. ``durable``: with everything it had acknowledged (as a ``path=``
        replica reopens: its log is really reopened, and keeps its writer id while
        intact); otherwise with an empty memory. Either way the replica itself decides
        whether it starts a new life (:attr:`~crdtmem.Replica.writer_id`), so no dot is
        minted twice."""
        node = self.nodes[name]
        node.incarnation += 1
        replica_id = node.replica.replica_id
        if durable and node.path is not None:  # really reopened from disk
            node.replica.close()
            node.replica = self._replica(replica_id, node.path, node.clock_skew)
        elif not durable:
            if node.path is not None:
                node.replica.close()  # (its folder is not reopened: memory only now)
            node.replica = self._replica(replica_id, None, node.clock_skew)
        # Its members, as a restarted agent's configuration would list them (an address
        # that never answered is not one).
        peers = [a for a, p in node.gossip.peers.items() if p.counts]
        node.gossip = self._gossip(node.replica, name, peers)
        node.up = True
        self._schedule(self.now, "tick", name)

    # --- running ------------------------------------------------------------------------

    def write(self, name: str, action: Callable[[Replica], Any]) -> Any:
        """Run ``action`` on a node's replica now, then push as a real driver would."""
        node = self.nodes[name]
        if not node.up:
            raise RuntimeError(f"node {name} is down")
        result = action(node.replica)
        self._send(name, node.gossip.flush(self.now))
        return result

    def _schedule(
        self, when: float, kind: str, target: str, data: bytes = b"", source: str = ""
    ) -> None:
        heapq.heappush(self._queue, _Event(when, next(self._order), kind, target, data, source))

    def _send(self, source: str, frames: list[Frame]) -> None:
        peers = self.nodes[source].gossip.peers if source in self.nodes else {}
        for frame in frames:
            state = peers.get(frame.peer)
            if state is not None and not state.counts:
                self._dial(source, frame.peer)
            self.messages += 1
            self.bytes += len(frame.data)
            if (source, frame.peer) in self.blocked or self.random.random() < self.drop:
                self.dropped += 1
                continue
            copies = 2 if self.random.random() < self.duplicate else 1
            for _ in range(copies):
                delay = self.random.uniform(*self.latency)
                self._schedule(self.now + delay, "deliver", frame.peer, frame.data, source)

    def _dial(self, source: str, address: str) -> None:
        """A connection attempt from ``source`` to ``address``: it comes up one latency
        later if a live node is there and the link works both ways."""
        if (source, address) in self._dialling:
            return
        target = self.nodes.get(address)
        if target is None or not target.up or not self._linked(source, address):
            return
        self._dialling.add((source, address))
        delay = self.random.uniform(*self.latency)
        self._schedule(self.now + delay, "connect", source, source=address)

    def _linked(self, a: str, b: str) -> bool:
        return (a, b) not in self.blocked and (b, a) not in self.blocked

    def step(self) -> bool:
        """Process the next event; False when nothing is scheduled."""
        if not self._queue:
            return False
        event = heapq.heappop(self._queue)
        self.now = max(self.now, event.time)
        node = self.nodes.get(event.target)
        if node is None:
            return True
        if event.kind == "tick":
            if node.up:
                self._send(node.name, node.gossip.tick(self.now))
                self._schedule(node.gossip.next_deadline(), "tick", node.name)
                self._settle_leave(node)
            return True
        if event.kind == "connect":
            self._dialling.discard((node.name, event.source))
            other = self.nodes.get(event.source)
            if node.up and other is not None and other.up and self._linked(node.name, other.name):
                self._send(node.name, node.gossip.peer_connected(event.source, self.now))
                self._settle_leave(node)
            return True
        if not node.up or (event.source, event.target) in self.blocked:
            self.dropped += 1
            return True
        self._send(node.name, node.gossip.receive(event.data, self.now))
        self._settle_leave(node)
        return True

    def run_for(self, seconds: float, max_events: int = 5_000_000) -> None:
        """Advance virtual time by ``seconds``."""
        until = self.now + seconds
        for _ in range(max_events):
            if not self._queue or self._queue[0].time > until:
                break
            self.step()
        self.now = max(self.now, until)

    def converged(self) -> bool:
        """All live nodes hold equal values and versions."""
        live = [n.replica for n in self.nodes.values() if n.up]
        return all(r.version() == live[0].version() for r in live) and all(
            r.value() == live[0].value() for r in live
        )

    def run_until_converged(self, timeout: float, check_every: float = 0.05) -> bool:
        """Run until :meth:`converged` or ``timeout`` virtual seconds pass."""
        deadline = self.now + timeout
        while self.now < deadline:
            if self.converged():
                return True
            self.run_for(check_every)
        return self.converged()
