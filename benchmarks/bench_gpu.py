"""The GPU fast path, measured as ratios within one run.

    PYTHONPATH=src python -m benchmarks.bench_gpu --data data/cifar10-jpeg --out OUT/gpu.json

On an H100/H200 with the CIFAR-10 JPEG copy (ImageFolder layout). Every number is a ratio of two
measurements taken in this process:
1. standard training throughput through saln's engine (resident uint8 data, batched augmentation,
   bf16, channels_last) / the same model's pure train-step throughput on a tensor already on the
   GPU; at 32 px and at 224 px. Target >= 0.8.
2. saln epoch time / standard epoch time at filter ratio 0.8, with a fixed learner batch (JEST's
   convention; target <= 0.25) and with the paper's convention (reported as measured).
3. a whole epoch's SALN selection / the saln epoch. Target <= 0.01. On CUDA also with the
   Lanczos solve run eagerly (``features.cuda_graph=false``) against the default graphed one.
4. feature extraction throughput / encoder inference throughput. Target >= 0.8.
Every run uses the library's defaults, so on one GPU its train steps and Lanczos solves replay
from CUDA graphs, and the pure step that ratio 1 divides by is graphed too. ``--graphs`` adds
graphed against eager steps at the paper's learner and batch.
``--smoke`` runs the same code on a tiny subset with the smallest networks (CPU-friendly) to check
the script itself.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from statistics import mean
from typing import Any

import torch

from benchmarks.common import RESULTS, fixed_batch_step, machine, sync, write_json
from saln import config as cfg
from saln.runs import RunStore
from saln.runs.records import EpochRecord
from saln.train import fit
from saln.train.graphs import WARMUP_STEPS


def pure_train_rate(
    config: cfg.Config, batch: int, steps: int, device: torch.device, graphed: bool = False
) -> float:
    """Train steps on one fixed batch already on the device: the model's compute limit (the
    same step replayed from CUDA graphs with ``graphed``)."""
    step = fixed_batch_step(config, batch, device, graphed)
    for _ in range(WARMUP_STEPS + 2):  # cuDNN autotuning, allocator, the graph's capture
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return batch * steps / (time.perf_counter() - start)


def graph_rates(config: cfg.Config, device: torch.device) -> dict[str, float]:
    """Steps/s eager and from CUDA graphs at the paper's trained rows (64 loaded, 12 kept)."""
    rates: dict[str, float] = {}
    for rows in (12, 64):
        eager = pure_train_rate(config, rows, 300, device) / rows
        graphed = pure_train_rate(config, rows, 300, device, graphed=True) / rows
        rates |= {f"eager_steps_per_s_{rows}": eager, f"graphed_steps_per_s_{rows}": graphed}
        rates[f"graphed_vs_eager_{rows}"] = graphed / eager
    return rates


def mean_rows_per_s(records: list[EpochRecord]) -> float:
    """Mean rows trained per second of training time over ``records``."""
    return mean(r.examples / max(r.train_time, 1e-9) for r in records)


def run(config: cfg.Config, out: Path, warmup_epochs: int = 1) -> dict[str, Any]:
    """Train, then read the steady-state epochs (after the warm-up ones) from the run's records."""
    summary = fit(config, out, overwrite=True)
    rows = RunStore(out).metrics()
    steady = rows[warmup_epochs:] or rows
    train_s = mean(r.train_time for r in steady)
    return {
        "epoch_train_s": train_s,
        "rows_per_s": mean_rows_per_s(steady),
        "selection_s": mean(r.time_selection for r in steady),
        "examples": steady[-1].examples,
        "steps": steady[-1].steps,
        "one_off": summary.one_off,
        "val_acc": summary.final_val_acc,
    }


def measure_graphs(base: dict[str, Any], tmp: Path) -> dict[str, float]:
    """The paper's learner and batch (resnet18_cifar, 32 px, 64 loaded, 12 kept): pure steps
    and a SALN epoch through the engine, eager and from CUDA graphs."""
    paper = {
        **base,
        "model.learner": "resnet18_cifar",
        "data.image_size": 32,
        "features.image_size": 224,
        "train.method": "saln",
        "train.batch_size": 64,
        "train.epochs": 2,
    }
    config = cfg.load(None, paper)
    result = graph_rates(config, torch.device(config.train.device))
    eager_steps = {**paper, "train.cuda_graphs": False}
    eager = run(cfg.load(None, eager_steps), tmp / "saln-paper-eager")
    graphed = run(config, tmp / "saln-paper-graphs")
    result["engine_saln_paper_epoch_s_eager"] = eager["epoch_train_s"]
    result["engine_saln_paper_epoch_s_graphs"] = graphed["epoch_train_s"]
    result["engine_graphs_vs_eager_time"] = graphed["epoch_train_s"] / eager["epoch_train_s"]
    return result


