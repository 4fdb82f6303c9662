"""transport.security over real loopback ZeroMQ sockets: a ROUTER made a CURVE server
behind a gate, and DEALERs as clients. Every wait is on a condition with a generous
deadline; every socket and context a test opens is closed by it."""

from __future__ import annotations

import contextlib
import importlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from zmq.utils.monitor import parse_monitor_message

import transport
from crdtmem.keys import Identity, load_identity, load_trusted, write_key_pair
from transport.security import (
    MIN_LIBZMQ,
    Gate,
    PeerKeys,
    Source,
    check_libzmq,
    dial_curve,
    drop_connections,
    parse_peer,
    sender_name,
    serve_curve,
)

DEADLINE = 30.0  # seconds; the waits below normally take milliseconds
FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
NAMES = ("node", "researcher", "analyst", "mallory")


def _identity(folder: Path, name: str) -> Identity:
    public, secret = zmq.curve_keypair()
    write_key_pair(name, folder, public, secret)
    return load_identity(folder / f"{name}.key")


@pytest.fixture
def ids(tmp_path: Path) -> dict[str, Identity]:
    return {name: _identity(tmp_path / "keys", name) for name in NAMES}


@pytest.fixture
def context() -> Iterator[zmq.Context[Any]]:
    ctx: zmq.Context[Any] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def trusted(ids: dict[str, Identity], *names: str) -> dict[str, bytes]:
    return {name: ids[name].public for name in names}


class Server:
    """A CURVE ROUTER behind a gate, with a monitor of failed handshakes."""

    def __init__(
        self, context: zmq.Context[Any], identity: Identity, gate: Gate, handshake_ms: int = 0
    ) -> None:
        self.router: zmq.Socket[bytes] = serve_curve(context.socket(zmq.ROUTER), identity, gate)
        self.router.setsockopt(zmq.LINGER, 0)
        if handshake_ms:
            self.router.setsockopt(zmq.HANDSHAKE_IVL, handshake_ms)
        self.monitor = self.router.get_monitor_socket(FAILED)
        self.router.bind("tcp://127.0.0.1:0")
        self.endpoint = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        self.failures = 0
        self.received: list[tuple[bytes, str | None]] = []

    def close(self) -> None:
        self.router.disable_monitor()
        self.monitor.close(linger=0)
        self.router.close(linger=0)

    def pump(self, timeout_ms: int = 50) -> None:
        """Read what has arrived: messages (payload, User-Id) and failed handshakes."""
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.monitor, zmq.POLLIN)
        for sock, _ in poller.poll(timeout_ms):
            if sock is self.router:
                while self.router.poll(0):
                    frames = self.router.recv_multipart(copy=False)
                    self.received.append((frames[-1].bytes, sender_name(frames[-1])))
            else:
                while self.monitor.poll(0):
                    parse_monitor_message(self.monitor.recv_multipart())
                    self.failures += 1

    def wait(self, condition: Any) -> None:
        deadline = time.monotonic() + DEADLINE
        while not condition():
            if time.monotonic() > deadline:
                pytest.fail(f"condition not met in {DEADLINE} s; received {self.received}")
            self.pump()


def client(
    context: zmq.Context[Any], endpoint: str, identity: Identity | None, server_key: bytes | None
) -> zmq.Socket[bytes]:
    dealer: zmq.Socket[bytes] = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.setsockopt(zmq.RECONNECT_IVL, 50)
    if identity is not None and server_key is not None:
        dial_curve(dealer, identity, server_key)
    dealer.connect(endpoint)
    return dealer


def offer(dealer: zmq.Socket[bytes], payload: bytes) -> None:
    """Send without blocking: a DEALER whose only connection was refused at the
    handshake has no pipe left, and a blocking send would wait for ever."""
    with contextlib.suppress(zmq.Again):
        dealer.send(payload, zmq.NOBLOCK)


@pytest.fixture
def server(context: zmq.Context[Any], ids: dict[str, Identity]) -> Iterator[tuple[Server, Gate]]:
    gate = Gate.open(context, trusted(ids, "researcher", "analyst"))
    srv = Server(context, ids["node"], gate)
    yield srv, gate
    srv.close()
    gate.close()


