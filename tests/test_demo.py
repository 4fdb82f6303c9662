"""The README's demo runs, converges after the partition, and loses no vote."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_blackboard_demo_converges_after_the_partition() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "examples.blackboard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "120"},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all three agree: True" in result.stdout
    assert "converged" in result.stdout and "after the partition healed" in result.stdout
    assert "researcher 2, analyst 2, writer 2; tombstones held: 0" in " ".join(
        result.stdout.split()
    )
