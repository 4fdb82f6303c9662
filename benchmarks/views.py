"""``python -m benchmarks.views [--quick]``: how long a view of a large state takes.

The agent-layer issue's target: a view of a 1 MB state within an 8k-token budget in
under 50 ms. The state is a blackboard: a list of findings, a map of notes per agent
(lists), a set of tags, a text report and a few scalars, about 1 MB encoded
(``stats(state_bytes=True)``). Each row is the median and the best of several views
(the tokenizer's vocabulary is loaded before, once per process, and the first view is
timed alone: both costs are shown on their own rows), and ``to_json`` of the whole state
beside them for scale.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from crdtmem import Replica
from crdtmem.views import count_tokens


def blackboard(findings: int) -> Replica:
    r = Replica("bench")
    handle = r.list("findings")
    for i in range(findings):
        handle.append(
            f"finding {i}: GDP growth in region {i % 37} reached {i % 97 / 10:.1f}% "
            f"in quarter {i % 4 + 1}, source report {i * 7919 % 100_003}"
        )
    notes = r.map("notes")
    for i in range(findings // 4):
        notes.list(f"agent{i % 10}").append({"step": i, "note": f"checked source {i}"})
    tags = r.set("tags")
    for i in range(findings // 10):
        tags.add(f"topic-{i}")
    r.text("report").insert(0, "".join(f"Paragraph {i} of the draft.\n" for i in range(500)))
    r.counter("steps").increment(findings)
    r.register("status").set("drafting")
    return r


def timed(call: Callable[[], Any], repeat: int) -> tuple[float, float, float, Any]:
    """Median and best wall seconds of ``call()``, its median CPU seconds (what it costs
    on a machine shared with other work), and its last result."""
    times: list[float] = []
    cpu: list[float] = []
    result: Any = None
    for _ in range(repeat):
        gc.collect()
        start, start_cpu = time.perf_counter(), time.process_time()
        result = call()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(times), min(times), statistics.median(cpu), result


def run(quick: bool) -> Table:
    findings = 1_000 if quick else 10_000
    repeat = 5 if quick else 15
    start = time.perf_counter()
    count_tokens("warm up")
    load = time.perf_counter() - start
    r = blackboard(findings)
    size = r.stats(state_bytes=True)["state_bytes"]
    table = Table(title=f"Views of a {size / 1e6:.2f} MB state (ms)")
    for header in ("what", "median", "best", "cpu (median)", "tokens", "items left out"):
        table.add_column(header, justify="left" if header == "what" else "right")
    table.add_row("load the o200k_base vocabulary (once)", f"{load * 1e3:.0f}", "", "", "", "")
    # The tokenizer caches the ids of each piece of text it has seen: the first view of
    # new content costs more than the next ones, which an agent's loop mostly makes.
    first, _, first_cpu, view = timed(lambda: r.view(budget=8000), 1)
    table.add_row(
        "first view, 8k budget, text (tokenizer cache cold)",
        f"{first * 1e3:.1f}",
        "",
        f"{first_cpu * 1e3:.1f}",
        f"{view.tokens}",
        f"{sum(view.omitted.values())}",
    )
    cases: list[tuple[str, Callable[[], Any]]] = [
        ("view, 8k budget, text", lambda: r.view(budget=8000)),
        ("view, 8k budget, json", lambda: r.view(budget=8000, render="json")),
        ("view, 2k budget, text", lambda: r.view(budget=2000)),
        (
            "view, 8k budget, text, scored",
            lambda: r.view(budget=8000, score=lambda item: len(str(item))),
        ),
        ("view, 8k budget, chars/4 counter", lambda: r.view(count_tokens=lambda s: len(s) // 4)),
    ]
    for label, call in cases:
        median, best, cpu, view = timed(call, repeat)
        table.add_row(
            label,
            f"{median * 1e3:.1f}",
            f"{best * 1e3:.1f}",
            f"{cpu * 1e3:.1f}",
            f"{view.tokens}",
            f"{sum(view.omitted.values())}",
        )
    median, best, cpu, document = timed(lambda: json.dumps(r.to_json()), max(3, repeat // 3))
    table.add_row(
        "to_json + json.dumps, whole state",
        f"{median * 1e3:.1f}",
        f"{best * 1e3:.1f}",
        f"{cpu * 1e3:.1f}",
    )
    median, best, cpu, _ = timed(lambda: count_tokens(document), 1)
    table.add_row(
        "count_tokens of that JSON (for scale)",
        f"{median * 1e3:.1f}",
        f"{best * 1e3:.1f}",
        f"{cpu * 1e3:.1f}",
    )
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.views", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smaller state")
    args = parser.parse_args(argv)
    Console(width=160).print(run(args.quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
