"""Both ZeroMQ drivers over CURVE (issue 11): a secured group converges; strangers (no
keys, an untrusted key, raw NULL sockets) and a member forging another replica's id read
nothing and write nothing, and are counted and logged; revocation; safe-by-default binds.

Real sockets on 127.0.0.1 only, in-process drivers plus two subprocess intruders. Every
wait is a condition with a generous deadline; every driver, socket and process a test
starts, it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from crdtmem import Replica
from crdtmem.gossip import GossipNode
from crdtmem.keys import Identity, load_identity, write_key_pair
from tests.test_async_gossip import until
from transport import AsyncZmqGossip, ZmqGossip
from transport.loopback import free_loopback_addresses as addresses
from transport.security import dial_curve

DEADLINE = 30.0  # seconds; the waits below normally take milliseconds
ROOT = Path(__file__).resolve().parent.parent
INTRUDER = str(Path(__file__).with_name("intruder_agent.py"))
FAST: dict[str, Any] = {"interval": 0.05}


def wait_until(condition: Callable[[], bool], timeout: float = DEADLINE) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def keygen(folder: Path, name: str) -> Identity:
    public, secret = zmq.curve_keypair()
    write_key_pair(name, folder, public, secret)
    return load_identity(folder / f"{name}.key")


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    """keys/: the key pairs of researcher, analyst, writer and mallory (members) and
    eve (a stranger); trusted/: the public keys of the members only."""
    folder = tmp_path / "keys"
    for name in ("researcher", "analyst", "writer", "mallory", "eve"):
        keygen(folder, name)
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    for name in ("researcher", "analyst", "writer", "mallory"):
        (trusted / f"{name}.pub").write_bytes((folder / f"{name}.pub").read_bytes())
    return tmp_path


def secured(keys: Path, name: str) -> dict[str, Any]:
    return {"identity": keys / "keys" / f"{name}.key", "trusted": keys / "trusted"}


@contextlib.contextmanager
def running(*gossips: ZmqGossip) -> Iterator[None]:
    started: list[ZmqGossip] = []
    try:
        for gossip in gossips:
            started.append(gossip.start())
        yield
    finally:
        for gossip in started:
            gossip.stop()


def test_a_secured_pair_converges_with_writes_made_before_any_handshake(keys: Path) -> None:
    a, b = Replica("researcher"), Replica("analyst")
    one, two = addresses(2)
    ga = ZmqGossip(a, bind=one, peers=[f"analyst@{two}"], **FAST, **secured(keys, "researcher"))
    gb = ZmqGossip(b, bind=two, peers=[f"researcher@{one}"], **FAST, **secured(keys, "analyst"))
    assert ga.secured and gb.secured
    with running(ga, gb):
        a.counter("votes").increment()  # right after start: no handshake yet
        b.counter("votes").increment(2)
        b.text("draft").insert(0, "hello")
        assert wait_until(lambda: a.value() == b.value() and a.counter("votes").value == 3)
        stats = ga.stats
    assert stats["impersonations"] == 0 and stats["unauthenticated"] == 0
    assert stats["handshakes_failed"] == 0 and stats["handshakes_refused"] == 0


class RawClient:
    """A DEALER that sends hand-made gossip frames (NULL, or CURVE with some key), and
    a plain ROUTER at the address its frames claim, where answers would arrive."""

    def __init__(
        self,
        context: zmq.Context[Any],
        target: str,
        claimed: str,
        replica: Replica,
        curve: tuple[Identity, bytes] | None,
        *,
        inbox: bool = True,
    ) -> None:
        self.node = GossipNode(replica, claimed, peers=[target])
        self.inbox: zmq.Socket[bytes] = context.socket(zmq.ROUTER)
        self.inbox.setsockopt(zmq.LINGER, 0)
        if inbox:  # (not when the claimed address is another node's)
            self.inbox.bind(claimed)
        self.dealer: zmq.Socket[bytes] = context.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            dial_curve(self.dealer, *curve)
        self.dealer.connect(target)

    def attack(self) -> None:
        """One attempt to read (a SYNC: "send me what I lack") and one to write (a PUSH)."""
        self.node.replica.register("forged").set("by an attacker")
        frames = [*self.node.flush(0.0), *self.node.tick(0.0)]
        for frame in frames:
            with contextlib.suppress(zmq.Again):  # refused at the handshake: no pipe
                self.dealer.send(frame.data, zmq.NOBLOCK)

    def answers(self) -> int:
        count = 0
        while self.inbox.poll(0):
            self.inbox.recv_multipart()
            count += 1
        while self.dealer.poll(0):
            self.dealer.recv_multipart()
            count += 1
        return count

    def close(self) -> None:
        self.dealer.close(linger=0)
        self.inbox.close(linger=0)


def intruder(
    name: str, bind: str, peers: list[str], key: Path | None, trusted: Path | None
) -> subprocess.Popen[str]:
    command = [sys.executable, INTRUDER, name, bind, *peers]
    if key is not None and trusted is not None:
        command += ["--key", str(key), "--trusted", str(trusted)]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()  # bounded by the process: it prints or dies
    assert line.strip() == "READY", line
    return process


def finish(process: subprocess.Popen[str]) -> list[str]:
    """Close the intruder's stdin and read the fields it held."""
    try:
        out, _ = process.communicate(input="", timeout=DEADLINE)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(DEADLINE)
    said = [line for line in out.splitlines() if line.startswith("SAW ")]
    assert said, out
    fields: list[str] = __import__("json").loads(said[-1][4:])
    return fields


