"""The README's example runs as written (on free ports instead of 7001-7003)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

from transport.loopback import free_loopback_addresses

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_example_runs() -> None:
    (code,) = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    for fixed, free in zip(
        ("tcp://127.0.0.1:7001", "tcp://127.0.0.1:7002", "tcp://127.0.0.1:7003"),
        free_loopback_addresses(3),
        strict=True,
    ):
        code = code.replace(fixed, free)
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(compile(code, str(README), "exec"), {})
    printed = output.getvalue()
    assert "'findings': ['GDP growth at 7.2%']" in printed
    assert "'votes': {'publish': 1}" in printed