def test_trusted_key_delivers_under_its_name(
    context: zmq.Context[Any], ids: dict[str, Identity], server: tuple[Server, Gate]
) -> None:
    srv, gate = server
    dealers = [
        client(context, srv.endpoint, ids[name], ids["node"].public)
        for name in ("researcher", "analyst")
    ]
    try:
        dealers[0].send(b"from researcher")
        dealers[1].send(b"from analyst")
        srv.wait(lambda: len(srv.received) == 2)
    finally:
        for dealer in dealers:
            dealer.close(linger=0)
    assert sorted(srv.received) == [
        (b"from analyst", "analyst"),
        (b"from researcher", "researcher"),
    ]
    assert gate.admitted == 2 and gate.refused == 0


@pytest.mark.parametrize("attacker", ["untrusted", "no-keys", "plain", "impostor", "wrong-server"])
def test_strangers_deliver_nothing(
    context: zmq.Context[Any],
    ids: dict[str, Identity],
    server: tuple[Server, Gate],
    tmp_path: Path,
    attacker: str,
) -> None:
    """Each attacker's handshake fails (seen on the server's monitor); a trusted client
    connecting afterwards still gets through, and nothing else ever arrives."""
    srv, gate = server
    node = ids["node"].public
    if attacker == "untrusted":  # a valid key pair that is not trusted
        bad = client(context, srv.endpoint, ids["mallory"], node)
    elif attacker == "no-keys":  # NULL mechanism: plain text
        bad = client(context, srv.endpoint, None, None)
    elif attacker == "plain":  # PLAIN mechanism: a user name and password
        bad = context.socket(zmq.DEALER)
        bad.setsockopt(zmq.LINGER, 0)
        bad.plain_username = b"researcher"
        bad.plain_password = b"guess"
        bad.connect(srv.endpoint)
    elif attacker == "impostor":  # claims researcher's public key without its secret
        fake = Identity("researcher", ids["researcher"].public, ids["mallory"].secret)
        bad = client(context, srv.endpoint, fake, node)
    else:  # a key of its own named like a trusted replica, in a .pub it wrote itself
        forged = _identity(tmp_path / "forged", "researcher")
        bad = client(context, srv.endpoint, forged, node)
    honest = None
    try:
        for number in range(3):
            offer(bad, b"attack %d" % number)
        srv.wait(lambda: srv.failures >= 1)
        honest = client(context, srv.endpoint, ids["analyst"], node)
        honest.send(b"honest")
        srv.wait(lambda: len(srv.received) >= 1)
        srv.pump()
    finally:
        bad.close(linger=0)
        if honest is not None:
            honest.close(linger=0)
    assert srv.received == [(b"honest", "analyst")]
    if attacker in ("untrusted", "wrong-server"):
        assert gate.refused >= 1  # the gate saw the key and refused it


def test_a_wrong_server_key_fails_on_the_client_and_a_right_one_succeeds(
    context: zmq.Context[Any], ids: dict[str, Identity], server: tuple[Server, Gate]
) -> None:
    """Dialling a peer given without a name: each trusted key in turn. A key that is not
    the server's fails the handshake (the server never sees the client's key: the gate
    is not even asked); the server's own key succeeds, and the address is then proved."""
    srv, gate = server
    keys = PeerKeys(trusted(ids, "researcher", "node"))
    keys.bind("tcp://127.0.0.1:1", "node", Source.HINT)  # so the wrong key is tried first
    tried = []
    proved = None
    for name, server_key in keys.candidates(srv.endpoint):
        tried.append(name)
        dealer = client(context, srv.endpoint, ids["analyst"], server_key)
        monitor = dealer.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | FAILED)
        try:
            assert monitor.poll(int(DEADLINE * 1000)), "no handshake outcome"
            event = parse_monitor_message(monitor.recv_multipart())["event"]
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                proved = name
                offer(dealer, b"proved")
                srv.wait(lambda: len(srv.received) == 1)
                break
        finally:
            dealer.disable_monitor()
            monitor.close(linger=0)
            dealer.close(linger=0)
    assert tried == ["researcher", "node"]
    assert proved == "node" and gate.refused == 0
    assert keys.bind(srv.endpoint, proved, Source.PROVED)
    assert srv.received == [(b"proved", "analyst")]


