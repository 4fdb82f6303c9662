"""CURVE encryption and authentication for the ZeroMQ drivers: the parts that move no
gossip, so both drivers use them the same way.

- :class:`Gate`: who may connect to a node's ROUTER. One ZAP handler per ZeroMQ context
  (pyzmq's :class:`zmq.auth.thread.ThreadAuthenticator`, with its message handler
  replaced) serves every gate of that context, each under its own ZAP domain. It admits
  only CURVE clients whose public key is in the gate's trusted set, and names each
  connection by the replica the key speaks for: that name is the ZeroMQ ``User-Id`` of
  every message the connection delivers (:func:`sender_name`). NULL, PLAIN and GSSAPI
  are refused; an unknown key is refused; there is no "allow any". The trusted set can
  be replaced at run time (:meth:`Gate.reload`).
- :func:`serve_curve` and :func:`dial_curve`: make a ROUTER a CURVE server (checked by
  a gate, failing closed: ``ZAP_ENFORCE_DOMAIN`` refuses every client if the ZAP handler
  is ever missing) and a DEALER a CURVE client of one server key.
- :class:`PeerKeys`: which server key is at which peer address (see below).
- :func:`drop_connections`: cut a ROUTER's accepted connections so that every client
  must pass the gate again (after a key was revoked).

Which key is at which address. A CURVE client must know its server's public key before
connecting, but peers are given, and learned from digests, as addresses. A node binds
the name of a peer to an address in three ways, strongest first:

1. configured: ``peers=["researcher@tcp://10.0.0.5:5555"]`` (:func:`parse_peer`), which
   nothing learned can change;
2. proved: a CURVE handshake with ``researcher``'s server key succeeded at that address
   (a peer given without a name is dialled with each trusted key in turn,
   :meth:`PeerKeys.candidates`, until one handshake succeeds);
3. first-hand: a frame whose ZeroMQ ``User-Id`` is ``researcher`` (proved by the CURVE
   handshake of that connection) says its sender listens at ``tcp://10.0.0.5:5555``;
4. a hint: another peer's digest says ``researcher`` is at that address.

Every binding but a proved one is only a claim, and the CURVE handshake checks it: a
client dialling ``X`` with ``researcher``'s server key completes the handshake only if
the node at ``X`` holds ``researcher``'s secret key. So a wrong binding (a misbehaving
member lying about an address) cannot make a node send to an impostor or read
anything; at worst that node cannot reach the address until the binding is corrected
(a failed dial should :meth:`PeerKeys.forget` it; a configured name is never replaced).
One shared group server key was rejected: every member would
hold the secret of every node's server, so revoking one member would mean re-keying
the whole group. Each node's ROUTER therefore uses the node's own key pair.

Revocation: the gate checks keys at each handshake only (ZAP runs once per connection).
After :meth:`Gate.reload` without a key, that key's next connection or reconnection is
refused, but a connection already open stays open: its messages still carry the name.
:func:`drop_connections` closes them all (honest peers reconnect within
``RECONNECT_IVL`` and pass the gate again; what was in flight is repaired by
anti-entropy). A node should also close its DEALER to the revoked peer:
:meth:`PeerKeys.server_key` returns ``None`` for it from the reload on.

>>> parse_peer("researcher@tcp://127.0.0.1:5555")
('researcher', 'tcp://127.0.0.1:5555')
>>> parse_peer("ipc:///tmp/a@b.sock")     # an '@' inside the address is the address's
(None, 'ipc:///tmp/a@b.sock')
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar, Final, TypeVar

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from crdtmem.gossip import MAX_PEERS_LEARNED
from crdtmem.keys import Identity, check_key_name
from transport.endpoints import check_endpoint

logger = logging.getLogger("transport.security")

ZAP_VERSION: Final = b"1.0"
# ZAP status codes (ZeroMQ RFC 27): 200 admitted, 400 refused, 500 internal error.
ZAP_OK: Final = b"200"
ZAP_REFUSED: Final = b"400"
ZAP_ERROR: Final = b"500"
USER_ID: Final = "User-Id"
# Each refusal is counted; the first ones from each (address, reason) are also logged,
# up to this many distinct pairs per gate, so a flood of attempts cannot flood the log.
MAX_LOGGED_REFUSALS: Final = 1024
# Domains are "crdtmem-" + a per-process counter: unique among the gates of a context.
DOMAIN_PREFIX: Final = "crdtmem-"
# drop_connections waits this long at most (200 x 10 ms) for its old listener to close:
# ZeroMQ's I/O thread closes it within milliseconds, even on a loaded machine.
REBIND_ATTEMPTS: Final = 200
REBIND_PAUSE: Final = 0.01

# libzmq 4.3.2 fixed CVE-2019-13132 (a remote stack overflow in a CURVE server, before
# authentication); 4.3.3 fixed CVE-2020-15166 (unauthenticated clients exhausting a
# server's memory, with or without CURVE). Older libzmq is refused at import.
MIN_LIBZMQ: Final = (4, 3, 3)

S = TypeVar("S", bound=zmq.Socket[Any])


def check_libzmq(version: str | None = None) -> tuple[int, ...]:
    """The libzmq version (``zmq.zmq_version()`` unless ``version`` is given), as a
    tuple, if it carries the fixes for CVE-2019-13132 and CVE-2020-15166.

    Raises:
        ImportError: an older or unreadable version (``import transport`` calls this).
    """
    found = zmq.zmq_version() if version is None else version
    try:
        parts = tuple(int(part) for part in found.split("."))
    except ValueError:
        parts = ()
    if not parts or parts < MIN_LIBZMQ:
        wanted = ".".join(map(str, MIN_LIBZMQ))
        raise ImportError(
            f"libzmq {found} is too old: crdtmem needs libzmq {wanted} or newer, which fixes "
            "CVE-2019-13132 and CVE-2020-15166. Upgrade pyzmq (its wheels bundle a recent "
            "libzmq) or the system libzmq it was built against"
        )
    return parts


def _reversed(trusted: Mapping[str, bytes]) -> dict[bytes, str]:
    """Public key (raw 32 bytes) -> name; ``ValueError`` if a key is given two names."""
    names: dict[bytes, str] = {}
    for name, public in trusted.items():
        check_key_name(name)
        raw = z85.decode(public)
        if raw in names:
            raise ValueError(f"{name!r} and {names[raw]!r} have one key: a key speaks for one")
        names[raw] = name
    return names


class Gate:
    """Admission to one CURVE server socket: the trusted keys, under a ZAP domain of
    their own, checked by the ZAP handler of the socket's context.

    Open it (:meth:`open`) before binding the ROUTER (:func:`serve_curve`) and close it
    after closing the ROUTER and before terminating the context (the ZAP handler's
    sockets live in it). ``admitted`` and ``refused`` count the handshakes the ZAP
    handler decided (refusals are also logged, a bounded number of times). Handshakes
    that fail before reaching it (a client of another mechanism, a client that cannot
    prove its key, a wrong server key) are seen only as ``EVENT_HANDSHAKE_FAILED_*``
    events of a monitor on the ROUTER."""

    # One ZAP handler per ZeroMQ context (libzmq allows one), shared by its gates.
    _next_domain: ClassVar[int] = 0
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()
    _handlers: ClassVar[dict[int, _ZapHandler]] = {}

    def __init__(self, trusted: Mapping[str, bytes], domain: str) -> None:
        self.domain = domain
        self._keys = _reversed(trusted)
        self._context_key: int | None = None
        self.admitted = 0
        self.refused = 0
        self._logged: set[tuple[str, str]] = set()

    @classmethod
    def open(cls, context: zmq.Context[Any], trusted: Mapping[str, bytes]) -> Gate:
        """A gate for ``trusted`` (name -> Z85 public key, as from
        :func:`crdtmem.keys.load_trusted`), served by ``context``'s ZAP handler (started
        by the first gate of the context, stopped with the last)."""
        with cls._registry_lock:
            gate = cls(trusted, f"{DOMAIN_PREFIX}{cls._next_domain}")
            cls._next_domain += 1
            key = context.underlying
            handler = cls._handlers.get(key)
            if handler is None or not handler.is_alive():
                handler = _ZapHandler(zmq.Context.shadow(key))
                handler.start()
                cls._handlers[key] = handler
            handler.gates[gate.domain] = gate
            gate._context_key = key
        return gate

    def close(self) -> None:
        """Stop admitting (every later handshake under this domain is refused); the last
        gate of a context stops its ZAP handler. Idempotent."""
        with self._registry_lock:
            key, self._context_key = self._context_key, None
            handler = self._handlers.get(key) if key is not None else None
            if handler is None:
                return
            handler.gates.pop(self.domain, None)
            if not handler.gates:
                del self._handlers[key]  # type: ignore[arg-type]  # key is not None here
                handler.stop()

    def __enter__(self) -> Gate:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """Whether the gate was closed (it then refuses every handshake)."""
        return self._context_key is None

    @property
    def names(self) -> frozenset[str]:
        """The replica names whose keys are trusted now."""
        return frozenset(self._keys.values())

    def reload(self, trusted: Mapping[str, bytes]) -> None:
        """Trust ``trusted`` from the next handshake on. A key left out cannot connect or
        reconnect; its open connections stay open (see :func:`drop_connections`)."""
        keys = _reversed(trusted)
        self._keys = keys  # one assignment: the ZAP thread sees the old set or the new

    def name_for(self, public: bytes) -> str | None:
        """The name a raw (32-byte) public key speaks for, or ``None`` if untrusted."""
        return self._keys.get(public)

    def _note_refusal(self, address: str, reason: str) -> None:
        self.refused += 1
        if (address, reason) in self._logged or len(self._logged) >= MAX_LOGGED_REFUSALS:
            return
        self._logged.add((address, reason))
        logger.warning("%s: refused a connection from %s: %s", self.domain, address, reason)

    def decide(self, address: str, mechanism: bytes, credentials: list[bytes]) -> str | None:
        """The name to admit a handshake under, or ``None`` to refuse it (counted and
        logged). Called by the ZAP handler."""
        if mechanism != b"CURVE":
            reason = f"mechanism {mechanism.decode('ascii', 'replace')} (only CURVE is accepted)"
        elif len(credentials) != 1:
            reason = "malformed CURVE credentials"
        else:
            name = self.name_for(credentials[0])
            if name is not None:
                self.admitted += 1
                return name
            reason = f"untrusted key {z85.encode(credentials[0]).decode('ascii')}"
        self._note_refusal(address, reason)
        return None


class _ZapHandler(ThreadAuthenticator):
    """pyzmq's ZAP thread, with a handler that asks the gate of the request's domain.

    pyzmq's own policy is not used: it admits NULL clients and offers "allow any", and
    its user id is not chosen per domain. A request for a domain with no gate is refused.
    """

    def __init__(self, context: zmq.Context[Any]) -> None:
        super().__init__(context, log=logger)
        self.gates: dict[str, Gate] = {}

    def _reply(self, request_id: bytes, status: bytes, text: bytes, user_id: bytes) -> None:
        self.zap_socket.send_multipart([ZAP_VERSION, request_id, status, text, user_id, b""])

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        """Answer one ZAP request (RFC 27): 200 with the key's name as User-Id, or 400."""
        if len(msg) < 6:
            if len(msg) >= 2:
                self._reply(msg[1], ZAP_REFUSED, b"Not enough frames", b"")
            return  # with fewer than two frames there is no request id to answer
        version, request_id, domain, address, _routing_id, mechanism = msg[:6]
        try:
            gate = self.gates.get(domain.decode("utf-8", "replace"))
            if version != ZAP_VERSION:
                name = None
            elif gate is None:
                logger.warning("refused a handshake for unknown ZAP domain %r", domain)
                name = None
            else:
                name = gate.decide(address.decode("utf-8", "replace"), mechanism, msg[6:])
        except Exception:  # a bug here must refuse, never kill the thread mid-request
            logger.exception("ZAP handler failed; refusing the handshake")
            self._reply(request_id, ZAP_ERROR, b"Internal error", b"")
            return
        if name is None:
            self._reply(request_id, ZAP_REFUSED, b"Refused", b"")
        else:
            self._reply(request_id, ZAP_OK, b"OK", name.encode("utf-8"))


