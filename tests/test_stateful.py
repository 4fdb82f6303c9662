"""Several replicas under a hostile network: messages dropped, duplicated, reordered,
delivered stale; partitions of any shape. After healing and a full anti-entropy round,
all ``value()`` and all ``version()`` are equal; at every step no replica claims an
update its origin never made."""

from __future__ import annotations

import contextlib
import random
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from crdtmem import Replica
from crdtmem.identity import name_of

NAMES = ("r0", "r1", "r2", "r3", "r4")
values = st.one_of(st.integers(-5, 5), st.sampled_from(["a", "b", "é"]), st.none())
indices = st.integers(0, len(NAMES) - 1)


class ReplicasUnderFaults(RuleBasedStateMachine):
    @initialize(count=st.integers(3, 5))
    def start(self, count: int) -> None:
        self.tick = 0.0
        self.replicas = [
            Replica(name, clock=self.clock, rng=random.Random(i))
            for i, name in enumerate(NAMES[:count])
        ]
        self.in_flight: list[tuple[int, int, bytes]] = []
        self.blocked: set[tuple[int, int]] = set()
        self.made = {name: 0 for name in NAMES[:count]}
        self.snapshots: list[dict[str, int]] = [{}]

    def clock(self) -> float:
        self.tick += 0.001
        return self.tick

    def pick(self, index: int) -> Replica:
        return self.replicas[index % len(self.replicas)]

    def mutate(self, index: int, action: Any) -> None:
        replica = self.pick(index)
        before = replica.version().get(replica.replica_id, 0)
        with contextlib.suppress(IndexError):  # positions are drawn blind
            action(replica)
        self.made[replica.replica_id] = replica.version().get(replica.writer_id, 0)
        assert self.made[replica.replica_id] >= before

    # --- operations of every type ----------------------------------------------------

    @rule(who=indices, n=st.integers(-3, 3))
    def counter(self, who: int, n: int) -> None:
        self.mutate(who, lambda r: r.counter("votes").increment(n))

    @rule(who=indices, v=values, add=st.booleans())
    def orset(self, who: int, v: Any, add: bool) -> None:
        self.mutate(who, lambda r: (r.set("tags").add if add else r.set("tags").discard)(v))

    @rule(who=indices, v=values)
    def registers(self, who: int, v: Any) -> None:
        self.mutate(who, lambda r: r.register("summary").set(v))
        self.mutate(who, lambda r: r.mvregister("decision").set(v))

    @rule(who=indices, where=st.integers(0, 6), v=values, delete=st.booleans())
    def rga(self, who: int, where: int, v: Any, delete: bool) -> None:
        if delete:
            self.mutate(who, lambda r: r.list("findings").delete(where))
        else:
            self.mutate(who, lambda r: r.list("findings").insert(where, v))

    @rule(who=indices, key=st.sampled_from(["k1", "k2"]), n=st.integers(-2, 2), drop=st.booleans())
    def ormap(self, who: int, key: str, n: int, drop: bool) -> None:
        if drop:
            self.mutate(who, lambda r: r.map("board").remove(key))
        else:
            self.mutate(who, lambda r: r.map("board").counter(key).increment(n))

    @rule(who=indices, where=st.integers(0, 8), chunk=st.text("ab→😀", min_size=1, max_size=3))
    def text(self, who: int, where: int, chunk: str) -> None:
        self.mutate(who, lambda r: r.text("draft").insert(where, chunk))

    # --- the network ------------------------------------------------------------------

    @rule(src=indices, dst=indices, stale=st.booleans(), data=st.data())
    def send(self, src: int, dst: int, stale: bool, data: st.DataObject) -> None:
        source, target = self.pick(src), self.pick(dst)
        src, dst = self.replicas.index(source), self.replicas.index(target)
        if source is target or (src, dst) in self.blocked:
            return
        known = data.draw(st.sampled_from(self.snapshots)) if stale else target.version()
        self.snapshots.append(target.version())
        self.in_flight.append((src, dst, source.delta_since(known)))

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(self.in_flight) - 1))  # any order
        source, target, message = self.in_flight.pop(index)
        if (source, target) not in self.blocked:  # cut while in flight: lost
            self.replicas[target].merge(message)

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data())
    def drop(self, data: st.DataObject) -> None:
        self.in_flight.pop(data.draw(st.integers(0, len(self.in_flight) - 1)))

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data())
    def duplicate(self, data: st.DataObject) -> None:
        self.in_flight.append(data.draw(st.sampled_from(self.in_flight)))

    @rule(side=st.sets(indices, min_size=1, max_size=3))
    def partition(self, side: set[int]) -> None:
        members = {i % len(self.replicas) for i in side}
        for a in members:
            for b in range(len(self.replicas)):
                if b not in members:
                    self.blocked |= {(a, b), (b, a)}

    @rule()
    def heal_and_converge(self) -> None:
        self.blocked.clear()
        self.anti_entropy()
        self.assert_converged()

    def anti_entropy(self) -> None:
        for _ in range(2):
            for source in self.replicas:
                for target in self.replicas:
                    if source is not target:
                        target.merge(source.delta_since(target.version()))

    def assert_converged(self) -> None:
        first = self.replicas[0]
        for other in self.replicas[1:]:
            assert other.value() == first.value()
            assert other.version() == first.version()
        assert first.version() == {
            r.writer_id: self.made[r.replica_id] for r in self.replicas if self.made[r.replica_id]
        }

    @invariant()
    def version_never_claims_what_was_not_made(self) -> None:
        for replica in getattr(self, "replicas", []):
            for origin, count in replica.version().items():
                assert count <= self.made[name_of(origin)]

    def teardown(self) -> None:
        if hasattr(self, "replicas"):
            self.blocked.clear()
            self.anti_entropy()
            self.assert_converged()


_PROFILE = settings()  # the loaded profile (default or ci)
ReplicasUnderFaults.TestCase.settings = settings(
    _PROFILE,
    stateful_step_count=40 if _PROFILE.max_examples < 200 else 80,
    max_examples=_PROFILE.max_examples // 2,
)
TestReplicasUnderFaults = ReplicasUnderFaults.TestCase