def test_strangers_and_an_impostor_read_nothing_and_write_nothing(
    keys: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Against two honest nodes, one holding a secret: a process without keys, a process
    with an untrusted key, a raw NULL socket and a member (mallory, a valid key) whose
    frames claim to be researcher, each send SYNCs (asking for state) and PUSHes."""
    caplog.set_level(logging.WARNING)
    a, b = Replica("researcher"), Replica("analyst")
    a.register("api_key").set("sk-secret")
    one, two, nokeys, eve, null_inbox, forged_inbox = addresses(6)
    ga = ZmqGossip(a, bind=one, peers=[two], **FAST, **secured(keys, "researcher"))
    gb = ZmqGossip(b, bind=two, peers=[one], **FAST, **secured(keys, "analyst"))
    context: zmq.Context[Any] = zmq.Context()
    clients: list[RawClient] = []
    processes: list[subprocess.Popen[str]] = []
    try:
        with running(ga, gb):
            assert wait_until(lambda: b.value().get("api_key") == "sk-secret")
            processes.append(intruder("nokeys", nokeys, [one, two], None, None))
            processes.append(
                intruder("eve", eve, [one, two], keys / "keys" / "eve.key", keys / "trusted")
            )
            mallory = load_identity(keys / "keys" / "mallory.key")
            server = load_identity(keys / "keys" / "researcher.key").public
            clients.append(RawClient(context, one, null_inbox, Replica("eve-null"), None))
            clients.append(
                RawClient(context, one, forged_inbox, Replica("researcher"), (mallory, server))
            )

            def attempts_seen() -> bool:
                for client in clients:
                    client.attack()
                sa, sb = ga.stats, gb.stats
                return (
                    sa["handshakes_failed"] >= 2  # NULL intruder, raw NULL (and eve)
                    and sb["handshakes_failed"] >= 1
                    and sa["handshakes_refused"] >= 1  # eve's key, refused by the gate
                    and sb["handshakes_refused"] >= 1
                    and sa["impersonations"] >= 2  # mallory's SYNC and PUSH
                )

            assert wait_until(attempts_seen), (ga.stats, gb.stats)
            # The honest pair still converges, and nothing of the attackers got in.
            b.counter("after").increment()
            assert wait_until(lambda: a.value() == b.value() and "after" in a.value())
            seen = {**a.value(), **b.value()}
            assert "intruder" not in seen and "forged" not in seen
            assert "attempts" not in seen
            node = ga.node
            assert node is not None
            assert forged_inbox not in node.peers and null_inbox not in node.peers
            assert nokeys not in node.peers and eve not in node.peers
            assert [client.answers() for client in clients] == [0, 0]
            saw = [finish(process) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(DEADLINE)
        for client in clients:
            client.close()
        context.destroy(linger=0)
    for fields in saw:
        assert "api_key" not in fields and "after" not in fields
        assert fields == ["attempts", "intruder"]  # only its own writes
    logged = caplog.text
    assert "refused a connection at its handshake" in logged
    assert "untrusted key" in logged
    assert "refused an impersonation" in logged


def test_revocation_drops_open_connections_and_refuses_reconnects(keys: Path) -> None:
    a, b, m = Replica("researcher"), Replica("analyst"), Replica("mallory")
    one, two, three = addresses(3)
    ga = ZmqGossip(a, bind=one, peers=[two, three], **FAST, **secured(keys, "researcher"))
    gb = ZmqGossip(b, bind=two, peers=[one, three], **FAST, **secured(keys, "analyst"))
    gm = ZmqGossip(m, bind=three, peers=[one, two], **FAST, **secured(keys, "mallory"))
    with running(ga, gb, gm):
        m.counter("before").increment()
        assert wait_until(lambda: a.value() == b.value() == m.value() and "before" in a.value())
        # Every honest node removes mallory's key from its trusted folder and reloads.
        (keys / "trusted" / "mallory.pub").unlink()
        ga.reload_trusted()
        gb.reload_trusted()
        # Mallory's connections are cut; its reconnections are refused by both gates.
        assert wait_until(
            lambda: ga.stats["handshakes_refused"] >= 1 and gb.stats["handshakes_refused"] >= 1
        ), (ga.stats, gb.stats)
        m.counter("after_revocation").increment()
        a.counter("honest").increment()
        assert wait_until(lambda: "honest" in b.value())
        # A later honest write still reaches the other honest node; mallory gets nothing.
        b.counter("later").increment()
        assert wait_until(lambda: "later" in a.value())
        assert "after_revocation" not in a.value() and "after_revocation" not in b.value()
        assert "honest" not in m.value() and "later" not in m.value()
    with pytest.raises(RuntimeError, match="no keys"):
        ZmqGossip(Replica("x"), bind="tcp://127.0.0.1:0").reload_trusted()


def test_a_refused_node_is_admitted_once_its_key_is_trusted(keys: Path) -> None:
    """libzmq never retries a connection refused at the handshake: the driver dials
    again (bounded backoff), so adding a key later lets the node in."""
    a, e = Replica("researcher"), Replica("eve")
    one, two = addresses(2)
    ga = ZmqGossip(a, bind=one, **FAST, **secured(keys, "researcher"))
    everyone = keys / "keys"  # eve trusts every key, itself included
    ge = ZmqGossip(
        e, bind=two, peers=[one], **FAST, identity=everyone / "eve.key", trusted=everyone
    )
    with running(ga, ge):
        e.counter("knock").increment()
        assert wait_until(lambda: ga.stats["handshakes_refused"] >= 1)
        assert "knock" not in a.value()
        ga.reload_trusted([*(keys / "trusted").glob("*.pub"), everyone / "eve.pub"])
        assert wait_until(lambda: "knock" in a.value())


def test_safe_by_default_binds_and_key_checks(keys: Path, caplog: pytest.LogCaptureFixture) -> None:
    wild: dict[str, Any] = {"bind": "tcp://0.0.0.0:0", "advertise": "tcp://127.0.0.1:5999"}
    drivers: list[Any] = [ZmqGossip, AsyncZmqGossip]
    for driver in drivers:
        with pytest.raises(ValueError, match="insecure=True"):
            driver(Replica("researcher"), **wild)
        with pytest.raises(ValueError, match="insecure=True"):
            driver(Replica("researcher"), bind="tcp://10.1.2.3:5555")
        with caplog.at_level(logging.WARNING):
            driver(Replica("researcher"), insecure=True, **wild)
        assert "insecure=True" in caplog.text
        caplog.clear()
        # With keys, any bind (nothing is started here).
        driver(Replica("researcher"), **wild, **secured(keys, "researcher"))
        with pytest.raises(ValueError, match="both"):
            driver(
                Replica("researcher"),
                bind="tcp://127.0.0.1:0",
                identity=keys / "keys" / "researcher.key",
            )
        with pytest.raises(ValueError, match="speaks only for"):
            driver(Replica("analyst"), bind="tcp://127.0.0.1:0", **secured(keys, "researcher"))
        with pytest.raises(ValueError):
            driver(
                Replica("researcher"), bind="tcp://127.0.0.1:0", peers=["../x@tcp://127.0.0.1:5"]
            )
    (keys / "keys" / "researcher.key").chmod(0o644)
    with pytest.raises(PermissionError):
        ZmqGossip(Replica("researcher"), bind="tcp://127.0.0.1:0", **secured(keys, "researcher"))


@pytest.mark.asyncio
async def test_async_secured_nodes_converge_and_refuse_a_stranger(keys: Path) -> None:
    a, b, e = Replica("researcher"), Replica("analyst"), Replica("eve")
    one, two, three = addresses(3)
    ga = AsyncZmqGossip(a, bind=one, peers=[two], **FAST, **secured(keys, "researcher"))
    gb = AsyncZmqGossip(
        b, bind=two, peers=[f"researcher@{one}"], **FAST, **secured(keys, "analyst")
    )
    ge = AsyncZmqGossip(
        e,
        bind=three,
        peers=[one],
        **FAST,
        identity=keys / "keys" / "eve.key",
        trusted=keys / "keys",
    )
    await ga.start()
    try:
        await gb.start()
        try:
            await ge.start()
            try:
                a.counter("votes").increment()
                b.counter("votes").increment()
                e.register("intruder").set("eve")
                assert await until(
                    lambda: a.counter("votes").value == b.counter("votes").value == 2, DEADLINE
                )
                assert await until(lambda: ga.stats["handshakes_refused"] >= 1, DEADLINE)
                b.counter("later").increment()
                assert await until(lambda: "later" in a.value(), DEADLINE)
                assert "intruder" not in a.value() and "votes" not in e.value()
                gb.reload_trusted()  # re-reads the same folder: nothing removed
                b.counter("after_reload").increment()
                assert await until(lambda: "after_reload" in a.value(), DEADLINE)
            finally:
                await ge.stop()
        finally:
            await gb.stop()
    finally:
        await ga.stop()
    await asyncio.sleep(0)


def test_the_contract_line_with_keys_from_the_keygen_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/work/shared/API.md: ``python -m crdtmem keygen researcher --dir keys/`` then
    ``ZmqGossip(r, bind=..., peers=[...], identity="keys/researcher.key",
    trusted="keys/")``: the folder holds the .key files too; only .pub files are read."""
    for name in ("researcher", "analyst"):
        subprocess.run(
            [sys.executable, "-m", "crdtmem", "keygen", name, "--dir", str(tmp_path / "keys")],
            cwd=ROOT,
            check=True,
            timeout=DEADLINE,
            capture_output=True,
        )
    monkeypatch.chdir(tmp_path)
    r, a = Replica("researcher"), Replica("analyst")
    one, two = addresses(2)
    gr = ZmqGossip(
        r, bind=one, peers=[two], identity="keys/researcher.key", trusted="keys/", **FAST
    )
    ga = ZmqGossip(a, bind=two, peers=[one], identity="keys/analyst.key", trusted="keys/", **FAST)
    with running(gr, ga):
        r.register("finding").set("GDP +7%")
        assert wait_until(lambda: a.value().get("finding") == "GDP +7%")


def test_a_member_cannot_claim_another_nodes_address(keys: Path) -> None:
    """Mallory (a valid key, speaking as itself) names researcher's address as its own
    in frames to analyst, who knows that address to be researcher's: refused, counted;
    analyst keeps researcher as the replica there."""
    a, b = Replica("researcher"), Replica("analyst")
    one, two = addresses(2)
    ga = ZmqGossip(a, bind=one, peers=[f"analyst@{two}"], **FAST, **secured(keys, "researcher"))
    gb = ZmqGossip(b, bind=two, peers=[f"researcher@{one}"], **FAST, **secured(keys, "analyst"))
    context: zmq.Context[Any] = zmq.Context()
    mallory = load_identity(keys / "keys" / "mallory.key")
    server = load_identity(keys / "keys" / "analyst.key").public
    client = RawClient(context, two, one, Replica("mallory"), (mallory, server), inbox=False)
    try:
        with running(ga, gb):
            a.counter("x").increment()
            assert wait_until(lambda: "x" in b.value())

            def refused() -> bool:
                client.attack()
                return gb.stats["address_claims"] >= 2

            assert wait_until(refused), gb.stats
            a.counter("y").increment()
            assert wait_until(lambda: "y" in b.value())
            assert "forged" not in b.value()
            node = gb.node
            assert node is not None
            peer = node.peers[one]
            assert peer.replica_id is not None and peer.replica_id.startswith("researcher~")
            assert gb.stats["impersonations"] == 0  # its own name: not an impersonation
    finally:
        client.close()
        context.destroy(linger=0)


def test_the_node_refuses_a_frame_speaking_for_another_name_sans_io() -> None:
    """GossipNode.receive(authenticated=NAME): the check itself, no sockets."""
    victim = GossipNode(Replica("analyst"), "node-a", peers=["node-r"])
    forger = GossipNode(Replica("researcher"), "node-r", peers=["node-a"])
    forger.replica.register("claim").set("forged")
    frames = [f.data for f in [*forger.flush(0.0), *forger.tick(0.0)] if f.peer == "node-a"]
    assert frames
    for data in frames:
        assert victim.receive(data, 0.0, authenticated="mallory") == []
    assert victim.stats["impersonations"] == len(frames)
    assert "claim" not in victim.replica.value()
    peer = victim.peers.get("node-r")
    assert peer is None or peer.replica_id is None  # nothing learned from the forger
    answers = [f for data in frames for f in victim.receive(data, 0.0, authenticated="researcher")]
    assert victim.replica.value()["claim"] == "forged" and answers
    assert victim.stats["impersonations"] == len(frames)  # the honest ones not counted


def test_rotation_a_changed_key_is_a_revoked_one(keys: Path) -> None:
    """docs/security.md, Rotate: analyst gets a new key pair; researcher trusts the new
    public key (reload): the old key's connection is cut and refused; analyst restarted
    with the new key rejoins, and what it wrote meanwhile arrives."""
    a, b = Replica("researcher"), Replica("analyst")
    one, two = addresses(2)
    ga = ZmqGossip(a, bind=one, peers=[f"analyst@{two}"], **FAST, **secured(keys, "researcher"))
    gb = ZmqGossip(b, bind=two, peers=[f"researcher@{one}"], **FAST, **secured(keys, "analyst"))
    with running(ga):
        with running(gb):
            b.counter("old key").increment()
            assert wait_until(lambda: "old key" in a.value())
            new = keys / "new"
            keygen(new, "analyst")
            (keys / "trusted" / "analyst.pub").write_bytes((new / "analyst.pub").read_bytes())
            ga.reload_trusted()
            assert wait_until(lambda: ga.stats["handshakes_refused"] >= 1), ga.stats
            b.counter("meanwhile").increment()
        assert "meanwhile" not in a.value()  # the old key's connections are gone
        rotated = ZmqGossip(
            b,
            bind=two,
            peers=[f"researcher@{one}"],
            identity=new / "analyst.key",
            trusted=keys / "trusted",
            **FAST,
        )
        with running(rotated):
            assert wait_until(lambda: "meanwhile" in a.value())
