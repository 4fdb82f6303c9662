"""The blackboard demo: three agent processes share memory over ZeroMQ on this machine.

A researcher, an analyst and a writer each run in their own process with their own
replica, gossiping over loopback. They write findings, sources, votes, a summary and a
shared draft, concurrently. Then the analyst is cut off from the network, keeps
working offline, and rejoins; the demo shows the memory converging and how long it took.

Security is on: the orchestrator makes a key pair per agent in a temporary folder (what
``python -m crdtmem keygen NAME --dir DIR`` does), and every agent gossips over CURVE,
trusting only the three public keys; each connection speaks only for its agent.

Run it with ``make demo`` (or ``python -m examples.blackboard``).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import zmq
from rich.console import Console
from rich.table import Table

from crdtmem import Replica
from crdtmem.keys import write_key_pair
from transport import ZmqGossip
from transport.loopback import free_loopback_addresses as free_addresses

AGENTS = ("researcher", "analyst", "writer")
console = Console()


# --- what each agent does (runs inside its own process) ---------------------------------


def work(role: str, memory: Replica, round_: int) -> None:
    """One round of an agent's work on the shared blackboard."""
    findings, votes, draft = memory.list("findings"), memory.map("votes"), memory.text("draft")
    if role == "researcher":
        findings.append(f"finding {round_}.1: GDP growth at {7 + round_ / 10:.1f}%")
        findings.append(f"finding {round_}.2: exports up {round_ * 3}%")
        if round_ > 1:
            findings.delete(0)  # retract the oldest finding: superseded
        memory.set("sources").add(f"https://stats.example/report-{round_}")
        votes.counter("publish").increment()
    elif role == "analyst":
        memory.register("summary").set(f"summary v{round_}: growth is broad-based")
        memory.set("sources").add(f"https://data.example/series-{round_}")
        votes.counter("publish").increment()
        votes.counter("revise").increment(round_)
        memory.mvregister("status").set(f"analysed round {round_}")
    else:
        draft.insert(len(draft), f"Section {round_}. The economy grew. ")
        draft.insert(0, "» " if round_ == 1 else "")
        votes.counter("publish").increment()
        memory.mvregister("status").set(f"drafted round {round_}")
    memory.counter("rounds_done").increment()


def agent(role: str, bind: str, peers: list[str], keys: str, commands: Connection) -> None:
    """An agent process: obeys the orchestrator's commands, gossiping all the while,
    over CURVE with its own key (``keys/ROLE.key``), trusting the keys in ``keys``."""
    memory = Replica(role)
    identity = f"{keys}/{role}.key"
    gossip: ZmqGossip | None = ZmqGossip(
        memory, bind=bind, peers=peers, interval=0.2, identity=identity, trusted=keys
    ).start()
    try:
        while True:
            command, argument = commands.recv()
            if command == "work":
                work(role, memory, argument)
            elif command == "cut":
                assert gossip is not None
                gossip.stop()
                gossip = None
            elif command == "rejoin":
                gossip = ZmqGossip(
                    memory, bind=bind, peers=peers, interval=0.2, identity=identity, trusted=keys
                ).start()
            elif command == "state":
                commands.send((memory.value(), memory.version()))
                continue
            elif command == "stats":
                commands.send(memory.stats())
                continue
            elif command == "stop":
                commands.send("stopped")
                return
            commands.send("ok")
    finally:
        if gossip is not None:
            gossip.stop()


# --- the orchestrator ---------------------------------------------------------------------


