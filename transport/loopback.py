"""Addresses for running several agents on one machine."""

from __future__ import annotations

import socket


def free_loopback_addresses(count: int) -> list[str]:
    """``count`` distinct ``tcp://127.0.0.1:PORT`` addresses whose ports were free a
    moment ago (the kernel picks them; another process could still take one first)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [f"tcp://127.0.0.1:{s.getsockname()[1]}" for s in sockets]
    finally:
        for s in sockets:
            s.close()
