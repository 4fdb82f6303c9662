"""Transports that drive the sans-IO replica: ZeroMQ gossip and a simulated network.

Importing it checks the libzmq in use (:func:`transport.security.check_libzmq`): one
without the fixes for CVE-2019-13132 and CVE-2020-15166 raises ``ImportError``.

>>> from transport import AsyncZmqGossip, SimNetwork, ZmqGossip
"""

from __future__ import annotations

from transport.async_gossip import AsyncZmqGossip
from transport.security import check_libzmq
from transport.sim import SimNetwork, SimNode
from transport.zmq_gossip import ZmqGossip

check_libzmq()

__all__ = ["AsyncZmqGossip", "SimNetwork", "SimNode", "ZmqGossip"]
