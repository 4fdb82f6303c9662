"""Real editing traces replayed into the RGA list and the text type, against pycrdt."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

import pycrdt
from rich.table import Table

from benchmarks.common import load_trace, micros, patches
from crdtmem import RGA, Replica, TextCRDT, Writer

Patch = tuple[int, int, str]


def rga_raw(ops: list[Patch]) -> str:
    """The RGA type alone: delta mutators joined into the state, no replica around it."""
    doc, writer = RGA.empty(), Writer.fixed("bench")
    for position, deleted, inserted in ops:
        for _ in range(deleted):
            doc.absorb(doc.delete_delta(writer, position))
        for offset, char in enumerate(inserted):
            doc.absorb(doc.insert_delta(writer, position + offset, char))
    return "".join(doc.value())


def replica_list(ops: list[Patch]) -> str:
    """The whole replica path: lock, delta, log entry, version vector."""
    field = Replica("bench").list("doc")
    for position, deleted, inserted in ops:
        for _ in range(deleted):
            field.delete(position)
        for offset, char in enumerate(inserted):
            field.insert(position + offset, char)
    return "".join(field.value)


def pycrdt_array(ops: list[Patch]) -> str:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    array: pycrdt.Array[str] = doc.get("doc", type=pycrdt.Array)
    for position, deleted, inserted in ops:
        if deleted:
            del array[position : position + deleted]
        for offset, char in enumerate(inserted):
            array.insert(position + offset, char)
    return "".join(array.to_py() or [])


def text_raw(ops: list[Patch]) -> str:
    text, writer = TextCRDT.empty(), Writer.fixed("bench")
    for position, deleted, inserted in ops:
        if deleted:
            text.absorb(text.delete_delta(writer, position, deleted))
        if inserted:
            text.absorb(text.insert_delta(writer, position, inserted))
    return text.value()


def replica_text(ops: list[Patch]) -> str:
    field = Replica("bench").text("doc")
    for position, deleted, inserted in ops:
        if deleted:
            field.delete(position, deleted)
        if inserted:
            field.insert(position, inserted)
    return field.value


def pycrdt_text(ops: list[Patch]) -> str:
    """pycrdt's Text used directly (positions are code points = bytes: the traces are
    ASCII except where noted, and this peer does no translation)."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    text: pycrdt.Text = doc.get("doc", type=pycrdt.Text)
    for position, deleted, inserted in ops:
        if deleted:
            del text[position : position + deleted]
        if inserted:
            text.insert(position, inserted)
    return str(text)


def timed(replay: Callable[[list[Patch]], str], ops: list[Patch]) -> tuple[float, str]:
    gc.collect()
    start = time.perf_counter()
    result = replay(ops)
    return time.perf_counter() - start, result


def run(quick: bool) -> Table:
    names = ["sveltecomponent"] if quick else ["sveltecomponent", "automerge-paper"]
    table = Table(title="Editing traces replayed (each patch: delete, then insert)")
    for header in ("trace", "replay", "total s", "µs/patch", "vs pycrdt", "final text ok"):
        table.add_column(header, justify="left" if header in ("trace", "replay") else "right")
    for name in names:
        trace: dict[str, Any] = load_trace(name)
        ops = patches(trace)
        expected = trace["endContent"]
        ascii_note = "" if expected.isascii() else " (non-ASCII)"
        groups = [
            ("pycrdt Array (per char)", pycrdt_array, None),
            ("RGA type (per char)", rga_raw, 0),
            ("Replica.list (per char)", replica_list, 0),
            ("pycrdt Text", pycrdt_text, None),
            ("TextCRDT type", text_raw, 3),
            ("Replica.text", replica_text, 3),
        ]
        baseline: dict[int, float] = {}
        for index, (label, replay, peer) in enumerate(groups):
            seconds, result = timed(replay, ops)
            if peer is None:
                baseline[index] = seconds
                ratio = "1.00x"
            else:
                ratio = f"{seconds / baseline[peer]:.2f}x"
            table.add_row(
                f"{name}{ascii_note} ({len(ops):,} patches)" if index == 0 else "",
                label,
                f"{seconds:.2f}",
                micros(seconds / len(ops)),
                ratio,
                "yes" if result == expected else "NO",
            )
    return table
