"""How fast the box ran the same work in each run: standard's step throughput, run by run.

    python -m benchmarks.step_throughput docs/results/fast_cifar10_cpu/study/runs

Every standard-type run (standard, ``standard_matched`` and the frontier's points) steps on
whole loaded batches of one config, so its images per second of step time is a probe of the
machine's speed while it ran. The median over the epochs after the whitening bias's (they cost
more per image) is taken per run; the spread of those medians is how far a wall time moves
between runs of one config on this box, which is what a time verdict between sittings must
beat. Written to ``benchmarks/results/step_throughput_cpu.json``.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, machine, write_json
from saln.report.aggregate import Run, load_runs
from saln.runs.records import RunLabel

STANDARD_TYPE = ("standard", "standard_matched")  # whole loaded batches, no selection work


def step_throughput(run: Run, skip_epochs: int) -> float:
    """Median images per second of step time over the epochs after the first ``skip_epochs``."""
    rates = [r.examples / r.time_step for r in run.metrics[skip_epochs:] if r.time_step > 0]
    if not rates:
        raise SystemExit(f"{run.path}: no epoch after the first {skip_epochs} to measure")
    return statistics.median(rates)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("paths", nargs="+", type=Path, help="runs or comparison folders")
    parser.add_argument(
        "--skip-epochs", type=int, default=3, help="leading epochs left out (the whitening bias's)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "step_throughput_cpu.json")
    args = parser.parse_args(argv)
    runs = load_runs(args.paths)
    rates = {
        run.path.name: step_throughput(run, args.skip_epochs)
        for run in runs.runs
        if RunLabel.parse(run.method).method in STANDARD_TYPE
    }
    if not rates:
        raise SystemExit("no standard-type runs among the paths")
    summary: dict[str, Any] = {
        "runs": len(rates),
        "median_img_per_s": statistics.median(rates.values()),
        "slowest_img_per_s": min(rates.values()),
        "fastest_img_per_s": max(rates.values()),
        "fastest_over_slowest": max(rates.values()) / min(rates.values()),
    }
    print({k: round(v, 2) for k, v in summary.items()})
    write_json(
        {"machine": machine(), "skip_epochs": args.skip_epochs, "summary": summary,
         "img_per_s_by_run": rates},
        args.out,
    )  # fmt: skip


if __name__ == "__main__":
    main()
