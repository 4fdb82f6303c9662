"""``python -m simulations``: runs a scenario, prints the table, writes PNG and JSON."""

from __future__ import annotations

import json
import sys
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


@pytest.mark.parametrize("absent", ["matplotlib", "rich"])
def test_without_the_sim_extra_it_stops_at_once_naming_it(
    absent: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, absent, None)  # as if not installed
    assert main(["partition-heal", "--trials", "1", "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert absent in error and "crdtmem[sim]" in error
    assert not any(tmp_path.iterdir())