def serve_curve(router: S, identity: Identity, gate: Gate) -> S:
    """Make ``router`` (before it binds) a CURVE server with ``identity``'s key pair,
    admitting only what ``gate`` admits. It fails closed: with ``ZAP_ENFORCE_DOMAIN``,
    libzmq refuses every client if no ZAP handler answers (by default it would admit any
    client that knows the server key)."""
    if gate.closed:
        raise ValueError("the gate is closed: open one with Gate.open(context, trusted)")
    router.setsockopt(zmq.CURVE_SERVER, 1)
    router.setsockopt(zmq.CURVE_PUBLICKEY, identity.public)
    router.setsockopt(zmq.CURVE_SECRETKEY, identity.secret)
    router.setsockopt(zmq.ZAP_DOMAIN, gate.domain.encode("utf-8"))
    router.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
    return router


def dial_curve(dealer: S, identity: Identity, server_key: bytes) -> S:
    """Make ``dealer`` (before it connects) a CURVE client with ``identity``'s key pair,
    which completes the handshake only with the holder of ``server_key``'s secret."""
    dealer.setsockopt(zmq.CURVE_SERVERKEY, server_key)
    dealer.setsockopt(zmq.CURVE_PUBLICKEY, identity.public)
    dealer.setsockopt(zmq.CURVE_SECRETKEY, identity.secret)
    return dealer


