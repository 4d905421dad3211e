"""Scenarios for tests/test_distributed.py, run as ``torchrun --nproc_per_node=2 dist_worker.py``.

Each scenario runs on every rank; rank 0 writes what the test checks to ``OUT/result.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from saln import SELECTORS, BatchView, distributed
from saln import config as cfg
from saln.train import METHODS, Callback, fit, sharding
from tests import test_train


def tiny(out: Path, method: str, **overrides: Any) -> cfg.Config:
    """tests/test_train.py's tiny config, split so the 1008 training rows make 18 super-batches."""
    shape = {
        "data.val_fraction": 0.2,
        "data.reference_fraction": 0.1,
        "train.batch_size": 56,
        "train.epochs": 3,
    }
    return test_train.tiny(out, method, **{**shape, **overrides})


# Every method but the model-free selectors whose distributed path is uniform's and saln's
# (the sampler deals super-batches to ranks before any selector sees them): one launch is slow.
SAMPLER_ALIKE = {"spectral", "spectral_strata", "class_stratified"}
DISTRIBUTED_METHODS = [m for m in METHODS.names() if m not in SAMPLER_ALIKE]


def all_methods(out: Path) -> dict[str, Any]:
    from saln.train.engine import evaluate
    from saln.train.setup import build_run

    # Every method of a seed starts from the same learner: one initial val loss serves all.
    start = build_run(tiny(out, "standard"), distributed.rank(), 2)
    initial, _ = evaluate(start, start.split.val)
    result = {}
    for method in DISTRIBUTED_METHODS:
        # standard_matched trains a fifth of its epochs' examples: 8 let it learn, 5 do others
        epochs = 8 if method == "standard_matched" else 5
        config = tiny(out, method, **{"train.epochs": epochs, "optim.schedule": "cosine"})
        summary = fit(config, out / method)
        rows = (
            [json.loads(x) for x in (out / method / "metrics.jsonl").read_text().splitlines()]
            if distributed.rank() == 0
            else []
        )
        result[method] = {
            "initial_val_loss": initial,
            "final_val_loss": summary.final_val_loss,
            "examples": [r["examples"] for r in rows],
        }
    return result


def mismatch(out: Path) -> dict[str, Any]:
    """Ranks started with different configs: every rank refuses before any work (the same
    error on each, so the group stays usable for the scenarios after it)."""
    lr = 0.05 if distributed.rank() == 0 else 0.1
    refused = None
    try:
        fit(tiny(out, "uniform", **{"optim.lr": lr}), out / "run")
    except cfg.ConfigError as error:
        refused = str(error)
    return {"refused": refused, "wrote": (out / "run" / "metrics.jsonl").exists()}


class FailOnRank1(Callback):
    def on_train_batch_end(self, epoch: int, step: int, rows: int) -> None:
        if distributed.rank() == 1 and (epoch, step) == (1, 4):
            raise RuntimeError("injected failure on rank 1 at epoch 2 step 5")


def killed(out: Path) -> dict[str, Any]:
    """An uninterrupted run, then the same run failing on rank 1 mid-epoch, while rank 0 waits
    in a collective (one launch)."""
    fit(tiny(out, "saln"), out / "whole")
    fit(tiny(out, "saln"), out / "run", callbacks=[FailOnRank1()])
    return {}


def global_select(out: Path) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(0)
    n, keep, world, me = 40, 8, 2, distributed.rank()
    full = BatchView(
        indices=torch.arange(100, 100 + n * world),
        labels=torch.randint(0, 5, (n * world,), generator=gen),
        losses=torch.rand(n * world, generator=gen) * 3,
        ref_losses=torch.rand(n * world, generator=gen),
    )
    local = BatchView(
        indices=full.indices[me * n : (me + 1) * n],
        labels=full.labels[me * n : (me + 1) * n],
        losses=full.losses[me * n : (me + 1) * n],
        ref_losses=full.ref_losses[me * n : (me + 1) * n],
    )  # type: ignore[index]
    result = {}
    for name in ("loss", "rho_loss", "jest"):
        selector = SELECTORS.build(name)
        positions, scale = sharding.global_select(
            selector, local, keep, torch.Generator().manual_seed(7)
        )
        chosen = [None, None]
        torch.distributed.all_gather_object(chosen, (local.indices[positions].tolist(), scale))
        single = selector.select(
            full, keep * world, generator=torch.Generator().manual_seed(7)
        ).positions
        result[name] = {
            "distributed": sorted(i for part, _ in chosen for i in part),  # type: ignore[misc]
            "single": sorted(full.indices[single].tolist()),
            "scales": [s for _, s in chosen],
        }  # type: ignore[misc]
    return result


def features(out: Path) -> dict[str, Any]:
    from saln.data import build_dataset
    from saln.features import extract_features

    store = extract_features(
        build_dataset("digits").train,
        "pixels",
        image_size=8,
        cache_dir=out / "sharded",
        progress=False,
        rank=distributed.rank(),
        world_size=2,
    )
    return {
        "path": str(store.path),
        "rows": len(store),
        "sum": float(np.asarray(store.array, np.float64).sum()),
    }


def bad_steps(out: Path) -> dict[str, Any]:
    """Rank 0's loss turns non-finite at step 3, rank 1's at step 1: both must report step 1."""
    from saln.train.tracking import EpochAccumulator

    acc = EpochAccumulator(torch.device("cpu"), capacity=5)
    first_bad = 3 if distributed.rank() == 0 else 1
    for step in range(5):
        loss = float("nan") if step >= first_bad else 1.0
        acc.add(torch.tensor(loss), torch.tensor(1), 4, step)
    seen = [None] * 2
    torch.distributed.all_gather_object(seen, acc.bad_step())
    return {"bad_step": seen}


