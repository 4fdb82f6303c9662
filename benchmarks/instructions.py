"""Instructions per operation under callgrind: an A/B of two source trees that does not
depend on how busy the machine is.

``python -m benchmarks.instructions TREE [TREE ...]`` runs each operation below for
1,000 and for 6,000 iterations in a fresh interpreter under ``valgrind --tool=callgrind``
with ``crdtmem`` imported from each TREE (a checkout's root, e.g. a ``git worktree`` of
an older commit), and prints (count(6,000) - count(1,000)) / 5,000 per operation and
tree: what the interpreter executes per operation, startup and imports cancelled out.
Needs valgrind (``apt-get install valgrind``).

``python -m benchmarks.instructions --run OP N`` is the measured program itself.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pycrdt
from rich.console import Console
from rich.table import Table

from crdtmem import Replica

SMALL, LARGE = 1_000, 6_000


def _register(n: int) -> None:
    field = Replica("bench").register("r")
    for i in range(n):
        field.set(i)


def _counter(n: int) -> None:
    field = Replica("bench").counter("c")
    for _ in range(n):
        field.increment()


def _set(n: int) -> None:
    field = Replica("bench").set("s")
    for i in range(n):
        field.add(i % 1000)


def _map_counter(n: int) -> None:
    field = Replica("bench").map("m").counter("votes")
    for _ in range(n):
        field.increment()


def _append(n: int) -> None:
    field = Replica("bench").list("l")
    for i in range(n):
        field.append(i)


def _typing(n: int) -> None:
    field = Replica("bench").text("t")
    for i in range(n):
        field.insert(i, "a")


def _read(n: int) -> None:
    field = Replica("bench").counter("c")
    field.increment()
    for _ in range(n):
        _ = field.value


def _messages(n: int) -> list[bytes]:
    source = Replica("source")
    field = source.list("l")
    messages = []
    for i in range(n):
        before = source.version()
        field.append(i)
        messages.append(source.delta_since(before))
    return messages


def _merge(n: int) -> None:
    target = Replica("bench")
    for message in _messages(n):
        target.merge(message)


def _pycrdt_map_set(n: int) -> None:
    doc: Any = pycrdt.Doc()
    ymap = doc.get("m", type=pycrdt.Map)
    for i in range(n):
        ymap["r"] = i


# Each operation, and what to subtract from it (building the merged messages).
OPERATIONS: dict[str, tuple[Callable[[int], object], Callable[[int], object] | None]] = {
    "register.set": (_register, None),
    "counter.increment": (_counter, None),
    "set.add": (_set, None),
    "map.counter(k).increment": (_map_counter, None),
    "list.append": (_append, None),
    "text.insert (typing)": (_typing, None),
    "counter.value (read)": (_read, None),
    "merge of a one-update message": (_merge, _messages),
    "pycrdt Map set (peer)": (_pycrdt_map_set, None),
}


def _count(tree: str, operation: str, n: int, baseline: bool) -> int:
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        os.path.abspath(__file__),  # a script, so that crdtmem comes from ``tree``
        "--run",
        operation,
        str(n),
        *(["--baseline"] if baseline else []),
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": os.path.abspath(tree)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{done.stderr}")
    return int(found.group(1))


def per_operation(tree: str, operation: str) -> int:
    """Instructions per operation of ``operation`` with crdtmem from ``tree``."""
    total = _count(tree, operation, LARGE, False) - _count(tree, operation, SMALL, False)
    if OPERATIONS[operation][1] is not None:
        total -= _count(tree, operation, LARGE, True) - _count(tree, operation, SMALL, True)
    return total // (LARGE - SMALL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="*", help="source trees to compare (default: this one)")
    parser.add_argument("--run", nargs=2, metavar=("OP", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        operation, baseline = OPERATIONS[args.run[0]]
        (baseline if args.baseline and baseline else operation)(int(args.run[1]))
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed: apt-get install valgrind")
    trees = args.trees or [os.getcwd()]
    table = Table(title="instructions per operation (callgrind)")
    table.add_column("operation")
    for tree in trees:
        table.add_column(tree, justify="right")
    for name in OPERATIONS:
        table.add_row(name, *(f"{per_operation(tree, name):,}" for tree in trees))
    Console().print(table)


if __name__ == "__main__":
    main()
