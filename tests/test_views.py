"""Views for prompts (``Replica.view``, crdtmem.views): within the budget, newest first,
deterministic, and saying what they leave out."""

from __future__ import annotations

import json
import random
import threading
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdtmem import Replica, views
from crdtmem.views import MIN_BUDGET, count_tokens

RENDERS = ["text", "json"]


def test_the_default_counter_counts_real_o200k_tokens() -> None:
    # o200k_base, as tiktoken gives it: "hello world" is [24912, 2375].
    assert views._encoding().encode_ordinary("hello world") == [24912, 2375]
    assert count_tokens("hello world") == 2
    assert count_tokens("The quick brown fox jumps over the lazy dog.") == 10
    assert count_tokens("") == 0
    # Special tokens are counted as the plain text they are.
    assert count_tokens("<|endoftext|>") > 1


items = st.text(max_size=40)


def blackboard(findings: list[str], lines: list[str], tags: list[str]) -> Replica:
    r = Replica("writer")
    handle = r.list("findings")
    for item in findings:
        handle.append(item)
    if lines:
        r.text("report").insert(0, "\n".join(lines))
    for tag in tags:
        r.set("tags").add(tag)
    r.counter("votes").increment(len(findings))
    r.register("status").set("draft")
    notes = r.map("notes")
    for i, item in enumerate(findings[:5]):
        notes.list(f"agent{i % 2}").append(item)
    return r


@given(
    st.lists(items, max_size=60),
    st.lists(st.text(max_size=30).filter(lambda s: "\n" not in s and "\r" not in s), max_size=30),
    st.lists(st.text(max_size=10), max_size=10),
    st.integers(MIN_BUDGET, 600),
    st.sampled_from(RENDERS),
)
def test_a_view_never_exceeds_its_budget_and_keeps_the_newest(
    findings: list[str], lines: list[str], tags: list[str], budget: int, render: str
) -> None:
    r = blackboard(findings, lines, tags)
    view = r.view(budget=budget, render=render)
    assert view.tokens == count_tokens(view.text) <= budget
    assert view == r.view(budget=budget, render=render)  # deterministic
    left_out = view.omitted.get("findings", 0)
    shown = len(findings) - left_out
    if render == "json":
        data = json.loads(view.text)
        assert data == view.data
        # The newest items, newest first.
        assert data["fields"].get("findings", []) == findings[::-1][:shown]
        if "report" in data["fields"]:
            kept = len(lines) - view.omitted.get("report", 0)
            assert data["fields"]["report"] == "\n".join(lines[len(lines) - kept :])
        assert data.get("omitted", {}) == {
            k: v for k, v in view.omitted.items() if k in data.get("omitted", {})
        }
    elif "findings" in view.fields:
        # Text: the header says how many, then the newest items.
        header = view.text.split("\n")[0]
        if left_out:
            assert header == f"findings (list, newest {shown} of {len(findings)}):"
        else:
            assert header == "findings (list, newest first):"


@given(st.lists(items, min_size=1, max_size=40), st.integers(0, 2**32))
def test_the_same_state_gives_the_same_view_on_every_replica(
    findings: list[str], seed: int
) -> None:
    a, b = Replica("a"), Replica("b")
    rng = random.Random(seed)
    for item in findings:
        (a if rng.random() < 0.5 else b).list("findings").append(item)
        (a if rng.random() < 0.5 else b).set("tags").add(item[:3])
    # Different delivery: a gets b's updates at once, b gets a's at once.
    a.merge(b.delta_since())
    b.merge(a.delta_since())
    for render in RENDERS:
        assert a.view(budget=200, render=render) == b.view(budget=200, render=render)


def test_a_large_budget_shows_everything() -> None:
    r = blackboard(["a", "b"], ["one", "two"], ["x"])
    view = r.view()
    assert view.omitted == {}
    assert view.text == "\n".join(
        [
            "findings (list, newest first):",
            "- b",
            "- a",
            "notes (map):",
            "  agent0 (list, newest first):",
            "  - a",
            "  agent1 (list, newest first):",
            "  - b",
            "report (text):",
            "  one",
            "  two",
            "status (register): draft",
            "tags (set):",
            "- x",
            "votes (counter): 2",
        ]
    )
    data = r.view(render="json").data
    assert data == {
        "fields": {
            "findings": ["b", "a"],
            "notes": {"agent0": ["a"], "agent1": ["b"]},
            "report": "one\ntwo",
            "status": "draft",
            "tags": ["x"],
            "votes": 2,
        }
    }