class Orchestrator:
    def __init__(self) -> None:
        self.addresses = dict(zip(AGENTS, free_addresses(len(AGENTS)), strict=True))
        self.links: dict[str, Connection] = {}
        self.processes: list[mp.process.BaseProcess] = []
        # One key pair per agent (a real deployment runs keygen on each agent's machine
        # and copies only the .pub files); removed with the folder when the demo ends.
        self.keys = tempfile.TemporaryDirectory(prefix="crdtmem-demo-keys-")
        for role in AGENTS:
            public, secret = zmq.curve_keypair()
            write_key_pair(role, self.keys.name, public, secret)
        context = mp.get_context("spawn")
        for role, bind in self.addresses.items():
            mine, theirs = context.Pipe()
            # Each peer named: the key to dial it with is known before any handshake.
            peers = [f"{r}@{a}" for r, a in self.addresses.items() if r != role]
            arguments = (role, bind, peers, self.keys.name, theirs)
            process = context.Process(target=agent, args=arguments, daemon=True)
            process.start()
            self.links[role], self.processes = mine, [*self.processes, process]

    def ask(self, role: str, command: str, argument: Any = None) -> Any:
        self.links[role].send((command, argument))
        if not self.links[role].poll(30):
            raise TimeoutError(f"{role} did not answer {command!r}")
        return self.links[role].recv()

    def states(self, roles: tuple[str, ...] = AGENTS) -> dict[str, tuple[Any, Any]]:
        return {role: self.ask(role, "state") for role in roles}

    def wait_converged(self, timeout: float = 20.0) -> float:
        """Seconds until every agent holds the same memory (polled every 20 ms)."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            states = list(self.states().values())
            if all(s == states[0] for s in states):
                return time.monotonic() - start
            time.sleep(0.02)
        raise TimeoutError("agents did not converge")

    def wait_collected(self, timeout: float = 20.0) -> dict[str, dict[str, int]]:
        """Every agent's stats once none holds a deleted list element any more."""
        deadline = time.monotonic() + timeout
        while True:
            stats = {role: self.ask(role, "stats") for role in AGENTS}
            if all(s["list_tombstones"] == 0 for s in stats.values()):
                return stats
            if time.monotonic() > deadline:
                raise TimeoutError("retracted findings were not collected")
            time.sleep(0.05)

    def stop(self) -> None:
        for role in AGENTS:
            # an agent that already died is killed below
            with contextlib.suppress(TimeoutError, OSError, EOFError):
                self.ask(role, "stop")
        for process in self.processes:
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join(5)
        self.keys.cleanup()


def show(title: str, memory: dict[str, Any], version: dict[str, int]) -> None:
    table = Table(title=title, show_lines=False)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    for name, value in memory.items():
        if isinstance(value, (list, frozenset)) and len(value) > 4:
            shown = f"{len(value)} items, e.g. {sorted(map(str, value))[:2]}"
        else:
            shown = repr(sorted(value) if isinstance(value, frozenset) else value)
        table.add_row(name, shown[:160])
    table.add_row("[dim]version vector[/dim]", f"[dim]{version}[/dim]")
    console.print(table)


def step(message: str, action: Callable[[], Any]) -> Any:
    with console.status(message):
        result = action()
    console.print(f"[green]✓[/green] {message}")
    return result


def main() -> int:
    started = time.monotonic()
    console.rule("[bold]crdtmem: three agents, one shared memory, over ZeroMQ (CURVE)")
    orchestra = step("starting researcher, analyst and writer processes", Orchestrator)
    console.print(
        "  security on: every connection is CURVE-encrypted and authenticated; each agent "
        "trusts only the three public keys (made for this run in a temporary folder)"
    )
    try:
        for role in AGENTS:
            orchestra.ask(role, "state")  # every process is up and bound
        for role in AGENTS:
            orchestra.ask(role, "work", 1)
        seconds = step("round 1: all three write concurrently", orchestra.wait_converged)
        console.print(f"  converged in {seconds * 1000:.0f} ms")

        orchestra.ask("analyst", "cut")
        console.print("[yellow]✂ the analyst is cut off from the network[/yellow]")
        for round_ in (2, 3):
            for role in AGENTS:
                orchestra.ask(role, "work", round_)
        time.sleep(0.5)
        states = orchestra.states()
        diverged = states["analyst"] != states["researcher"]
        console.print(
            f"  rounds 2-3 written on both sides; analyst sees version "
            f"{states['analyst'][1]}, researcher sees {states['researcher'][1]}"
            + (" [red](diverged, as expected)[/red]" if diverged else "")
        )

        orchestra.ask("analyst", "rejoin")
        heal_started = time.monotonic()
        step("the analyst rejoins; waiting for convergence", orchestra.wait_converged)
        healed = time.monotonic() - heal_started
        console.print(f"  [bold]converged {healed * 1000:.0f} ms after the partition healed[/bold]")

        final = orchestra.states()
        memory, version = final["writer"]
        show("shared memory, identical in all three processes", memory, version)
        ok = all(state == final["writer"] for state in final.values())
        stats = step(
            "waiting until every agent has collected the retracted findings",
            orchestra.wait_collected,
        )
        console.print(
            "  deleted list items collected once every agent had seen the deletes: "
            + ", ".join(f"{role} {s['list_collected']}" for role, s in stats.items())
            + "; tombstones held: 0"
        )
        votes = memory["votes"]["publish"]
        console.print(
            f"all three agree: [bold]{ok}[/bold]; publish votes {votes} (9 cast, none lost); "
            f"total demo time {time.monotonic() - started:.1f} s"
        )
        return 0 if ok and votes == 9 else 1
    finally:
        orchestra.stop()


if __name__ == "__main__":
    sys.exit(main())
