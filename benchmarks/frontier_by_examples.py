"""Each method against standard's compute frontier with examples trained as the cost, beside
the report's verdict by total time.

    python -m benchmarks.frontier_by_examples --name study runs/fast_cifar10_study
    python -m benchmarks.frontier_by_examples --name prune0.3 \\
        runs/fast_cifar10_study/runs/standard-seed* \\
        runs/fast_cifar10_study/runs/standard_matched@0.* runs/fast_ib03

Wall time moves with the machine's speed between sittings; examples trained do not. For a
method whose step costs what standard's does per example (InfoBatch: the same batch size, no
extra forward), examples are a fair cost and let runs of different sittings share one frontier.
For a method with selection work or smaller steps (proxy, uniform) they undercount its cost:
read its time verdict. The verdicts are the report's (``saln.report.frontier``): per seed,
standard interpolated at the method's cost, Welch over seeds. Each ``--name`` is one entry of
``benchmarks/results/frontier_by_examples_cpu.json`` (other entries are kept).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, machine, write_json
from saln.report.aggregate import (
    Run,
    RunSet,
    competes,
    load_runs,
    points,
    standard_frontier,
    total_time,
)
from saln.report.frontier import frontier_verdict

COSTS: dict[str, Callable[[Run], float]] = {
    "examples": lambda run: float(run.summary.examples_trained),
    "total_time_s": total_time,
}


def judge(runs: RunSet) -> dict[str, Any]:
    """Every competing method's verdict against the frontier, on each cost."""
    standard_examples = [r.summary.examples_trained for r in runs.of("standard")]
    if not standard_examples:
        raise SystemExit("no standard runs among the paths: the frontier needs them")
    frontiers = {name: standard_frontier(runs, cost) for name, cost in COSTS.items()}
    table = {}
    for method in filter(competes, runs.methods()):
        group = runs.of(method)
        table[method] = {
            "seeds": [r.seed for r in group],
            "examples_share_of_standard": sum(r.summary.examples_trained for r in group)
            / len(group)
            / (sum(standard_examples) / len(standard_examples)),
            **{
                f"vs_frontier_by_{name}": frontier_verdict(points(group, cost), frontiers[name])
                for name, cost in COSTS.items()
            },
        }
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("paths", nargs="+", type=Path, help="runs or comparison folders")
    parser.add_argument("--name", required=True, help="this entry's key in the JSON")
    parser.add_argument("--out", type=Path, default=RESULTS / "frontier_by_examples_cpu.json")
    args = parser.parse_args(argv)
    table = judge(load_runs(args.paths))
    for method, row in table.items():
        by = {c: row[f"vs_frontier_by_{c}"] for c in COSTS}
        print(method, {c: (v["difference"], v["p"], v["verdict"]) for c, v in by.items()})
    entries = json.loads(args.out.read_text())["entries"] if args.out.exists() else {}
    entries[args.name] = {"paths": [str(p) for p in args.paths], "methods": table}
    write_json({"machine": machine(), "entries": entries}, args.out)


if __name__ == "__main__":
    main()