def graph_selection_ratios(runs: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Ratio 3 with the default graphed Lanczos solve and with an eager one (CUDA runs only)."""
    eager = runs.get("saln_fixed_eager_selection")
    if eager is None:
        return {}
    graphed = runs["saln_fixed"]
    return {
        "selection_share_of_saln_epoch_cuda_graph": graphed["selection_s"]
        / graphed["epoch_train_s"],
        "selection_share_of_saln_epoch_eager_selection": eager["selection_s"]
        / eager["epoch_train_s"],
        "selection_cuda_graph_vs_eager": graphed["selection_s"] / eager["selection_s"],
    }


def ratios(runs: dict[str, dict[str, Any]], pure: float) -> dict[str, float]:
    """Issue 6's four engine ratios from one image size's runs."""
    return graph_selection_ratios(runs) | {
        "engine_standard_img_per_s": runs["standard"]["rows_per_s"],
        "standard_throughput_ratio": runs["standard"]["rows_per_s"] / pure,
        "saln_vs_standard_fixed_learner_batch": runs["saln_fixed"]["epoch_train_s"]
        / runs["standard_fixed"]["epoch_train_s"],
        "saln_vs_standard_paper_convention": runs["saln_paper"]["epoch_train_s"]
        / runs["standard_paper"]["epoch_train_s"],
        "selection_share_of_saln_epoch": runs["saln_fixed"]["selection_s"]
        / runs["saln_fixed"]["epoch_train_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", required=True, help="CIFAR-10 in ImageFolder layout (train/, test/)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "gpu.json")
    parser.add_argument(
        "--epochs", type=int, default=3, help="epochs per timed run (first is warm-up)"
    )
    parser.add_argument("--sizes", default="32,224", help="image sizes: 32 and/or 224 (or none)")
    parser.add_argument(
        "--graphs",
        action="store_true",
        help="also: CUDA-graph steps against eager ones, the paper's learner and batch (CUDA only)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes, to check the script on CPU"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(".cache/saln"),
        help="features and decoded images, shared with later calls and the comparison",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="saln-gpu-") as runs:
        measure(args, Path(runs))


def measure(args: argparse.Namespace, tmp: Path) -> None:
    """Every measurement of one call; runs go under ``tmp``, results to ``args.out``."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    grid = {32: (512, 256), 224: (256, 128), 16: (32, 16)}  # size -> (batch, learner batch)
    chosen = [16] if args.smoke else [int(x) for x in args.sizes.split(",") if x]
    sizes = [(size, *grid[size]) for size in chosen]
    base = {
        "data.dataset": f"imagefolder:{args.data}",
        "data.loader": "resident",
        "model.learner": "resnet18",
        "features.encoder": "efficientnet_lite0",
        "features.cache_dir": str(args.cache_dir),
        "train.epochs": args.epochs,
        "train.progress": False,
        "optim.lr": 0.01,
        "train.device": str(device),
    }
    if args.smoke:  # the smoke checks the script, not the networks: the smallest of each
        base.update(
            {
                "features.encoder": "pixels",
                "features.image_size": 8,
                "train.epochs": 1,
                "model.learner": "small_cnn",
            }
        )
    payload: dict[str, Any] = {
        "benchmark": "gpu",
        "machine": machine(),
        "device": str(device),
        "smoke": args.smoke,
        "results": {},
    }
    for size, batch, learner_batch in sizes:
        common = {
            **base,
            "data.image_size": size,
            "features.image_size": base.get("features.image_size", 224),
        }
        key = f"{size}px"
        entry: dict[str, Any] = {"runs": {}}
        payload["results"][key] = entry
        fixed = {"train.learner_batch_size": learner_batch}
        paper = {"train.batch_size": learner_batch}
        plan = {  # run name -> overrides; the ratios below read them by name
            "standard": {"train.method": "standard", "train.batch_size": batch},
            "standard_fixed": {**fixed, "train.method": "standard"},
            "saln_fixed": {**fixed, "train.method": "saln"},
            "saln_paper": {**paper, "train.method": "saln"},
            "standard_paper": {**paper, "train.method": "standard"},
        }
        warmups = dict.fromkeys(plan, 1)
        if device.type == "cuda":
            plan["saln_fixed_eager_selection"] = {
                **plan["saln_fixed"],
                "features.cuda_graph": False,
            }
            # A graphed solve's 1st epoch runs eagerly and its 2nd captures: 2 warm-up epochs.
            for name in ("saln_fixed", "saln_paper"):
                plan[name] = {**plan[name], "train.epochs": args.epochs + 1}
                warmups[name] = 2
        std_cfg = cfg.load(None, {**common, **plan["standard"]})
        entry["steps_graphed"] = cfg.graphed_steps(std_cfg, device.type, 1)
        entry["pure_train_img_per_s"] = pure_train_rate(
            std_cfg, batch, 10 if args.smoke else 50, device, entry["steps_graphed"]
        )
        for name, overrides in plan.items():
            entry["runs"][name] = run(
                cfg.load(None, {**common, **overrides}), tmp / f"{name}-{key}", warmups[name]
            )
            write_json(payload, args.out)  # partial results survive a time-out
        entry.update(ratios(entry["runs"], entry["pure_train_img_per_s"]))
        print(key, {k: round(v, 3) for k, v in entry.items() if isinstance(v, float)}, flush=True)
        write_json(payload, args.out)
    if args.graphs and device.type == "cuda":
        payload["graphs"] = measure_graphs(base, tmp)
        print("graphs", {k: round(v, 3) for k, v in payload["graphs"].items()}, flush=True)
    elif args.graphs:
        print("--graphs skipped: CUDA graphs need a CUDA device", flush=True)
    write_json(payload, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