def curator(out: Path) -> dict[str, Any]:
    """Curators on two ranks: each rank's batches are the ones saln train gives that rank, and
    InfoBatch's next epoch, planned from both ranks' losses, is the same plan on each."""
    from saln import Curator
    from saln.train.setup import build_run

    ctx = build_run(tiny(out, "uniform"), distributed.rank(), 2)
    model_free = Curator(ctx.split.train, "uniform", epochs=3, batch_size=56)
    same = []
    for epoch in range(2):
        ctx.sampler.set_epoch(epoch)
        model_free.set_epoch(epoch)
        same.append(list(model_free.batch_sampler) == ctx.sampler.plan_epoch().rows)
    pruning = Curator(ctx.split.train, "infobatch", epochs=8, batch_size=56)
    pruning.set_epoch(0)
    for rows in pruning.batch_sampler:
        indices = torch.as_tensor(rows)
        pruning.loss(indices.double() % 7, indices)  # a loss per sample, wherever it trains
    pruning.end_epoch()
    pruning.set_epoch(1)
    plans: list[Any] = [None, None]
    torch.distributed.all_gather_object(plans, sorted(pruning.pool.indices.tolist()))
    return {"same_as_saln_train": same, "same_plan_on_both_ranks": plans[0] == plans[1],
            "planned": len(plans[0]), "train_rows": len(ctx.split.train),
            "proxy": proxy_in_step(ctx.split.train)}  # fmt: skip


def proxy_in_step(train: Any) -> dict[str, Any]:
    """Method proxy's Curator on two ranks: each scores and trains on its own rows, and the
    proxies' gradients are averaged, so both end with the same weights."""
    from torch import nn

    from saln import Curator

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))
    initial = torch.cat([p.detach().flatten() for p in net.parameters()])
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    curator = Curator(train, "proxy", epochs=1, batch_size=56, filter_ratio=0.5, proxy=net,
                      proxy_optimizer=optimizer, proxy_every=1)  # fmt: skip
    gen = torch.Generator().manual_seed(1)
    data, targets = torch.randn(2000, 6, generator=gen), torch.randint(0, 4, (2000,), generator=gen)
    curator.set_epoch(0)
    trained: list[int] = []
    for rows in curator.batch_sampler:
        indices = torch.as_tensor(rows)
        kept = curator.select(data[indices], targets[indices], indices)
        trained += indices[kept].tolist()
    final = torch.cat([p.detach().flatten() for p in net.parameters()])
    seen: list[Any] = [None, None]
    torch.distributed.all_gather_object(seen, (final.tolist(), trained))
    return {"same_weights": seen[0][0] == seen[1][0], "trained": not torch.equal(final, initial),
            "disjoint_rows": not set(seen[0][1]) & set(seen[1][1])}  # fmt: skip


def accelerate(out: Path) -> dict[str, Any]:
    """A Curator's loader through ``accelerator.prepare``: each process trains the batches
    torchrun gives it, InfoBatch plans alike on both; a loader not prepared is refused."""
    from accelerate import Accelerator
    from torch.utils.data import DataLoader, TensorDataset

    from saln import Curator

    accelerator = Accelerator(cpu=True)
    rows = TensorDataset(torch.arange(1000))
    found: dict[str, Any] = {"same_as_torchrun": []}
    for method in ("uniform", "saln", "infobatch"):
        features = torch.randn(1000, 8, generator=torch.Generator().manual_seed(0))
        made = {"epochs": 2, "batch_size": 40, "features": features, "seed": 3}
        prepared = Curator(1000, method, sharded_by="accelerate", **made)
        alone = Curator(1000, method, **made)
        loader = accelerator.prepare(DataLoader(rows, batch_sampler=prepared.batch_sampler))
        for epoch in range(2):
            prepared.set_epoch(epoch)
            alone.set_epoch(epoch)
            expected, trained = list(alone.batch_sampler), []
            for (indices,) in loader:
                prepared.loss(indices.double() % 7, indices)
                alone.loss(indices.double() % 7, indices)
                trained.append(indices.tolist())
            found["same_as_torchrun"].append(trained == expected)
            prepared.end_epoch()
            alone.end_epoch()
    plans: list[Any] = [None, None]
    torch.distributed.all_gather_object(plans, sorted(prepared.pool.indices.tolist()))
    found["same_plan_on_both_ranks"] = plans[0] == plans[1] and len(plans[0]) < 1000
    unprepared = DataLoader(rows, batch_sampler=prepared.batch_sampler)
    try:
        for (indices,) in unprepared:
            prepared.loss(indices.double(), indices)
        found["refused"] = ""
    except ValueError as err:
        found["refused"] = str(err)
    refusals: list[Any] = [None, None]
    torch.distributed.all_gather_object(refusals, found["refused"])
    return {**found, "refused": refusals}


PASSING = (all_methods, global_select, features, bad_steps, curator, accelerate, mismatch)


def together(out: Path) -> dict[str, Any]:
    """Every passing scenario in one process group, each in its own folder: one launch."""
    results = {}
    for scenario in PASSING:
        (out / scenario.__name__).mkdir(parents=True, exist_ok=True)
        results[scenario.__name__] = scenario(out / scenario.__name__)
    return results


SCENARIOS = {f.__name__: f for f in (*PASSING, together, killed)}

if __name__ == "__main__":
    scenario, out = sys.argv[1], Path(sys.argv[2])
    distributed.compute_init("cpu")
    result = SCENARIOS[scenario](out)
    if distributed.rank() == 0:
        (out / "result.json").write_text(json.dumps(result))
    distributed.shutdown()
