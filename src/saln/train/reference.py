"""The reference ("irreducible loss") model for RHO-LOSS and JEST.

Trained with plain training on the holdout part of the training split that no learner sees;
its per-sample losses on the whole training source are computed once, cached on disk, and
looked up by global index. Training and scoring time are one-off costs of the run.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from saln.config import Config
from saln.data import DatasetBundle, Split
from saln.data.loaders import Pipeline
from saln.io import exclusive, save_torch_atomic
from saln.models import DataInitialised, EpochAware
from saln.sampling import epoch_seed
from saln.train.components import (
    build_optimizer,
    eval_batches,
    init_from_data,
    new_learner,
    training_chunks,
)
from saln.train.lookahead import Lookahead
from saln.train.schedules import EpochProgress
from saln.train.step import evaluate_batches, train_step


def reference_key(config: Config, bundle: DatasetBundle, split: Split) -> str:
    identity = {
        "dataset": bundle.train.fingerprint(),
        "holdout": hashlib.sha256(split.reference.tobytes()).hexdigest(),
        "learner": config.reference.learner or config.model.learner,
        # airbench's shape, when it is that
        "shape": [config.model.widths, config.model.depth, config.model.whiten_bias_epochs],
        "augment": config.data.augment,
        "epochs": config.reference.epochs,
        "optim": config.to_dict()["optim"],
        "batch_size": config.train.batch_size,
        "image_size": config.data.image_size,
        "seed": config.train.seed,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


def reference_losses(
    config: Config, bundle: DatasetBundle, split: Split, data: Pipeline, device: torch.device
) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-sample reference losses over the training source, and their one-off costs."""
    path = Path(config.features.cache_dir) / f"reference-{reference_key(config, bundle, split)}.pt"
    # Parallel runs of one seed (rho_loss and jest) need the same model: one trains, the
    # others wait for it and load it.
    with exclusive(path.with_suffix(".lock")):
        if path.exists():
            cached = torch.load(path, map_location="cpu", weights_only=True)
            return cached["losses"], {k: float(v) for k, v in cached["costs"].items()}
        losses, costs = train_reference(config, bundle, split, data, device)
        save_torch_atomic(path, {"losses": losses, "costs": costs})
    return losses, costs


def train_reference(
    config: Config, bundle: DatasetBundle, split: Split, data: Pipeline, device: torch.device
) -> tuple[torch.Tensor, dict[str, float]]:
    """Train the reference model on the holdout and score every training sample with it."""
    start = time.perf_counter()
    torch.manual_seed(config.train.seed + 10_007)  # independent of the learner's initialisation
    model = new_learner(
        config, len(bundle.classes), device, arch=config.reference.learner or config.model.learner
    )
    if isinstance(model, DataInitialised):  # from the holdout it trains on
        init_from_data(model, data, split.reference)
    train_on_rows(model, config, data, split.reference, config.reference.epochs)
    trained = time.perf_counter()
    everything = np.arange(len(bundle.train))
    _, _, losses = evaluate_batches(
        model, eval_batches(data, everything, config.train.eval_batch_size), config.train.amp
    )
    costs = {
        "reference_training_s": trained - start,
        "reference_scoring_s": time.perf_counter() - trained,
    }
    return losses, costs


def train_on_rows(
    model: nn.Module, config: Config, data: Pipeline, rows: np.ndarray, epochs: int
) -> None:
    """Plain training of ``model`` on ``rows``, reshuffled each epoch, with the run's optimizer,
    schedule (by progress) and lookahead."""
    optimizer, rates = build_optimizer(model, config, config.train.batch_size)
    every = config.optim.lookahead
    lookahead = Lookahead(model, every) if every else None
    model.train()
    for epoch in range(epochs):
        if isinstance(model, EpochAware):
            model.start_epoch(epoch)
        gen = torch.Generator().manual_seed(epoch_seed(config.train.seed, epoch, 7))
        order = rows[torch.randperm(len(rows), generator=gen).numpy()]
        batches = training_chunks(order, config.train.batch_size)
        progress = EpochProgress(epoch, epochs, [len(b) for b in batches])
        seed = epoch_seed(config.train.seed, epoch, 8)
        for batch in data.batches(batches, train=True, seed=seed, epoch=epoch):
            rates.set(progress.now(), rows=len(batch.labels))
            train_step(
                model, optimizer, batch.images, batch.labels, config.train.amp,
                label_smoothing=config.optim.label_smoothing,
            )  # fmt: skip
            progress.advance()
            if lookahead is not None:
                lookahead.after_step(progress.now().fraction)
    if lookahead is not None:
        lookahead.finish()
