"""``python -m simulations``: runs a scenario, prints the table, writes PNG and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulations.__main__ import main


@pytest.mark.parametrize("scenario", ["partition-heal", "crash-restart", "lossy"])
def test_scenario_runs_and_loses_no_acknowledged_write(
    scenario: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [scenario, "--replicas", "4", "--duration", "2", "--trials", "2", "--out", str(tmp_path)]
    assert main(argv) == 0
    output = capsys.readouterr().out
    assert "lost" in output and "after heal" in output
    (result,) = tmp_path.glob("*.json")
    trials = json.loads(result.read_text())["trials"]
    assert len(trials) == 2 and all(t["lost_acknowledged_writes"] == 0 for t in trials)
    assert all(t["converged"] for t in trials)
    assert next(tmp_path.glob("*.png")).stat().st_size > 1000


def test_ring_topology_and_bad_options(tmp_path: Path) -> None:
    argv = [
        "partition-heal",
        "--replicas",
        "5",
        "--topology",
        "ring",
        "--duration",
        "2",
        "--trials",
        "1",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 0
    with pytest.raises(SystemExit):
        main(["lossy", "--drop", "0.95", "--out", str(tmp_path)])
