"""The scenarios: each drives a :class:`~transport.SimNetwork` through a fault pattern
while agents write, then heals everything and measures how long convergence takes."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from crdtmem import Replica
from transport import SimNetwork


@dataclass
class Options:
    replicas: int = 8
    topology: str = "mesh"
    drop: float = 0.0
    duplicate: float = 0.0
    seed: int = 1
    writes_per_second: float = 20.0
    duration: float = 10.0
    interval: float = 0.5


@dataclass
class Trial:
    """One seeded run: the figures the table and the plot are made from."""

    seed: int
    converged: bool
    convergence_after_heal: float
    updates: int
    messages: int
    bytes: int
    lost_acknowledged_writes: int
    divergence: list[tuple[float, int]] = field(default_factory=list)
    faults: list[tuple[float, float, str]] = field(default_factory=list)


def peers_for(index: int, names: list[str], topology: str, rng: random.Random) -> list[str]:
    others = [n for n in names[:index]]
    if topology == "mesh":
        return others
    if topology == "ring":
        return [names[index - 1]] if index else []
    if topology == "random":
        return rng.sample(others, min(3, len(others))) if others else []
    raise ValueError(f"unknown topology {topology!r} (mesh, ring, random)")


def build(options: Options, seed: int) -> tuple[SimNetwork, list[str]]:
    net = SimNetwork(
        seed,
        drop=options.drop,
        duplicate=options.duplicate,
        interval=options.interval,
        latency=(0.0005, 0.02),
        learn_peers=options.topology == "mesh",
    )
    names = [f"agent{i:02d}" for i in range(options.replicas)]
    rng = random.Random(seed)
    for index, name in enumerate(names):
        skew = rng.uniform(-0.5, 0.5)  # wall clocks disagree; LWW must not care
        net.add_node(name, peers=peers_for(index, names, options.topology, rng), clock_skew=skew)
    if options.topology == "ring" and len(names) > 2:
        net.nodes[names[0]].gossip.add_peer(names[-1])
        net.nodes[names[-1]].gossip.add_peer(names[0])
    return net, names


FaultPlan = Callable[[SimNetwork, list[str], float, random.Random], list[tuple[float, float, str]]]


def run_trial(options: Options, seed: int, faults: FaultPlan) -> Trial:
    """Write at a steady rate while ``faults`` act, then heal and time convergence."""
    net, names = build(options, seed)
    rng = random.Random(seed ^ 0x5EED)
    acknowledged: list[str] = []
    trial = Trial(seed, False, 0.0, 0, 0, 0, 0)
    step = 1.0 / options.writes_per_second
    schedule = faults(net, names, options.duration, rng)
    trial.faults = schedule
    events = [(start, "begin", fault) for start, _, fault in schedule]
    events += [(end, "end", fault) for _, end, fault in schedule]
    apply_fault = _fault_actions(net, names, rng)
    time = 0.0
    pending = sorted(events)
    while time < options.duration:
        while pending and pending[0][0] <= time:
            _, what, fault = pending.pop(0)
            apply_fault(fault, what == "begin")
        writer = rng.choice([n for n in names if net.nodes[n].up] or names)
        if net.nodes[writer].up:
            token = f"{writer}:{trial.updates}"
            roll = rng.random()
            if roll < 0.4:
                acknowledged.append(token)  # checked on every replica at the end
            net.write(writer, _write_action(roll, token))
            trial.updates += 1
        net.run_for(step)
        time += step
        if int(time / 0.1) != int((time - step) / 0.1):
            trial.divergence.append((net.now, net.missing_updates()))
    net.heal()
    for name in names:
        if not net.nodes[name].up:
            net.restart(name, durable=True)
    healed_at = net.now
    deadline = healed_at + 300.0
    while net.now < deadline and not net.converged():
        net.run_for(0.02)
        if int(net.now / 0.1) != int((net.now - 0.02) / 0.1):
            trial.divergence.append((net.now, net.missing_updates()))
    trial.converged = net.converged()
    trial.divergence.append((net.now, net.missing_updates()))
    trial.convergence_after_heal = net.now - healed_at
    trial.messages, trial.bytes = net.messages, net.bytes
    everywhere = set.intersection(*(set(n.replica.set("acked").value) for n in net.nodes.values()))
    trial.lost_acknowledged_writes = len(set(acknowledged) - everywhere)
    return trial


def _write_action(roll: float, token: str) -> Callable[[Replica], None]:
    """A mixed workload: set adds (the acknowledged writes), list appends, votes, LWW."""

    def write(replica: Replica) -> None:
        if roll < 0.4:
            replica.set("acked").add(token)
        elif roll < 0.7:
            replica.list("findings").append(token)
        elif roll < 0.9:
            replica.map("votes").counter("publish").increment()
        else:
            replica.register("summary").set(token)

    return write


def _fault_actions(
    net: SimNetwork, names: list[str], rng: random.Random
) -> Callable[[str, bool], None]:
    minority = names[: max(1, len(names) // 3)]
    majority = names[len(minority) :]

    def act(kind: str, begin: bool) -> None:
        if kind == "partition":
            if begin:
                net.partition(minority, majority)
            else:
                net.heal()
        elif kind.startswith("flap:"):
            a, b = kind[5:].split("|")
            if begin:
                net.cut(a, b)
            else:
                net.blocked.discard((a, b))
                net.blocked.discard((b, a))
        elif kind.startswith("crash:"):
            node = kind[6:]
            if begin:
                net.crash(node)
            elif not net.nodes[node].up:
                net.restart(node, durable=True)

    return act


# --- the fault patterns -------------------------------------------------------------------


def partition_heal(net: SimNetwork, names: list[str], duration: float, rng: random.Random) -> Any:
    return [(duration * 0.2, duration, "partition")]


def flapping(net: SimNetwork, names: list[str], duration: float, rng: random.Random) -> Any:
    plan = []
    for _ in range(len(names) * 3):
        a, b = rng.sample(names, 2)
        start = rng.uniform(0, duration * 0.9)
        plan.append((start, min(duration, start + rng.uniform(0.2, 2.0)), f"flap:{a}|{b}"))
    return plan


def crash_restart(net: SimNetwork, names: list[str], duration: float, rng: random.Random) -> Any:
    plan = []
    for name in rng.sample(names, max(1, len(names) // 2)):
        start = rng.uniform(0, duration * 0.7)
        plan.append((start, start + rng.uniform(0.5, 3.0), f"crash:{name}"))
    return plan


def lossy(net: SimNetwork, names: list[str], duration: float, rng: random.Random) -> Any:
    return []  # the loss is the network's drop rate (--drop, 0.5 by default here)


SCENARIOS: dict[str, tuple[FaultPlan, dict[str, Any]]] = {
    "partition-heal": (partition_heal, {}),
    "flapping": (flapping, {}),
    "crash-restart": (crash_restart, {}),
    "lossy": (lossy, {"drop": 0.5}),
    "scale": (partition_heal, {"replicas": 64, "writes_per_second": 50.0}),
}
