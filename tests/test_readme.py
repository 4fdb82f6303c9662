"""The README's example runs as written (on free ports instead of 7001-7003), in a
fresh working directory, as a newcomer would run it."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from transport.loopback import free_loopback_addresses

README = Path(__file__).resolve().parent.parent / "README.md"
IN_MEMORY = 'Replica("researcher")  # or path="state/researcher"'


def readme_example() -> str:
    blocks: list[str] = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    (code,) = blocks
    for fixed, free in zip(
        ("tcp://127.0.0.1:7001", "tcp://127.0.0.1:7002", "tcp://127.0.0.1:7003"),
        free_loopback_addresses(3),
        strict=True,
    ):
        code = code.replace(fixed, free)
    return code


def run(code: str) -> str:
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(compile(code, str(README), "exec"), {})
    printed = output.getvalue()
    assert "'findings': ['GDP growth at 7.2%']" in printed
    assert "'votes': {'publish': 1}" in printed
    return printed


def test_readme_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    run(readme_example())


def test_readme_example_runs_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The variant the example's comment offers, in a folder where ``state/`` is new."""
    code = readme_example()
    assert IN_MEMORY in code
    monkeypatch.chdir(tmp_path)
    run(code.replace(IN_MEMORY, 'Replica("researcher", path="state/researcher")'))
    assert (tmp_path / "state" / "researcher").is_dir()
