"""Per-method step cost in one run: selection share of the step, epoch time vs standard.

    python -m benchmarks.bench_step [--config configs/demo.yaml] [--epochs 3] [--out PATH]

Every method trains the same data, split, initial learner and seed, one after another in this
process. "Epoch time" is the training part of an epoch (data wait + selection + step; eval and
checkpoints excluded), averaged over epochs after the first (warm-up). One-off costs (feature
extraction, reference model) are reported separately, as the engine records them.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from statistics import mean
from typing import Any

from benchmarks.common import RESULTS, machine, write_json
from saln import config as cfg
from saln.runs import RunStore
from saln.train import METHODS, fit


def epoch_times(run: Path) -> dict[str, float]:
    rows = RunStore(run).metrics()
    steady = rows[1:] or rows
    parts = {
        k: mean(getattr(r, f"time_{k}") for r in steady) for k in ("data", "selection", "step")
    }
    parts["train"] = sum(parts.values())
    parts["steps"] = mean(r.steps for r in steady)
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--methods", default=",".join(METHODS.names()))
    parser.add_argument(
        "--set", action="append", default=[], help="config overrides section.key=value"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    overrides: dict[str, Any] = dict(cfg.parse_override(s) for s in args.set)
    overrides.update({"train.epochs": args.epochs, "train.progress": False})
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            config = cfg.load(args.config, {**overrides, "train.method": method})
            summary = fit(config, Path(tmp) / method)
            times = epoch_times(Path(tmp) / method)
            rows[method] = {
                **times,
                "selection_share_of_step": times["selection"] / times["step"],
                "one_off": summary.one_off,
                "kept_batch": summary.kept_batch,
                "loaded_batch": summary.loaded_batch,
                "device": summary.device,
            }
    base = rows.get("standard", {}).get("train")
    for method, row in rows.items():
        row["epoch_time_vs_standard"] = row["train"] / base if base else None
        print(
            f"{method:17s} epoch {row['train']:.3f} s"
            f" | vs standard {row['epoch_time_vs_standard'] or float('nan'):.2f}"
            f" | selection/step {row['selection_share_of_step']:.2f}",
            flush=True,
        )
    device = next(iter(rows.values()))["device"].split(":")[0]
    payload = {
        "benchmark": "step",
        "machine": machine(),
        "config": args.config,
        "overrides": args.set,
        "epochs": args.epochs,
        "methods": rows,
    }
    out = write_json(payload, args.out or RESULTS / f"step_{device}.json")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
