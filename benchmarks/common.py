"""Timing helpers: best-of-N wall time per op, and trace loading."""

from __future__ import annotations

import gc
import gzip
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The editing traces travel with the repository (see traces/README.md there).
TRACES = Path(__file__).resolve().parent / "traces"


def per_op(
    setup: Callable[[], Any], run: Callable[[Any, int], None], ops: int, repeat: int = 3
) -> float:
    """Best-of-``repeat`` seconds per operation of ``run(state, ops)`` on a fresh ``setup()``."""
    best = float("inf")
    for _ in range(repeat):
        state = setup()
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            run(state, ops)
            elapsed = time.perf_counter() - start
        finally:
            gc.enable()
        best = min(best, elapsed / ops)
    return best


def load_trace(name: str) -> dict[str, Any]:
    """An editing trace from benchmarks/traces (see its README for the format)."""
    with gzip.open(TRACES / f"{name}.json.gz", "rt", encoding="utf-8") as handle:
        trace: dict[str, Any] = json.load(handle)
    return trace


def patches(trace: dict[str, Any]) -> list[tuple[int, int, str]]:
    return [(p[0], p[1], p[2]) for txn in trace["txns"] for p in txn["patches"]]


def micros(seconds: float) -> str:
    return f"{seconds * 1e6:,.2f}"