def test_a_view_says_what_it_left_out() -> None:
    r = Replica("a")
    for i in range(100):
        r.list("findings").append(f"finding {i}: GDP growth at {i / 10}%")
    view = r.view(budget=60)
    shown = 100 - view.omitted["findings"]
    assert 0 < shown < 100
    assert view.text.startswith(f"findings (list, newest {shown} of 100):\n- finding 99:")
    data = r.view(budget=60, render="json").data
    assert data["omitted"]["findings"] == 100 - len(data["fields"]["findings"])


def test_fields_by_name_prefix_and_role() -> None:
    r = Replica("a")
    for name in ("research.findings", "research.sources", "draft", "votes"):
        r.register(name).set(name)
    roles = {"writer": ["draft", "research.*"], "counter": ["votes", "absent"]}
    assert r.view(role="writer", roles=roles).fields == (
        "draft",
        "research.findings",
        "research.sources",
    )
    assert r.view(["votes", "research.f*"]).fields == ("votes", "research.findings")
    assert r.view(role="counter", roles=roles).fields == ("votes",)
    with pytest.raises(ValueError, match="not both"):
        r.view(["votes"], role="writer", roles=roles)
    with pytest.raises(ValueError, match="role"):
        r.view(role="reviewer", roles=roles)
    with pytest.raises(TypeError):
        r.view("votes")


def test_a_scorer_orders_items_and_map_entries() -> None:
    r = Replica("a")
    for word in ("apple", "kiwi", "banana", "fig"):
        r.list("fruit").append(word)
        r.map("by_name").register(word).set(len(word))
    view = r.view(score=lambda item: -len(json.dumps(item)), render="json")
    assert view.data["fields"]["fruit"] == ["fig", "kiwi", "apple", "banana"]
    assert list(view.data["fields"]["by_name"]) == ["fig", "kiwi", "apple", "banana"]
    with pytest.raises(ValueError, match="score"):
        r.view(score=lambda item: float("nan"))


def test_a_summariser_stands_in_for_what_was_left_out() -> None:
    r = Replica("a")
    for i in range(200):
        r.list("findings").append(f"finding {i}: GDP growth at {i / 10}%")
    calls: list[tuple[str, int]] = []

    def summarise(text: str, budget: int) -> str:
        calls.append((text, budget))
        return f"{len(text.splitlines())} earlier findings on GDP growth"

    view = r.view(budget=300, summarise=summarise)
    assert view.tokens <= 300
    ((text, share),) = calls
    assert share >= 300 // 4  # (the summaries share, and what the items left)
    assert text.startswith(f"finding {199 - (200 - view.omitted['findings'])}:")
    assert view.summaries == {
        "findings": f"{view.omitted['findings']} earlier findings on GDP growth"
    }
    assert f"(left out, summarised: {view.summaries['findings']})" in view.text
    # A summary over its share is dropped, never over the budget.
    view = r.view(budget=300, summarise=lambda text, n: text)
    assert view.summaries == {}
    assert view.tokens <= 300


@pytest.mark.parametrize("render", RENDERS)
def test_a_custom_counter_and_tiny_budgets(render: str) -> None:
    r = blackboard([f"item {i}" for i in range(30)], ["a", "b"], ["x", "y"])
    for budget in range(MIN_BUDGET, 120, 7):
        view = r.view(budget=budget, render=render, count_tokens=len)
        assert len(view.text) == view.tokens <= budget
        assert set(view.omitted) | set(view.fields) >= {"findings", "votes", "status"}
    with pytest.raises(ValueError, match="budget"):
        r.view(budget=MIN_BUDGET - 1)
    with pytest.raises(ValueError, match="render"):
        r.view(render="yaml")


def test_concurrent_values_bytes_and_nested_maps_render() -> None:
    a, b = Replica("a"), Replica("b")
    a.mvregister("plan").set("x")
    b.mvregister("plan").set(b"\x01")
    a.merge(b.delta_since())
    a.map("m").map("inner").list("l").append({"k": b"\x00"})
    view = a.view(render="json")
    assert view.data["fields"] == {
        "m": {"inner": {"l": [{"k": {"$bytes": "AA=="}}]}},
        "plan": ["x", {"$bytes": "AQ=="}],
    }
    text = a.view().text
    assert 'plan (mvregister): ["x",{"$bytes":"AQ=="}]' in text
    assert '    - {"k":{"$bytes":"AA=="}}' in text


def test_a_view_of_an_empty_replica() -> None:
    r = Replica("a")
    assert r.view().text == ""
    assert r.view(render="json").data == {"fields": {}}


def test_a_view_of_a_large_state_fills_its_budget() -> None:
    r = blackboard([f"finding {i}: GDP growth at {i / 10}%" for i in range(2000)], [], [])
    for render in RENDERS:
        for budget in (500, 3000):
            view = r.view(budget=budget, render=render)
            assert 0.9 * budget <= view.tokens <= budget


