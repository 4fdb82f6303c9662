"""Churn: a document edited for a long time while staying small. Two replicas insert
words at random places and delete them, keeping a few hundred live; they sync every 10
edits and collect what is stable. Text (pycrdt) against a list of words (RGA) doing the
same edits: what each keeps of the history, and what an edit costs as it grows.

``python -m benchmarks --only churn`` runs 100,000 edits (``--quick``: 20,000).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from rich.table import Table

from crdtmem import Replica

WORD = "word "


def _edit_text(replica: Replica, rng: random.Random) -> None:
    text = replica.text("draft")
    length = len(text)
    if length < 1500 or rng.random() < 0.5:
        text.insert(rng.randrange(length + 1), WORD)
    else:
        text.delete(rng.randrange(length - len(WORD)), len(WORD))


def _edit_list(replica: Replica, rng: random.Random) -> None:
    words = replica.list("draft")
    length = len(words)
    if length < 300 or rng.random() < 0.5:
        words.insert(rng.randrange(length + 1), WORD)
    else:
        words.delete(rng.randrange(length))


def _measure(
    edit: Callable[[Replica, random.Random], None], edits: int, samples: int
) -> list[tuple[int, int, float]]:
    """(edits so far, state bytes, microseconds per edit since the last sample)."""
    a, b = Replica("a"), Replica("b")
    rng = random.Random(5)
    points = []
    started = time.perf_counter()
    for step in range(1, edits + 1):
        edit(a if step % 2 else b, rng)
        if step % 10 == 0:
            b.merge(a.delta_since(b.version()))
            a.merge(b.delta_since(a.version()))
        if step % (edits // samples) == 0:
            elapsed = time.perf_counter() - started
            both = {o: min(a.version().get(o, 0), b.version().get(o, 0)) for o in a.version()}
            for replica in (a, b):  # two replicas, in sync: what both have is stable
                replica.compact_log(both)
                replica.collect_garbage(both)
            points.append((step, len(a._state_message()), elapsed * 1e6 / (edits // samples)))
            started = time.perf_counter()
    return points


def run(quick: bool) -> Table:
    edits = 20_000 if quick else 100_000
    samples = 5
    text = _measure(_edit_text, edits, samples)
    words = _measure(_edit_list, edits, samples)
    table = Table(title=f"Churn: {edits:,} edits, a few hundred words live (2 replicas)")
    for header in (
        "edits",
        "text state KiB",
        "list state KiB",
        "text µs/edit",
        "list µs/edit",
        "text/list time",
    ):
        table.add_column(header, justify="right")
    for (step, text_bytes, text_us), (_, list_bytes, list_us) in zip(text, words, strict=True):
        table.add_row(
            f"{step:,}",
            f"{text_bytes / 1024:,.1f}",
            f"{list_bytes / 1024:,.1f}",
            f"{text_us:,.1f}",
            f"{list_us:,.1f}",
            f"{text_us / list_us:.2f}x",
        )
    return table
