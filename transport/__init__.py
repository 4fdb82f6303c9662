"""Transports that drive the sans-IO replica: ZeroMQ gossip and a simulated network.

>>> from transport import ZmqGossip, SimNetwork
"""

from __future__ import annotations

from transport.sim import SimNetwork, SimNode
from transport.zmq_gossip import ZmqGossip

__all__ = ["SimNetwork", "SimNode", "ZmqGossip"]
