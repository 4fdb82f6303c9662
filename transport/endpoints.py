"""Checks at the call for the endpoints both ZeroMQ drivers take: ``peers``, ``bind`` and
``advertise`` are validated once, here, when the driver is built, so a typo raises
``ValueError`` naming it instead of a gossip loop that silently reaches no one.

Accepted: ``tcp://HOST:PORT`` (HOST an IP literal, ``[v6]`` literal, or a name that
resolves through ``socket.getaddrinfo``; PORT 1..65535, and for ``bind`` also ``0`` or
``*``: any free port), ``ipc://PATH`` and ``inproc://NAME``.

>>> check_peers(["tcp://127.0.0.1:5555", "ipc:///tmp/agent.sock"])
['tcp://127.0.0.1:5555', 'ipc:///tmp/agent.sock']
>>> check_peers("tcp://127.0.0.1:5555")
Traceback (most recent call last):
...
ValueError: peers is a list of endpoints, got a str: did you mean ['tcp://127.0.0.1:5555']?
>>> check_bind("tcp://0.0.0.0:5555", None)
Traceback (most recent call last):
...
ValueError: bind 'tcp://0.0.0.0:5555' is a wildcard: pass advertise='tcp://HOST:5555'

Safe by default (:func:`check_exposure`), as Redis's protected mode is: a node without
keys binds only where no other machine can reach it.

>>> check_exposure("tcp://127.0.0.1:0", secured=False)
>>> check_exposure("ipc:///tmp/agent.sock", secured=False)
>>> check_exposure("tcp://0.0.0.0:5555", secured=True)   # with keys: anywhere
>>> check_exposure("tcp://0.0.0.0:5555", secured=False)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: bind 'tcp://0.0.0.0:5555' is reachable from other machines and this node has no keys:...
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterable
from typing import Final

TRANSPORTS: Final = ("tcp", "ipc", "inproc")
WILDCARD_HOSTS: Final = frozenset({"*", "0.0.0.0", "::", "[::]"})
# Transports no other machine can reach: a file on this machine, or this process.
LOCAL_TRANSPORTS: Final = ("ipc", "inproc")

logger = logging.getLogger("transport.zmq")


def _host_ok(host: str) -> bool:
    literal = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(literal)
        return True
    except ValueError:
        pass
    if not host or host.startswith("["):
        return False
    try:
        return bool(socket.getaddrinfo(host, None))
    except (OSError, UnicodeError):
        return False


def check_endpoint(endpoint: object, what: str = "peer", *, bind: bool = False) -> str:
    """``endpoint`` if it is an endpoint ZeroMQ can use for ``what``; ``bind`` allows a
    wildcard host and port 0 or ``*`` (any free port).

    Raises:
        ValueError: not a str, an unknown transport, a bad host or port (named).
    """
    if not isinstance(endpoint, str):
        raise ValueError(f"{what} endpoint must be a str, got {type(endpoint).__name__}")
    transport, sep, rest = endpoint.partition("://")
    if not sep or transport not in TRANSPORTS:
        raise ValueError(
            f"{what} endpoint {endpoint!r}: expected tcp://HOST:PORT, ipc://PATH or inproc://NAME"
        )
    if not rest:
        raise ValueError(f"{what} endpoint {endpoint!r}: empty {transport} address")
    if transport != "tcp":
        return endpoint
    host, colon, port = rest.rpartition(":")
    if not colon or not host:
        raise ValueError(f"{what} endpoint {endpoint!r}: expected tcp://HOST:PORT")
    if bind and port in ("*", "0"):
        pass
    elif not (port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"{what} endpoint {endpoint!r}: port {port!r} is not in 1..65535")
    if host in WILDCARD_HOSTS:
        if not bind:
            raise ValueError(f"{what} endpoint {endpoint!r}: a wildcard host cannot be dialled")
    elif not _host_ok(host):
        raise ValueError(
            f"{what} endpoint {endpoint!r}: host {host!r} is not an IP address and does not resolve"
        )
    return endpoint


def check_peers(peers: Iterable[str]) -> list[str]:
    """The ``peers`` argument: a list or tuple (or other non-str iterable) of endpoints.

    Raises:
        ValueError: a str (one endpoint where a list was meant), or a bad endpoint.
    """
    if isinstance(peers, (str, bytes)):
        raise ValueError(
            f"peers is a list of endpoints, got a {type(peers).__name__}: did you mean [{peers!r}]?"
        )
    return [check_endpoint(peer, "peer") for peer in peers]


def is_wildcard(bind: str) -> bool:
    """Whether a (valid) bind endpoint listens on every interface."""
    if not bind.startswith("tcp://"):
        return False
    host = bind[len("tcp://") :].rpartition(":")[0]
    return host in WILDCARD_HOSTS


def check_bind(bind: str, advertise: str | None) -> str | None:
    """Validate ``bind`` and ``advertise``; returns ``advertise``.

    Raises:
        ValueError: a bad endpoint, or a wildcard ``bind`` without ``advertise`` (peers
            cannot dial ``0.0.0.0``, and frames name the address peers should dial).
    """
    check_endpoint(bind, "bind", bind=True)
    if advertise is not None:
        return check_endpoint(advertise, "advertise")
    if is_wildcard(bind):
        port = bind.rpartition(":")[2]
        raise ValueError(
            f"bind {bind!r} is a wildcard: pass advertise='tcp://HOST:{port}'"
        )  # the address peers dial: frames name it as this node's
    return None


def is_loopback(bind: str) -> bool:
    """Whether a (valid) bind endpoint is reachable from this machine only: ``ipc://``,
    ``inproc://``, or ``tcp://`` on a loopback address (127.0.0.0/8, ``::1``) or on a
    name all of whose addresses are loopback (``localhost``)."""
    transport, _, rest = bind.partition("://")
    if transport in LOCAL_TRANSPORTS:
        return True
    host = rest.rpartition(":")[0]
    if host in WILDCARD_HOSTS:
        return False
    literal = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(literal).is_loopback
    except ValueError:
        pass  # a name: loopback only if every address it resolves to is
    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(
        ipaddress.ip_address(str(address).partition("%")[0]).is_loopback for address in addresses
    )


def check_exposure(bind: str, *, secured: bool, insecure: bool = False) -> None:
    """Refuse to expose a node without keys: the drivers call this when built.

    ``secured``: the node has keys (``identity=`` and ``trusted=``), so every connection
    is authenticated and encrypted and it may bind anywhere. Without keys it may bind
    only where :func:`is_loopback` holds, unless ``insecure=True``, which binds anyway
    and logs a WARNING (plain text, no authentication: anyone who reaches the address is
    a full member).

    Raises:
        ValueError: a bind reachable from other machines, without keys or ``insecure``.
    """
    check_endpoint(bind, "bind", bind=True)
    if secured or is_loopback(bind):
        return
    if insecure:
        logger.warning(
            "bind %r without keys (insecure=True): any process that reaches it can read "
            "and write the whole memory",
            bind,
        )
        return
    raise ValueError(
        f"bind {bind!r} is reachable from other machines and this node has no keys: anyone "
        "who reaches it could read and write the whole memory. Pass identity= and trusted= "
        "(python -m crdtmem keygen NAME --dir keys), bind tcp://127.0.0.1:PORT or ipc://PATH, "
        "or pass insecure=True to accept the risk"
    )
