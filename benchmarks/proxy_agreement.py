"""How well method proxy's proxy stands in for its learner, measured on finished proxy runs.

    python -m benchmarks.proxy_agreement runs/fast_cifar10_study/runs/proxy-seed*

Each run's final learner and proxy (from its checkpoint) score the training rows in the run's
super-batches (the first epoch's plan, without augmentation), and per batch: Spearman's rank
correlation of the two models' losses; the share of the proxy's kept rows (the top ``keep``
proxy losses, what the run trains on) that the learner's own top ``keep`` holds (what method
``loss`` would train on; chance is ``keep / loaded``); the learner's mean loss on the rows the
proxy kept and on those it dropped; and the kept rows' class mix (the largest class's share,
and its total-variation distance from the batch's). Measured at the end of training: how far
the two models agree then, not how they agreed on the way. JSON to
``benchmarks/results/proxy_agreement_cpu.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from benchmarks.common import RESULTS, machine, write_json
from saln import config as cfg
from saln.distributed import unwrap
from saln.selection.loss import top_k_positions
from saln.train import checkpoint
from saln.train.setup import build_run
from saln.train.step import score_losses


def class_shares(labels: torch.Tensor, classes: int) -> np.ndarray:
    return np.bincount(labels.numpy(), minlength=classes) / max(1, len(labels))


def batch_agreement(
    learner: torch.Tensor, proxy: torch.Tensor, labels: torch.Tensor, keep: int, classes: int
) -> dict[str, float]:
    """One batch's agreement between the learner's and the proxy's per-row losses."""
    by_proxy = top_k_positions(proxy, keep)
    by_learner = top_k_positions(learner, keep)
    dropped = torch.ones(len(proxy), dtype=torch.bool)
    dropped[by_proxy] = False
    kept_mix, batch_mix = class_shares(labels[by_proxy], classes), class_shares(labels, classes)
    overlap = len(set(by_proxy.tolist()) & set(by_learner.tolist())) / keep
    return {
        "spearman": float(spearmanr(learner.numpy(), proxy.numpy()).statistic),
        "top_overlap": overlap,
        "learner_loss_kept": float(learner[by_proxy].mean()),
        "learner_loss_dropped": float(learner[dropped].mean()),
        "kept_largest_class_share": float(kept_mix.max()),
        "kept_class_tv_from_batch": float(0.5 * np.abs(kept_mix - batch_mix).sum()),
    }


def measure(run: Path) -> dict[str, Any]:
    config = cfg.load(run / "config.yaml")
    ctx = build_run(config)
    state = checkpoint.load(run)
    if ctx.proxy is None or state is None or not state.get("proxy"):
        raise SystemExit(f"{run} is not a checkpointed run of method proxy")
    unwrap(ctx.model).load_state_dict(state["model"])
    ctx.proxy.load_state_dict(state["proxy"])
    ctx.sampler.set_epoch(0)
    plan = ctx.sampler.plan_epoch()
    classes = len(ctx.bundle.classes)
    rows = []
    for images, labels, _ in ctx.train_data.batches(plan.rows, train=False, seed=0):
        if len(labels) < ctx.loaded_batch:
            continue  # a short last batch keeps a different share
        learner = score_losses(ctx.model, images, labels, config.train.amp).cpu()
        proxy = ctx.proxy.score(images, labels).cpu()
        rows.append(batch_agreement(learner, proxy, labels.cpu(), ctx.keep, classes))
    means = {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}
    return {"run": str(run), "batches": len(rows), "loaded": ctx.loaded_batch,
            "keep": ctx.keep, "chance_overlap": ctx.keep / ctx.loaded_batch, **means}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path, help="finished runs of method proxy")
    parser.add_argument("--out", type=Path, default=RESULTS / "proxy_agreement_cpu.json")
    args = parser.parse_args(argv)
    found = []
    for run in args.runs:
        found.append(measure(run))
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in found[-1].items()})
    write_json({"machine": machine(), "runs": found}, args.out)


if __name__ == "__main__":
    main()
