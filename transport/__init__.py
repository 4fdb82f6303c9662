"""Transports that drive the sans-IO replica: ZeroMQ gossip and a simulated network.

>>> from transport import AsyncZmqGossip, SimNetwork, ZmqGossip
"""

from __future__ import annotations

from transport.async_gossip import AsyncZmqGossip
from transport.sim import SimNetwork, SimNode
from transport.zmq_gossip import ZmqGossip

__all__ = ["AsyncZmqGossip", "SimNetwork", "SimNode", "ZmqGossip"]
