"""``python -m simulations <scenario>``: run a partition scenario on the simulated network.

Shows progress while it runs, ends with a table of convergence time after healing
(p50/p99/max over the trials), messages and bytes per update and lost acknowledged
writes (must be 0), and writes a PNG plot of divergence over time and a JSON result.

Needs the ``sim`` extra (rich and matplotlib): ``pip install 'crdtmem[sim]'``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from dataclasses import asdict, fields
from pathlib import Path

from simulations.scenarios import SCENARIOS, Options, Trial, run_trial

# Not dependencies of the library itself: the `sim` extra installs them.
EXTRA_MODULES = ("rich", "matplotlib")


def missing_modules() -> list[str]:
    """The modules of the ``sim`` extra that are not installed."""
    return [name for name in EXTRA_MODULES if importlib.util.find_spec(name) is None]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def plot(trials: list[Trial], title: str, target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 4.5))
    for trial in trials:
        times = [t for t, _ in trial.divergence]
        missing = [m for _, m in trial.divergence]
        axes.plot(times, missing, linewidth=1, label=f"seed {trial.seed}")
    first = trials[0]
    for start, end, kind in first.faults:
        axes.axvspan(start, end, alpha=0.08 if kind != "partition" else 0.15, color="red")
    axes.set_xlabel("virtual time (s); shaded: faults of the first trial")
    axes.set_ylabel("missing updates, summed over replicas")
    axes.set_title(title)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(target, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulations", description=__doc__)
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--replicas", type=int)
    parser.add_argument("--topology", choices=["mesh", "ring", "random"])
    parser.add_argument("--drop", type=float, help="message loss probability (0 to 0.9)")
    parser.add_argument("--duplicate", type=float, help="message duplication probability")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--duration", type=float, help="virtual seconds of writing")
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args(argv)
    faults, defaults = SCENARIOS[args.scenario]
    options = Options(**defaults)
    for item in fields(Options):
        given = getattr(args, item.name, None)
        if given is not None and item.name != "seed":
            setattr(options, item.name, given)
    if not 0 <= options.drop <= 0.9 or options.replicas < 2:
        parser.error("--drop must be in [0, 0.9] and --replicas at least 2")
    missing = missing_modules()
    if missing:
        print(
            f"python -m simulations needs {' and '.join(missing)}, which crdtmem does not "
            "install by itself: pip install 'crdtmem[sim]' (from a clone: pip install -e "
            "'.[sim]')",
            file=sys.stderr,
        )
        return 2
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    console = Console()
    trials: list[Trial] = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"{args.scenario}", total=args.trials)
        for k in range(args.trials):
            trials.append(run_trial(options, args.seed + k, faults))
            progress.advance(task)
    times = [t.convergence_after_heal for t in trials]
    updates = sum(t.updates for t in trials)
    table = Table(
        title=f"{args.scenario}: {options.replicas} replicas, {options.topology}, "
        f"drop {options.drop:.0%}, {args.trials} trials (virtual time)"
    )
    for header in (
        "converged",
        "after heal p50 s",
        "p99 s",
        "max s",
        "messages/update",
        "bytes/update",
        "lost acknowledged writes",
    ):
        table.add_column(header, justify="right")
    lost = sum(t.lost_acknowledged_writes for t in trials)
    table.add_row(
        f"{sum(t.converged for t in trials)}/{len(trials)}",
        f"{percentile(times, 0.5):.2f}",
        f"{percentile(times, 0.99):.2f}",
        f"{max(times):.2f}",
        f"{sum(t.messages for t in trials) / updates:.1f}",
        f"{sum(t.bytes for t in trials) / updates:,.0f}",
        f"[{'green' if lost == 0 else 'red'}]{lost}",
    )
    console.print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{args.scenario}-{options.replicas}-{options.topology}-seed{args.seed}"
    plot(trials, f"{args.scenario}: divergence over time", stem.with_suffix(".png"))
    result = {
        "scenario": args.scenario,
        "options": asdict(options),
        "trials": [asdict(t) for t in trials],
    }
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    console.print(f"plot: {stem.with_suffix('.png')}  result: {stem.with_suffix('.json')}")
    console.print("replay any trial with --seed <its seed> --trials 1")
    return 0 if lost == 0 and all(t.converged for t in trials) else 1


if __name__ == "__main__":
    sys.exit(main())
