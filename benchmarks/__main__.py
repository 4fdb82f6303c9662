"""``python -m benchmarks [--quick] [--only NAME ...]``: print the benchmark tables.

Every figure is compared with a peer measured in the same run (pycrdt, a plain dict),
because these machines are shared and noisy: the ratios are what to read.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks import (
    churn,
    durability,
    gossip,
    local_ops,
    merge_cost,
    security,
    sizes,
    soak,
    traces,
)

SUITES: dict[str, Callable[[bool], Table]] = {
    "local": local_ops.run,
    "traces": traces.run,
    "merge": merge_cost.run,
    "sizes": sizes.run,
    "gossip": gossip.run,
    "durability": durability.run,
    "soak": soak.run,
    "churn": churn.run,
    "security": security.run,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (seconds, not minutes)")
    parser.add_argument("--only", nargs="*", choices=sorted(SUITES), help="suites to run")
    parser.add_argument("--json", type=Path, help="also write the tables as JSON here")
    args = parser.parse_args(argv)
    console = Console(width=160)
    import pycrdt

    console.print(
        f"crdtmem benchmarks; Python {platform.python_version()}, pycrdt "
        f"{getattr(pycrdt, '__version__', '?')}, {platform.machine()}"
        + (" (quick)" if args.quick else "")
    )
    results: dict[str, Any] = {}
    for name in args.only or list(SUITES):
        table = SUITES[name](args.quick)
        console.print(table)
        results[name] = {
            "columns": [str(c.header) for c in table.columns],
            "rows": [list(map(str, c._cells)) for c in table.columns],
        }
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
