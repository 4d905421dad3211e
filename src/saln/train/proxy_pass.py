"""The proxy's two-pass form (``selection.proxy_pass: first``): the proxy runs over the run's
whole seeded schedule before training, a one-off cost, and the run replays the rows it chose.

The pass loads the batches the run will load (the same plan per epoch, the same augmentation
seeds), so its proxy sees exactly what an online proxy would and chooses the same rows. Its
choices are cached beside the features (``features.cache_dir``), keyed by everything that
decides them, so a resumed run replays them without a second pass.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from saln.config import Config
from saln.data.loaders import Pipeline
from saln.io import exclusive, save_torch_atomic
from saln.sampling import SelectiveBatchSampler, epoch_seed
from saln.selection import BatchView, Selector, tail_keep
from saln.train.proxy import ProxyModel
from saln.train.schedules import EpochProgress

Replay = dict[tuple[int, int], torch.Tensor]  # (epoch, step) -> kept positions in the batch


def first_pass(
    proxy: ProxyModel,
    sampler: SelectiveBatchSampler,
    data: Pipeline,
    selector: Selector,
    keep_at: Callable[[int], int],
    loaded: int,
    epochs: int,
    seed: int,
) -> Replay:
    """Every step's kept positions, as the online form would choose them; the sampler is
    left as it was found."""
    state, replay = sampler.state_dict(), {}
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        plan = sampler.plan_epoch()
        if keep_at(epoch) == loaded:  # outside the selecting window: every row trains
            continue
        progress = EpochProgress(epoch, epochs, [len(rows) for rows in plan.rows])
        batches = data.batches(plan.rows, train=True, seed=epoch_seed(seed, epoch, 2), epoch=epoch)
        for step, (images, labels, indices) in enumerate(batches):
            proxy.progress = progress.now()
            keep = tail_keep(len(indices), keep_at(epoch), loaded)
            view = BatchView(indices=indices, labels=labels, losses=proxy.score(images, labels),
                             epoch=epoch, step=step)  # fmt: skip
            positions = selector.select(view, keep).positions.to(images.device)
            proxy.learn(images[positions], labels[positions])
            replay[(epoch, step)] = positions.cpu()
            progress.advance()
    sampler.load_state_dict(state)
    return replay


def pass_key(config: Config, data: dict[str, Any], rank: int, world_size: int) -> str:
    """What decides the pass's choices: the whole config but how the run is shown, the data
    (its fingerprint: an edited image changes it) and the rank (each passes over its own rows)."""
    settings = config.to_dict()
    settings["train"] = {k: v for k, v in settings["train"].items() if k not in ("progress",)}
    identity = json.dumps(
        {"config": settings, "data": data, "rank": rank, "world": world_size}, sort_keys=True
    )
    return hashlib.sha256(identity.encode()).hexdigest()[:20]


def cached_first_pass(
    config: Config,
    data: dict[str, Any],
    rank: int,
    world_size: int,
    run_pass: Callable[[], Replay],
) -> tuple[Replay, float]:
    """The pass's choices and the seconds it took when it ran, from the cache or run now."""
    key = pass_key(config, data, rank, world_size)
    path = Path(config.features.cache_dir) / f"proxy-pass-{key}.pt"
    with exclusive(path.with_suffix(".lock")):
        if path.exists():
            cached = torch.load(path, map_location="cpu", weights_only=True)
            keys = [(int(e), int(s)) for e, s in cached["keys"]]
            return dict(zip(keys, cached["positions"], strict=True)), float(cached["seconds"])
        start = time.perf_counter()
        replay = run_pass()
        seconds = time.perf_counter() - start
        stored = {"keys": [list(k) for k in replay], "positions": list(replay.values())}
        save_torch_atomic(path, {**stored, "seconds": seconds})
    return replay, seconds