def sender_name(frame: zmq.Frame) -> str | None:
    """The replica name the connection that delivered ``frame`` authenticated as (its
    ZeroMQ ``User-Id``; receive with ``copy=False`` to get frames), or ``None`` on a
    socket without authentication."""
    try:
        name = frame.get(USER_ID)
    except zmq.ZMQError:  # no such property: the connection was not authenticated
        return None
    return name if isinstance(name, str) and name else None


def drop_connections(router: zmq.Socket[Any], endpoint: str) -> None:
    """Close every connection ``router`` accepted at ``endpoint`` (where it really bound,
    e.g. its ``LAST_ENDPOINT``), by unbinding and binding it again: each client must
    then pass the gate again. Frames in flight are lost (anti-entropy repairs them).

    ZeroMQ closes the old listener in its I/O thread, after ``unbind`` returns, so the
    bind is retried until the port is free (for up to ``REBIND_ATTEMPTS`` pauses of
    ``REBIND_PAUSE`` seconds; a ``ZMQError`` after that, or if another process took the
    port meanwhile).
    """
    router.unbind(endpoint)
    for _ in range(REBIND_ATTEMPTS - 1):
        try:
            router.bind(endpoint)
            return
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EADDRINUSE:
                raise
            time.sleep(REBIND_PAUSE)
    router.bind(endpoint)


