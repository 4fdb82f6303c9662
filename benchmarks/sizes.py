"""Bytes on the wire: one update, and the full state per element."""

from __future__ import annotations

from typing import Any

import pycrdt
from rich.table import Table

from crdtmem import Replica


def run(quick: bool) -> Table:
    elements = 1_000 if quick else 10_000
    table = Table(title="Message sizes (bytes)")
    for header in ("what", "crdtmem", "pycrdt update"):
        table.add_column(header, justify="left" if header == "what" else "right")

    def single(label: str, mutate_ours: object, mutate_theirs: object) -> None:
        r = Replica("agent-researcher")
        other = Replica("agent-writer")
        r.counter("warm").increment()  # dependencies present, as in a running system
        other.merge(r.delta_since())
        assert callable(mutate_ours) and callable(mutate_theirs)
        mutate_ours(r, "setup")
        before = r.version()
        mutate_ours(r, "measured")
        ours = len(r.delta_since(before))
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        mutate_theirs(doc, "setup")
        state = doc.get_state()
        mutate_theirs(doc, "measured")
        table.add_row(label, f"{ours}", f"{len(doc.get_update(state))}")

    single(
        "one counter increment",
        lambda r, _: r.counter("votes").increment(),
        lambda d, tag: d.get("m", type=pycrdt.Map).__setitem__("votes", 1 if tag == "setup" else 2),
    )
    single(
        "one register set (short str)",
        lambda r, tag: r.register("summary").set(f"GDP at 7.2% {tag}"),
        lambda d, tag: d.get("m", type=pycrdt.Map).__setitem__("summary", f"GDP at 7.2% {tag}"),
    )
    single(
        "one list append (short str)",
        lambda r, tag: r.list("findings").append(f"finding {tag}"),
        lambda d, tag: d.get("a", type=pycrdt.Array).append(f"finding {tag}"),
    )
    single(
        "one set add",
        lambda r, tag: r.set("tags").add(tag),
        lambda d, tag: d.get("m", type=pycrdt.Map).__setitem__(tag, True),
    )
    single(
        "one text insert (1 char)",
        lambda r, _: r.text("draft").insert(0, "x"),
        lambda d, _: d.get("t", type=pycrdt.Text).insert(0, "x"),
    )

    r = Replica("agent-researcher")
    lst = r.list("findings")
    for i in range(elements):
        lst.append(i % 100)
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    array = doc.get("a", type=pycrdt.Array)
    for i in range(elements):
        array.append(i % 100)
    full = len(r.delta_since({}))
    r.compact_log(r.version())  # measure the full-state encoding, not the log
    state = len(r.delta_since({}))
    yupdate = len(doc.get_update())
    table.add_row(
        f"list of {elements:,} small ints: all updates", f"{full / elements:.1f}/elem", ""
    )
    table.add_row(
        f"list of {elements:,} small ints: full state",
        f"{state / elements:.1f}/elem",
        f"{yupdate / elements:.1f}/elem",
    )
    return table