def test_a_null_server_in_the_gates_domain_is_refused(
    context: zmq.Context[Any], ids: dict[str, Identity]
) -> None:
    """A ROUTER that forgot serve_curve but names the gate's ZAP domain: the gate refuses
    NULL (and any mechanism other than CURVE)."""
    with Gate.open(context, trusted(ids, "researcher")) as gate:
        router: zmq.Socket[bytes] = context.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.ZAP_DOMAIN, gate.domain.encode())
        port = router.bind_to_random_port("tcp://127.0.0.1")
        dealer = client(context, f"tcp://127.0.0.1:{port}", None, None)
        try:
            offer(dealer, b"plain text")
            deadline = time.monotonic() + DEADLINE
            while gate.refused == 0 and time.monotonic() < deadline:
                assert not router.poll(20)
            assert gate.refused >= 1
            assert not router.poll(0)
        finally:
            dealer.close(linger=0)
            router.close(linger=0)
    assert gate.decide("127.0.0.1", b"PLAIN", [b"researcher", b"pw"]) is None
    assert gate.decide("127.0.0.1", b"CURVE", [b"x", b"y"]) is None


def test_fails_closed_without_a_zap_handler(
    context: zmq.Context[Any], ids: dict[str, Identity]
) -> None:
    """Once the gate (and with it the context's ZAP handler) is closed, libzmq refuses
    every client, trusted or not, instead of admitting any."""
    gate = Gate.open(context, trusted(ids, "researcher"))
    # A ZAP request sent as the handler stops may go unanswered: the handshake then
    # fails when HANDSHAKE_IVL runs out (30 s by default, shortened here).
    srv = Server(context, ids["node"], gate, handshake_ms=500)
    gate.close()
    assert gate.closed
    dealer = client(context, srv.endpoint, ids["researcher"], ids["node"].public)
    try:
        offer(dealer, b"after close")
        srv.wait(lambda: srv.failures >= 1)
        srv.pump()
    finally:
        dealer.close(linger=0)
        srv.close()
    assert srv.received == []
    unused: zmq.Socket[bytes] = context.socket(zmq.ROUTER)
    try:
        with pytest.raises(ValueError, match="closed"):
            serve_curve(unused, ids["node"], gate)
    finally:
        unused.close(linger=0)


def test_revocation_locks_out_at_reconnect(
    context: zmq.Context[Any], ids: dict[str, Identity], server: tuple[Server, Gate]
) -> None:
    srv, gate = server
    node = ids["node"].public
    analyst = client(context, srv.endpoint, ids["analyst"], node)
    researcher = client(context, srv.endpoint, ids["researcher"], node)
    try:
        analyst.send(b"before")
        researcher.send(b"before")
        srv.wait(lambda: len(srv.received) == 2)
        gate.reload(trusted(ids, "researcher"))
        assert gate.names == {"researcher"}
        # ZAP runs once per connection: the open one still delivers, under its name.
        analyst.send(b"open connection")
        srv.wait(lambda: len(srv.received) == 3)
        assert srv.received[-1] == (b"open connection", "analyst")
        # Cut every connection: researcher passes the gate again, analyst is refused.
        drop_connections(srv.router, srv.endpoint)
        srv.wait(lambda: gate.refused >= 1)
        for _ in range(3):
            offer(analyst, b"after")
        researcher.send(b"after")
        srv.wait(lambda: len(srv.received) == 4)
        srv.pump()
    finally:
        analyst.close(linger=0)
        researcher.close(linger=0)
    assert srv.received[3:] == [(b"after", "researcher")]


def test_a_new_key_is_admitted_after_reload(
    context: zmq.Context[Any], ids: dict[str, Identity], server: tuple[Server, Gate]
) -> None:
    """A refused client does not retry on its own (libzmq ends a connection refused at
    the handshake for good): once trusted, it is admitted on its next new connection."""
    srv, gate = server
    refused = client(context, srv.endpoint, ids["mallory"], ids["node"].public)
    admitted = None
    try:
        srv.wait(lambda: gate.refused >= 1)
        gate.reload(trusted(ids, "researcher", "analyst", "mallory"))
        admitted = client(context, srv.endpoint, ids["mallory"], ids["node"].public)
        admitted.send(b"welcome")
        srv.wait(lambda: len(srv.received) == 1)
    finally:
        refused.close(linger=0)
        if admitted is not None:
            admitted.close(linger=0)
    assert srv.received == [(b"welcome", "mallory")]