def parse_peer(peer: str) -> tuple[str | None, str]:
    """``"NAME@ENDPOINT"`` -> ``(NAME, ENDPOINT)``; a bare endpoint -> ``(None, ENDPOINT)``.

    Raises:
        ValueError: a bad name or endpoint.
    """
    name, at, endpoint = peer.partition("@")
    if not at or "://" in name:
        return None, check_endpoint(peer, "peer")
    return check_key_name(name), check_endpoint(endpoint, "peer")


def check_named_peers(peers: object) -> list[tuple[str | None, str]]:
    """The drivers' ``peers`` argument: a list of endpoints, each optionally prefixed with
    the name of the replica there (``"researcher@tcp://10.0.0.5:5555"``), as
    ``(name or None, endpoint)`` pairs.

    Raises:
        ValueError: a str (one endpoint where a list was meant), a bad name or endpoint.
    """
    if isinstance(peers, (str, bytes)):
        raise ValueError(
            f"peers is a list of endpoints, got a {type(peers).__name__}: did you mean [{peers!r}]?"
        )
    if not isinstance(peers, Iterable):
        raise ValueError(f"peers is a list of endpoints, got a {type(peers).__name__}")
    named: list[tuple[str | None, str]] = []
    for peer in peers:
        if not isinstance(peer, str):
            raise ValueError(f"peer endpoint must be a str, got {type(peer).__name__}")
        named.append(parse_peer(peer))
    return named