def random_replica(seed: int, writes: int) -> Replica:
    """A replica after random writes to every type, nested maps included."""
    rng = random.Random(seed)
    r = Replica("a", rng=random.Random(seed))
    words = ["GDP", "growth é", "😀", "", "line\nbreak", b"\x00\x01", 7, 2.5, None, True]
    for _ in range(writes):
        parent: Any = r if rng.random() < 0.7 else r.map(f"m{rng.randrange(2)}")
        kind = rng.choice(["list", "set", "text", "register", "counter", "mvregister", "map"])
        name = f"{kind}{rng.randrange(2)}"
        value = rng.choice(words)
        if kind == "list":
            parent.list(name).append(value if rng.random() < 0.8 else {"k": [value]})
        elif kind == "set":
            parent.set(name).add(value)
        elif kind == "text":
            parent.text(name).insert(0, f"{value!r} {rng.random()}\n")
        elif kind == "register":
            parent.register(name).set([value] * rng.randrange(3))
        elif kind == "counter":
            parent.counter(name).increment(rng.randrange(-5, 5))
        elif kind == "mvregister":
            parent.mvregister(name).set(value)
        else:
            parent.map(name).list("inner").append(value)
    return r


@given(
    st.integers(0, 2**32),
    st.integers(0, 80),
    st.integers(MIN_BUDGET, 400),
    st.sampled_from(RENDERS),
    st.booleans(),
)
def test_every_type_stays_within_the_budget(
    seed: int, writes: int, budget: int, render: str, scored: bool
) -> None:
    r = random_replica(seed, writes)

    def score(item: Any) -> float:
        return float(len(json.dumps(item, default=repr)) % 7)

    options: dict[str, Any] = {"budget": budget, "render": render}
    if scored:
        options["score"] = score
    view = r.view(**options)
    assert view.tokens == count_tokens(view.text) <= budget
    assert view == r.view(**options)
    if not scored:
        # A scorer makes the snapshot keep every item (not only as many as the budget
        # could show); a constant one keeps the order: the same view.
        assert view == r.view(score=lambda item: 0.0, **options)
    if render == "json":
        assert json.loads(view.text) == view.data
    # A counter that counts differently (characters) is respected as well.
    small = r.view(count_tokens=len, **options)
    assert len(small.text) == small.tokens <= budget


def test_nested_lists_longer_than_any_top_level_field_are_shown_whole() -> None:
    r = Replica("a")
    for i in range(100):
        r.map("notes").list(f"agent{i % 2}").append(f"note {i}")
    view = r.view(render="json")
    assert view.omitted == {}
    assert len(view.data["fields"]["notes"]["agent0"]) == 50


def test_a_summariser_is_not_called_when_everything_fits() -> None:
    r = blackboard(["a", "b"], ["one"], [])

    def summarise(text: str, budget: int) -> str:
        raise AssertionError("nothing was left out")

    assert r.view(summarise=summarise).omitted == {}


def test_the_summariser_runs_without_the_replica_lock() -> None:
    r = Replica("a")
    for i in range(300):
        r.list("findings").append(f"finding {i}")
    wrote: list[bool] = []

    def summarise(text: str, budget: int) -> str:
        # Another thread (a gossip thread, say) can still write meanwhile.
        def write() -> None:
            r.counter("c").increment()
            wrote.append(True)

        writer = threading.Thread(target=write)
        writer.start()
        writer.join(timeout=60)
        assert not writer.is_alive()
        return "earlier findings"

    view = r.view(budget=200, summarise=summarise)
    assert wrote == [True]
    assert view.summaries == {"findings": "earlier findings"}


def test_a_long_list_is_read_from_its_end() -> None:
    r = Replica("a")
    for i in range(1000):
        r.list("log").append(f"event {i}")
        r.set("tags").add(f"tag {i:04}")
    r.text("notes").insert(0, "".join(f"line {i}\n" for i in range(1000)))
    view = r.view(budget=60, render="json")
    shown = view.data["fields"]["log"]
    assert shown == [f"event {i}" for i in range(999, 999 - len(shown), -1)]
    assert view.omitted["log"] == 1000 - len(shown)
    tags = view.data["fields"].get("tags", [])
    assert tags == [f"tag {i:04}" for i in range(len(tags))]
    assert view.omitted["tags"] == 1000 - len(tags)
    assert view.omitted["notes"] == 1000 - view.data["fields"]["notes"].count("\n")
    text = r.view(budget=60).text
    assert text.startswith("log (list, newest ") and " of 1000):" in text.split("\n")[0]
