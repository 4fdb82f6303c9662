"""A DEALER outlives the node dropping its peer: a learned address whose connection came
up while the node did not have it is verified when the node learns it again.

The scenario a reviewer reproduced: A learns and verifies B; B leaves (A drops it, its
DEALER to B's address stays); a new agent B2 binds B's address and A's DEALER reconnects
to it while A does not have the address, so the handshake event finds no peer; A
learns the address again (through C), and no new handshake comes. A must still count
B2 as verified and push to it.

Loopback only (127.0.0.1); every driver the test starts, it stops; waits are conditions
with deadlines.
"""

from __future__ import annotations

from collections.abc import Callable

from crdtmem import Replica
from tests.test_zmq_integration import _wait_until
from transport import ZmqGossip
from transport.loopback import free_loopback_addresses as addresses

# Each wait normally takes well under a second; generous for a loaded machine.
WAIT: float = 25.0
INTERVAL = 0.1
DEAD_AFTER = 0.3


def _verified(gossip: ZmqGossip, address: str) -> Callable[[], bool]:
    def check() -> bool:
        node = gossip.node
        peer = node.peers.get(address) if node is not None else None
        return peer is not None and peer.verified

    return check


def test_a_relearned_address_whose_dealer_stayed_connected_is_verified_and_pushed_to() -> None:
    addr_a, addr_b, addr_c = addresses(3)
    a, b, b2, c = Replica("a"), Replica("b"), Replica("b2"), Replica("c")
    started: list[ZmqGossip] = []

    def start(replica: Replica, bind: str, peers: list[str]) -> ZmqGossip:
        gossip = ZmqGossip(
            replica, bind=bind, peers=peers, interval=INTERVAL, dead_after=DEAD_AFTER
        ).start()
        started.append(gossip)
        return gossip

    try:
        ga = start(a, addr_a, [])
        gb = start(b, addr_b, [addr_a])
        a.counter("n").increment()
        b.counter("n").increment()
        assert _wait_until(_verified(ga, addr_b), WAIT)  # learned from B's frames
        core = ga._core
        assert _wait_until(lambda: addr_b in core.up, WAIT)

        # B leaves: A drops the address, but its DEALER to it stays open.
        gb.leave(timeout=2.0)
        gb.stop()
        node = ga.node
        assert node is not None
        assert _wait_until(lambda: addr_b not in node.peers, WAIT)
        assert _wait_until(lambda: addr_b not in core.up, WAIT)  # disconnected
        assert addr_b in core.dealers

        # B2 at B's address, knowing only C (not started yet): A's DEALER reconnects
        # to it while A does not have the address.
        gb2 = start(b2, addr_b, [addr_c])
        assert _wait_until(lambda: addr_b in core.up, WAIT)
        assert addr_b not in node.peers

        # C makes A learn the address again; no new handshake comes for it.
        gc = start(c, addr_c, [addr_a])
        assert _wait_until(_verified(ga, addr_b), WAIT)
        assert gb2.node is not None
        assert _wait_until(_verified(gb2, addr_a), WAIT)

        # A pushes to B2 directly (C is gone): a write made at A now reaches B2.
        gc.stop()
        a.counter("m").increment(5)
        assert _wait_until(lambda: b2.value().get("m") == 5, WAIT)
        peer = node.peers.get(addr_b)
        assert peer is not None and peer.verified and peer.pushed_at > float("-inf")
    finally:
        for gossip in reversed(started):
            gossip.stop()
