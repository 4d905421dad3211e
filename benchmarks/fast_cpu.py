"""The strong CIFAR-10 baseline on this CPU: a widths x epochs grid of ``cifar10_fast_cpu``, and
its standard beside ``cifar10_full_cpu``'s (the weak small_cnn baseline), timed in one sitting.

    python -m benchmarks.fast_cpu grid                 # seed 0 of each grid point
    python -m benchmarks.fast_cpu study --point NAME   # seeds 0-2 of the point and the baseline

Every run is a ``saln train`` run under ``runs/fast_cpu/`` (a killed benchmark resumes: finished
runs are read back, an interrupted one resumes from its checkpoint); the summaries go to
``benchmarks/results/fast_cpu_{grid,study}.json``. Runs go one after another, the baseline's
and the recipe's seeds interleaved, so a noisy spell of the machine hits both.
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, machine, write_json
from saln.config import load
from saln.train.engine import fit

RUNS = Path(os.environ.get("SALN_FAST_CPU_RUNS", "runs/fast_cpu"))
FAST = "cifar10_fast_cpu"
WEAK = "cifar10_full_cpu"
QUIET = {"train.progress": False, "train.method": "standard"}

# name -> overrides of cifar10_fast_cpu; each with oneDNN's channels-last, as the config has it
GRID: dict[str, dict[str, Any]] = {
    "w32-64-64_e10": {"train.epochs": 10},
    "w32-64-64_e8": {"train.epochs": 8},
    "w32-64-64_e6": {"train.epochs": 6},
    "w32-64-64_e8_tta1": {"train.epochs": 8, "eval.tta": 1},  # 2 eval views, not 6
}
# the weak baseline as published (NCHW on CPU) and with the same channels-last speed-up
BASELINES: dict[str, dict[str, Any]] = {
    "small_cnn_channels_last": {"train.cpu_channels_last": True},
    "small_cnn_as_published": {},
}


def train(config_name: str, name: str, overrides: dict[str, Any], seed: int) -> dict[str, Any]:
    config = load(config_name, {**QUIET, **overrides, "train.seed": seed})
    out = RUNS / f"{name}_s{seed}"
    summary = fit(config, out, resume=out.exists())
    print(f"{name} seed {seed}: test {summary.test_acc_last:.4f} in {summary.wall_time_s:.0f} s")
    return {
        "name": name,
        "config": config_name,
        "overrides": overrides,
        "seed": seed,
        "run": str(out),
        **{k: v for k, v in summary.to_dict().items() if k != "time"},
        "time": summary.time,
    }


def stats(runs: list[dict[str, Any]], key: str) -> dict[str, float]:
    values = [float(r[key]) for r in runs]
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": spread, "n": len(values)}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    names = sorted({r["name"] for r in runs})
    return {
        name: {
            key: stats([r for r in runs if r["name"] == name], key)
            for key in ("test_acc_last", "wall_time_s", "total_time_s", "train_time_s")
        }
        for name in names
    }


def grid(points: list[str]) -> None:
    runs = [train(FAST, name, GRID[name], 0) for name in points]
    write_json({"machine": machine(), "runs": runs, "summary": summarise(runs)}, _out("grid"))


def study(point: str, seeds: list[int], baselines: list[str], baseline_seeds: int) -> None:
    """``point`` for every seed; the baselines for the first ``baseline_seeds`` of them, each
    right after the point's run of that seed (their time hardly depends on the seed)."""
    runs = []
    for i, seed in enumerate(seeds):
        runs.append(train(FAST, point, GRID[point], seed))
        for name in baselines if i < baseline_seeds else []:
            runs.append(train(WEAK, name, BASELINES[name], seed))
    summary = summarise(runs)
    ratios = {
        name: summary[point]["wall_time_s"]["mean"] / summary[name]["wall_time_s"]["mean"]
        for name in baselines
    }
    payload = {"machine": machine(), "point": point, "runs": runs, "summary": summary,
               "wall_time_ratio_vs": ratios}  # fmt: skip
    write_json(payload, _out("study"))


def _out(kind: str) -> Path:
    return RESULTS / f"fast_cpu_{kind}.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("plan", choices=("grid", "study", "baseline"))
    parser.add_argument("--point", default="w32-64-64_e10", choices=sorted(GRID))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--points", default=",".join(GRID), help="grid: the points to train")
    parser.add_argument("--baselines", default=",".join(BASELINES))
    parser.add_argument("--baseline-seeds", type=int, default=3, help="study: baselines' seeds")
    args = parser.parse_args()
    if args.plan == "grid":
        grid(args.points.split(","))
    elif args.plan == "baseline":  # the weak baseline's seed 0 alone, ahead of the rest
        train(WEAK, "small_cnn_as_published", BASELINES["small_cnn_as_published"], 0)
    else:
        seeds = [int(s) for s in args.seeds.split(",")]
        study(args.point, seeds, args.baselines.split(","), args.baseline_seeds)


if __name__ == "__main__":
    main()
