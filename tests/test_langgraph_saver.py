"""CrdtmemSaver: LangGraph's checkpointer conformance suite (alone and on a replicated
pair), forks between concurrent writers, versions, the history rule, with_allowlist,
and graphs: parallel branches merging one key, and a thread resumed by another replica
after the first one crashed."""

from __future__ import annotations

import logging
import operator
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.report import CapabilityReport
from langgraph.checkpoint.conformance.test_utils import (
    generate_checkpoint,
    generate_config,
    generate_metadata,
)
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.errors import InvalidUpdateError
from langgraph.graph import END, START, StateGraph

from crdtmem import Replica
from crdtmem.integrations.langgraph import CrdtmemSaver, merge
from crdtmem.integrations.langgraph.saver import FORKS_KEY

ROOT = Path(__file__).resolve().parent.parent
ALL_CAPABILITIES = {
    "put",
    "put_writes",
    "get_tuple",
    "list",
    "delete_thread",
    "delete_for_runs",
    "copy_thread",
    "prune",
}


def sync(a: Replica, b: Replica) -> None:
    """Bring two replicas to the same state, in process (what gossip does)."""
    b.merge(a.delta_since(b.version()))
    a.merge(b.delta_since(a.version()))


class PairSaver(CrdtmemSaver):
    """Writes through replica ``a``, reads through replica ``b``, syncing them after
    every write: the conformance suite then checks what a peer sees."""

    def __init__(self, a: Replica, b: Replica) -> None:
        super().__init__(a)
        self.reader = CrdtmemSaver(b)
        self.a, self.b = a, b

    def _synced(self) -> None:
        sync(self.a, self.b)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self.reader.aget_tuple(config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        async for item in self.reader.alist(config, filter=filter, before=before, limit=limit):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        stored = await super().aput(config, checkpoint, metadata, new_versions)
        self._synced()
        return stored

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await super().aput_writes(config, writes, task_id, task_path)
        self._synced()

    async def adelete_thread(self, thread_id: str) -> None:
        await super().adelete_thread(thread_id)
        self._synced()

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await super().adelete_for_runs(run_ids)
        self._synced()

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await super().acopy_thread(source_thread_id, target_thread_id)
        self._synced()

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await super().aprune(thread_ids, strategy=strategy)
        self._synced()


@checkpointer_test(name="CrdtmemSaver")
async def single_saver() -> AsyncIterator[CrdtmemSaver]:
    yield CrdtmemSaver(Replica("conformance"))


@checkpointer_test(name="CrdtmemSaver, durable")
async def durable_saver() -> AsyncIterator[CrdtmemSaver]:
    with tempfile.TemporaryDirectory() as folder:
        replica = Replica("durable", path=folder)
        yield CrdtmemSaver(replica)
        replica.close()


@checkpointer_test(name="CrdtmemSaver, replicated pair")
async def replicated_saver() -> AsyncIterator[CrdtmemSaver]:
    yield PairSaver(Replica("writer"), Replica("reader"))


def assert_full(report: CapabilityReport) -> None:
    failures = {name: r.failures for name, r in report.results.items() if r.failures}
    assert failures == {}
    assert report.passed_all_base()
    # Every optional method is implemented and passes too.
    detected = {name for name, r in report.results.items() if r.detected}
    assert detected == ALL_CAPABILITIES
    assert all(r.passed is True for r in report.results.values())
    assert sum(r.tests_passed for r in report.results.values()) >= 81


@pytest.mark.asyncio
async def test_conformance_suite_passes() -> None:
    assert_full(await validate(single_saver))


@pytest.mark.asyncio
async def test_conformance_suite_passes_on_a_durable_replica() -> None:
    assert_full(await validate(durable_saver))


@pytest.mark.asyncio
async def test_conformance_suite_passes_on_a_replicated_pair() -> None:
    assert_full(await validate(replicated_saver))


# --- helpers for the direct tests ----------------------------------------------------


def put(
    saver: CrdtmemSaver,
    thread: str,
    parent: RunnableConfig | None = None,
    values: dict[str, Any] | None = None,
    step: int = 0,
) -> RunnableConfig:
    config = generate_config(thread)
    if parent is not None:
        config["configurable"]["checkpoint_id"] = parent["configurable"]["checkpoint_id"]
    values = values or {}
    checkpoint = generate_checkpoint(channel_values=values, channel_versions={k: 1 for k in values})
    return saver.put(config, checkpoint, generate_metadata(step=step), {k: 1 for k in values})


def head_ids(saver: CrdtmemSaver, thread: str) -> list[str]:
    return [c["configurable"]["checkpoint_id"] for c in saver.heads(generate_config(thread))]


# --- forks: two writers continue one thread concurrently ---------------------------------


@pytest.mark.parametrize("a_first", [True, False])
def test_a_fork_keeps_both_branches_and_says_so(
    a_first: bool, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = Replica("proc-a"), Replica("proc-b")
    saver_a, saver_b = CrdtmemSaver(a), CrdtmemSaver(b)
    root = put(saver_a, "t", values={"x": "root"})
    sync(a, b)
    # Both continue from the root before hearing of each other.
    branch_a = put(saver_a, "t", root, {"x": "from a"}, step=1)
    branch_b = put(saver_b, "t", root, {"x": "from b"}, step=1)
    if a_first:
        b.merge(a.delta_since(b.version()))
        a.merge(b.delta_since(a.version()))
    else:
        a.merge(b.delta_since(a.version()))
        b.merge(a.delta_since(b.version()))
    ids = sorted(
        [branch_a["configurable"]["checkpoint_id"], branch_b["configurable"]["checkpoint_id"]],
        reverse=True,
    )
    for saver in (saver_a, saver_b):
        assert head_ids(saver, "t") == ids
        with caplog.at_level(logging.WARNING):
            latest = saver.get_tuple(generate_config("t"))
        assert latest is not None
        # The same head on every replica, and the other one named.
        assert latest.config["configurable"]["checkpoint_id"] == ids[0]
        assert latest.metadata[FORKS_KEY] == [ids[1]]  # type: ignore[typeddict-item]
        assert len(list(saver.list(generate_config("t")))) == 3
    assert "forked" in caplog.text
    # Dropping a branch ends the fork everywhere; the shared root stays.
    saver_a.discard_head(generate_config("t", checkpoint_id=ids[1]))
    sync(a, b)
    for saver in (saver_a, saver_b):
        assert head_ids(saver, "t") == [ids[0]]
        latest = saver.get_tuple(generate_config("t"))
        assert latest is not None and FORKS_KEY not in latest.metadata
        assert saver.get_tuple(root) is not None


def test_discard_head_refuses_a_checkpoint_that_is_not_a_head() -> None:
    saver = CrdtmemSaver(Replica("a"))
    root = put(saver, "t")
    put(saver, "t", root, step=1)
    with pytest.raises(ValueError, match="not a head"):
        saver.discard_head(root)


def test_the_forks_key_is_never_stored() -> None:
    saver = CrdtmemSaver(Replica("a"))
    config = generate_config("t")
    metadata = generate_metadata()
    metadata[FORKS_KEY] = ["old"]  # type: ignore[typeddict-unknown-key]
    stored = saver.put(config, generate_checkpoint(), metadata, {})
    found = saver.get_tuple(stored)
    assert found is not None and FORKS_KEY not in found.metadata


def test_versions_increase_and_differ_between_writers() -> None:
    saver_a, saver_b = CrdtmemSaver(Replica("a")), CrdtmemSaver(Replica("b"))
    va, vb = saver_a.get_next_version(None, None), saver_b.get_next_version(None, None)
    assert va != vb and int(va.split(".")[0]) == int(vb.split(".")[0]) == 1
    later = saver_a.get_next_version(va, None)
    assert later > va and later > vb
    assert int(saver_a.get_next_version("7", None).split(".")[0]) == 8
    assert int(saver_a.get_next_version(3, None).split(".")[0]) == 4  # type: ignore[arg-type]
    # Two lives of one name are two writers.
    assert CrdtmemSaver(Replica("a")).get_next_version(None, None) != va


# --- the history rule ------------------------------------------------------------------


def test_history_keeps_the_last_checkpoints_of_every_branch() -> None:
    a, b = Replica("a"), Replica("b")
    saver_a, saver_b = CrdtmemSaver(a, keep=3), CrdtmemSaver(b, keep=3)
    chain = [put(saver_a, "t", values={"n": 0})]
    sync(a, b)
    old_branch = put(saver_b, "t", chain[0], {"n": -1}, step=1)
    for step in range(1, 10):
        chain.append(put(saver_a, "t", chain[-1], {"n": step}, step=step))
    sync(a, b)
    put(saver_a, "t", chain[-1], {"n": 10}, step=10)  # trims again, knowing b's branch
    sync(a, b)
    for saver in (saver_a, saver_b):
        kept = [t.checkpoint["channel_values"]["n"] for t in saver.list(generate_config("t"))]
        # a's branch: its last 3; b's branch: its head (a trimmed the root it
        # continues before it knew of b's branch: the rule applies to what is seen).
        assert sorted(kept) == [-1, 8, 9, 10]
        assert saver.get_tuple(old_branch) is not None
    # Branches known when trimming keep their ancestors.
    c = CrdtmemSaver(Replica("c"), keep=2)
    root = put(c, "u", values={"n": 0})
    side = put(c, "u", root, {"n": -1}, step=1)
    main = put(c, "u", root, {"n": 1}, step=1)
    main = put(c, "u", main, {"n": 2}, step=2)
    main = put(c, "u", main, {"n": 3}, step=3)
    kept = sorted(t.checkpoint["channel_values"]["n"] for t in c.list(generate_config("u")))
    assert kept == [-1, 0, 2, 3] and c.get_tuple(side) is not None
    assert CrdtmemSaver(Replica("c"), keep=None).keep is None
    with pytest.raises(ValueError, match="keep"):
        CrdtmemSaver(Replica("c"), keep=0)


def test_unchanged_channels_reuse_the_stored_value() -> None:
    class CountingSerde:
        def __init__(self, inner: Any) -> None:
            self.inner = inner
            self.dumped: list[Any] = []

        def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
            self.dumped.append(obj)
            return self.inner.dumps_typed(obj)  # type: ignore[no-any-return]

        def loads_typed(self, data: tuple[str, bytes]) -> Any:
            return self.inner.loads_typed(data)

    saver = CrdtmemSaver(Replica("a"))
    serde = CountingSerde(saver.serde)
    saver.serde = serde
    config = generate_config("t")
    big = ["a finding"] * 1000
    first = generate_checkpoint(channel_values={"big": big, "n": 1})
    first["channel_versions"] = {"big": 1, "n": 1}
    stored = saver.put(config, first, generate_metadata(), {"big": 1, "n": 1})
    assert big in serde.dumped
    serde.dumped.clear()
    second = generate_checkpoint(channel_values={"big": big, "n": 2})
    second["channel_versions"] = {"big": 1, "n": 2}
    stored = saver.put(stored, second, generate_metadata(step=1), {"n": 2})
    assert big not in serde.dumped and 2 in serde.dumped
    found = saver.get_tuple(stored)
    assert found is not None and found.checkpoint["channel_values"] == {"big": big, "n": 2}


def test_with_allowlist_clone_shares_the_replica_and_uses_its_own_serializer() -> None:
    class Spy:
        def __init__(self, inner: Any) -> None:
            self.inner, self.calls = inner, 0

        def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
            self.calls += 1
            return self.inner.dumps_typed(obj)  # type: ignore[no-any-return]

        def loads_typed(self, data: tuple[str, bytes]) -> Any:
            self.calls += 1
            return self.inner.loads_typed(data)

    # A strict serializer (allowlist on): with_allowlist then derives a new one.
    saver = CrdtmemSaver(Replica("a"), serde=JsonPlusSerializer(allowed_msgpack_modules=None))
    clone = saver.with_allowlist([("my_module", "MyClass")])
    assert clone is not saver and clone.serde is not saver.serde
    assert isinstance(clone, CrdtmemSaver) and clone.replica is saver.replica
    original, spy = Spy(saver.serde), Spy(clone.serde)
    saver.serde, clone.serde = original, spy
    stored = put(clone, "t", values={"x": 1})
    clone.put_writes(stored, [("x", 2)], "task")
    found = saver.get_tuple(stored)
    assert found is not None and found.pending_writes == [("task", "x", 2)]
    # The clone serialized with its own serializer (nothing bound at construction),
    # and the original read the same replica with its own.
    assert spy.calls >= 3 and original.calls >= 2
    original.calls = 0
    assert clone.get_tuple(stored) is not None and original.calls == 0


def test_put_writes_keeps_first_writes_and_replaces_special_ones() -> None:
    saver = CrdtmemSaver(Replica("a"))
    stored = put(saver, "t")
    saver.put_writes(stored, [("a", 1), ("__error__", "first")], "task", "p")
    saver.put_writes(stored, [("a", 99), ("__error__", "second")], "task", "p")
    found = saver.get_tuple(stored)
    assert found is not None
    assert sorted(found.pending_writes or []) == [("task", "__error__", "second"), ("task", "a", 1)]
    with pytest.raises(ValueError, match="strategy"):
        saver.prune(["t"], strategy="everything")


def test_importing_crdtmem_does_not_import_langgraph_and_a_missing_extra_is_named() -> None:
    check = (
        "import sys, crdtmem, crdtmem.integrations\n"
        "assert not any(m.startswith(('langgraph', 'langchain')) for m in sys.modules)\n"
        "import importlib.util as u\n"
        "real = u.find_spec\n"
        "u.find_spec = lambda n, *a: None if n == 'langgraph' else real(n, *a)\n"
        "try:\n"
        "    import crdtmem.integrations.langgraph\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=60, check=True
    )
    assert "pip install 'crdtmem[langgraph]'" in done.stdout


# --- graphs ---------------------------------------------------------------------------


class Plain(TypedDict):
    topic: str
    findings: list[str]


class Merged(TypedDict):
    topic: str
    findings: Annotated[list[str], merge]
    notes: Annotated[dict[str, Any], merge]
    steps: Annotated[int, operator.add]


def fan_out(state_type: Any) -> Any:
    """researcher, analyst and critic run in parallel and all write ``findings``."""
    graph = StateGraph(state_type)
    for name in ("researcher", "analyst", "critic"):

        def node(state: dict[str, Any], name: str = name) -> dict[str, Any]:
            update: dict[str, Any] = {"findings": [f"{name} on {state['topic']}"]}
            if "notes" in state_type.__annotations__:
                update["notes"] = {name: {"done": True}}
                update["steps"] = 1
            return update

        graph.add_node(name, node)  # type: ignore[type-var, unused-ignore]
        graph.add_edge(START, name)
        graph.add_edge(name, END)
    return graph


def test_parallel_branches_writing_one_key_merge_instead_of_failing() -> None:
    replica = Replica("graph")
    config: RunnableConfig = {"configurable": {"thread_id": "fan"}}
    plain = fan_out(Plain).compile(checkpointer=CrdtmemSaver(replica))
    with pytest.raises(InvalidUpdateError):
        plain.invoke({"topic": "GDP", "findings": []}, config)
    merged = fan_out(Merged).compile(checkpointer=CrdtmemSaver(replica))
    result = merged.invoke(
        {"topic": "GDP", "findings": [], "notes": {}, "steps": 0},
        {"configurable": {"thread_id": "merged"}},
    )
    assert sorted(result["findings"]) == [
        "analyst on GDP",
        "critic on GDP",
        "researcher on GDP",
    ]
    assert result["notes"] == {n: {"done": True} for n in ("analyst", "critic", "researcher")}
    assert result["steps"] == 3
    # A replayed write (a resume re-applies pending writes) changes nothing.
    assert merge(result["findings"], ["critic on GDP"]) == result["findings"]


class Pipeline(TypedDict):
    text: str
    log: Annotated[list[str], operator.add]


def test_a_thread_checkpointed_by_one_replica_resumes_on_another_after_a_crash(
    tmp_path: Path,
) -> None:
    calls: dict[str, int] = {"research": 0, "write": 0}
    crash = {"on": True}

    def research(state: Pipeline) -> dict[str, Any]:
        calls["research"] += 1
        return {"text": state["text"] + " +research", "log": ["research"]}

    def write(state: Pipeline) -> dict[str, Any]:
        calls["write"] += 1
        if crash["on"]:
            raise RuntimeError("process died")
        return {"text": state["text"] + " +write", "log": ["write"]}

    def build(replica: Replica) -> Any:
        graph = StateGraph(Pipeline)
        graph.add_node("research", research)
        graph.add_node("write", write)
        graph.add_edge(START, "research")
        graph.add_edge("research", "write")
        graph.add_edge("write", END)
        return graph.compile(checkpointer=CrdtmemSaver(replica))

    first = Replica("worker-1", path=str(tmp_path / "worker-1"))
    config: RunnableConfig = {"configurable": {"thread_id": "report"}}
    with pytest.raises(RuntimeError, match="process died"):
        build(first).invoke({"text": "draft", "log": []}, config)
    second = Replica("worker-2")
    second.merge(first.delta_since(second.version()))
    first.close()  # the first worker is gone
    crash["on"] = False
    result = build(second).invoke(None, config)
    assert result == {"text": "draft +research +write", "log": ["research", "write"]}
    # research ran once: its result came from the checkpoint the first worker made.
    assert calls == {"research": 1, "write": 2}
    history = list(CrdtmemSaver(second).list(config))
    assert history[0].metadata["step"] == 2


def test_two_processes_running_one_thread_fork_visibly_and_agree_on_the_head() -> None:
    def step(state: Pipeline) -> dict[str, Any]:
        return {"log": [state["text"]]}

    def build(replica: Replica) -> Any:
        graph = StateGraph(Pipeline)
        graph.add_node("step", step)
        graph.add_edge(START, "step")
        graph.add_edge("step", END)
        return graph.compile(checkpointer=CrdtmemSaver(replica))

    a, b = Replica("proc-a"), Replica("proc-b")
    graph_a, graph_b = build(a), build(b)
    config: RunnableConfig = {"configurable": {"thread_id": "shared"}}
    graph_a.invoke({"text": "first", "log": []}, config)
    sync(a, b)
    # Both continue the thread before hearing of each other.
    graph_a.invoke({"text": "by a"}, config)
    graph_b.invoke({"text": "by b"}, config)
    sync(a, b)
    states = [graph.get_state(config) for graph in (graph_a, graph_b)]
    assert states[0].values == states[1].values
    assert states[0].config == states[1].config
    assert len(states[0].metadata[FORKS_KEY]) == 1
    assert len(CrdtmemSaver(a).heads(config)) == 2
    # Going on from the head both agree on; the other branch stays listed.
    result = graph_b.invoke({"text": "next"}, config)
    assert result["log"][-1] == "next" and result["log"][0] == "first"
    sync(a, b)
    assert len(CrdtmemSaver(a).heads(config)) == 2


def test_each_checkpoint_and_each_tasks_writes_is_one_update() -> None:
    replica = Replica("atomic")
    saver = CrdtmemSaver(replica)

    def updates() -> int:
        return replica.version().get(replica.writer_id, 0)

    stored = put(saver, "t", values={"a": 1, "b": [1, 2], "c": "x"})
    assert updates() == 1
    saver.put_writes(stored, [("a", 2), ("b", [3]), ("c", "y")], "task-1")
    assert updates() == 2
    saver.put_writes(stored, [("a", 2)], "task-1")  # already stored: nothing to write
    assert updates() == 2
    put(saver, "t", stored, {"a": 2}, step=1)
    assert updates() == 3