class Source(IntEnum):
    """Where a binding of a name to an address came from; a stronger one is never
    replaced by a weaker one."""

    HINT = 1
    FIRST_HAND = 2
    PROVED = 3  # a CURVE handshake with this name's server key succeeded at the address
    CONFIGURED = 4


@dataclass(frozen=True)
class _Binding:
    name: str
    source: Source


class PeerKeys:
    """Which server key is at which peer address (see the module docstring).

    >>> keys = PeerKeys({"researcher": b"rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"})
    >>> keys.bind("tcp://127.0.0.1:5555", "researcher", Source.FIRST_HAND)
    True
    >>> keys.server_key("tcp://127.0.0.1:5555")
    b'rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7'
    >>> keys.server_key("tcp://127.0.0.1:6666") is None    # unknown: not dialled
    True
    """

    def __init__(self, trusted: Mapping[str, bytes]) -> None:
        self._trusted = dict(trusted)
        self._bindings: dict[str, _Binding] = {}

    def reload(self, trusted: Mapping[str, bytes]) -> None:
        """Trust ``trusted``: addresses bound to a name no longer trusted have no key."""
        self._trusted = dict(trusted)

    @property
    def trusted(self) -> dict[str, bytes]:
        """The trusted keys now (name -> Z85 public key; a copy)."""
        return dict(self._trusted)

    def source_at(self, address: str) -> Source | None:
        """Where the binding of ``address`` came from, or ``None`` if it has none."""
        current = self._bindings.get(address)
        return current.source if current is not None else None

    def bind(self, address: str, name: str, source: Source) -> bool:
        """Bind ``address`` to ``name``; returns whether the binding changed. A weaker
        source than the current binding's is ignored; a change of name is logged."""
        current = self._bindings.get(address)
        if current is not None and (current.source > source or current.name == name):
            if current.name == name and source > current.source:
                self._bindings[address] = _Binding(name, source)
            return False
        if current is None and len(self._bindings) >= MAX_PEERS_LEARNED:
            return False  # as many as a node gossips with; the rest stay unknown
        if current is not None:
            logger.warning(
                "peer address %s: was %r, now %r (%s)", address, current.name, name, source.name
            )
        self._bindings[address] = _Binding(check_key_name(name), source)
        return True

    def forget(self, address: str) -> None:
        """Drop the binding of ``address`` unless it was configured."""
        current = self._bindings.get(address)
        if current is not None and current.source != Source.CONFIGURED:
            del self._bindings[address]

    def name_at(self, address: str) -> str | None:
        """The name bound to ``address``, trusted or not, or ``None``."""
        current = self._bindings.get(address)
        return current.name if current is not None else None

    def server_key(self, address: str) -> bytes | None:
        """The Z85 server key to dial ``address`` with, or ``None``: no name is bound to
        it, or its name is not trusted (revoked): do not dial it."""
        name = self.name_at(address)
        return self._trusted.get(name) if name is not None else None

    def candidates(self, address: str) -> list[tuple[str, bytes]]:
        """The (name, server key) pairs to try at ``address``, in order: the bound one
        alone if its name is trusted; none if it is bound to a name no longer trusted;
        else (an address given without a name) every trusted key, names not yet bound to
        any address first. Dial with one at a time; on a successful handshake
        :meth:`bind` the address with :attr:`Source.PROVED`. Trying a wrong key is safe:
        a CURVE client shows its long-term key only after the server proved it holds the
        secret of the key dialled, so a wrong server learns nothing; it costs one round
        trip per key."""
        current = self._bindings.get(address)
        if current is not None:
            key = self._trusted.get(current.name)
            return [(current.name, key)] if key is not None else []
        placed = {binding.name for binding in self._bindings.values()}
        order = sorted(self._trusted, key=lambda name: (name in placed, name))
        return [(name, self._trusted[name]) for name in order]