def test_gates_share_the_zap_handler_of_their_context(
    context: zmq.Context[Any], ids: dict[str, Identity]
) -> None:
    """Two nodes in one process and context: each gate admits its own trusted keys."""
    with (
        Gate.open(context, trusted(ids, "researcher")) as first,
        Gate.open(context, trusted(ids, "analyst")) as second,
    ):
        assert first.domain != second.domain
        a, b = Server(context, ids["node"], first), Server(context, ids["mallory"], second)
        dealers = [
            client(context, a.endpoint, ids["analyst"], ids["node"].public),
            client(context, b.endpoint, ids["analyst"], ids["mallory"].public),
        ]
        try:
            for dealer in dealers:
                offer(dealer, b"hi")
            b.wait(lambda: len(b.received) == 1)
            a.wait(lambda: a.failures >= 1)
            a.pump()
        finally:
            for dealer in dealers:
                dealer.close(linger=0)
            a.close()
            b.close()
        assert a.received == [] and b.received == [(b"hi", "analyst")]


def test_sender_name_without_authentication(context: zmq.Context[Any]) -> None:
    router: zmq.Socket[bytes] = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer = client(context, f"tcp://127.0.0.1:{port}", None, None)
    try:
        dealer.send(b"x")
        assert router.poll(int(DEADLINE * 1000))
        frames = router.recv_multipart(copy=False)
        assert sender_name(frames[-1]) is None
    finally:
        dealer.close(linger=0)
        router.close(linger=0)


def test_two_names_for_one_key_are_refused(ids: dict[str, Identity]) -> None:
    with pytest.raises(ValueError, match="one key"):
        Gate({"a": ids["node"].public, "b": ids["node"].public}, "d")


def test_peer_keys_bindings(ids: dict[str, Identity], tmp_path: Path) -> None:
    keys = PeerKeys(load_trusted(tmp_path / "keys"))
    name, address = parse_peer("researcher@tcp://127.0.0.1:5555")
    assert name is not None
    assert keys.bind(address, name, Source.CONFIGURED)
    # Nothing learned replaces a configured name.
    assert not keys.bind(address, "mallory", Source.FIRST_HAND)
    keys.forget(address)
    assert keys.server_key(address) == ids["researcher"].public
    # First-hand beats a hint; a later first-hand claim replaces an earlier one.
    other = "tcp://127.0.0.1:6000"
    assert keys.bind(other, "analyst", Source.HINT)
    assert keys.bind(other, "mallory", Source.FIRST_HAND)
    assert not keys.bind(other, "analyst", Source.HINT)
    assert keys.bind(other, "analyst", Source.FIRST_HAND)
    assert keys.server_key(other) == ids["analyst"].public
    # Revoked: no key, so the address is not dialled.
    keys.reload(trusted(ids, "researcher"))
    assert keys.server_key(other) is None
    assert keys.name_at(other) == "analyst"
    assert keys.candidates(other) == []  # bound to a revoked name: not dialled at all
    keys.forget(other)
    assert keys.name_at(other) is None
    # A peer given without a name: every trusted key, names placed elsewhere last.
    keys.reload(load_trusted(tmp_path / "keys"))
    unnamed = "tcp://127.0.0.1:7000"
    assert [name for name, _ in keys.candidates(unnamed)] == [
        "analyst",
        "mallory",
        "node",
        "researcher",
    ]
    assert keys.bind(unnamed, "node", Source.PROVED)
    assert not keys.bind(unnamed, "mallory", Source.FIRST_HAND)
    assert keys.candidates(unnamed) == [("node", ids["node"].public)]
    with pytest.raises(ValueError):
        parse_peer("../x@tcp://127.0.0.1:5555")
    with pytest.raises(ValueError):
        parse_peer("researcher@tcp://127.0.0.1:99999")


@pytest.mark.parametrize("version", ["4.3.2", "4.2.5", "3.2.6", "4.3", "garbage", ""])
def test_old_libzmq_is_refused(version: str) -> None:
    with pytest.raises(ImportError, match=r"CVE-2019-13132 and CVE-2020-15166"):
        check_libzmq(version)


def test_libzmq_here_is_new_enough() -> None:
    assert check_libzmq() >= MIN_LIBZMQ
    assert check_libzmq("4.3.3") == (4, 3, 3)
    assert check_libzmq("5.0.0") == (5, 0, 0)


def test_import_of_transport_refuses_an_old_libzmq(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zmq, "zmq_version", lambda: "4.3.2")
    with pytest.raises(ImportError, match=r"libzmq 4\.3\.2 is too old"):
        importlib.reload(transport)
    monkeypatch.undo()
    importlib.reload(transport)  # the package is whole again for the other tests
    assert transport.ZmqGossip is transport.zmq_gossip.ZmqGossip
