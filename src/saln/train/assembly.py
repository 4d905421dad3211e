"""One assembly of a method's selection parts (the epoch pool, the batch sampler and the epoch
planner), shared by ``saln train`` (:func:`saln.train.setup.build_run`) and the Curator, so a
user's loop selects exactly what a run does."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from saln.sampling import EpochPool, SelectiveBatchSampler
from saln.selection import Selector
from saln.train.epochwise import Planner
from saln.train.methods import Method


@dataclass(frozen=True, kw_only=True)
class SelectionInputs:
    """What the caller knows of its selection. ``filter_ratio``: the method's own (0 without a
    selector); ``keep`` overrides the rows kept of a full super-batch (JEST's convention);
    ``selection_device``: where a model-free selector runs."""

    indices: np.ndarray  # the global indices trained on
    batch_size: int  # rows loaded per step
    filter_ratio: float
    seed: int
    epochs: int
    dataset_size: int
    device: torch.device  # where the planner keeps its losses and weights
    features: Any = None
    labels: Any = None
    keep: int | None = None
    ratio_at: Callable[[int], float] | None = None
    coverage: bool = False
    share: Callable[[np.ndarray], np.ndarray] | None = None
    rank: int = 0
    world_size: int = 1
    every_rank: bool = False
    selection_device: torch.device | str = "cpu"
    prune_ratio: float = 0.5
    delta: float = 0.875


@dataclass(frozen=True)
class SelectionParts:
    pool: EpochPool  # the epoch-level method's sample set (all of ``indices`` for the others)
    sampler: SelectiveBatchSampler
    planner: Planner


def assemble_selection(
    method: Method, selector: Selector | None, inputs: SelectionInputs
) -> SelectionParts:
    """The sampler selects only for a method that selects there; an epoch-level method's
    sampler draws from the pool its planner sets before each epoch."""
    i, in_sampler = inputs, method.selects_in == "sampler"
    pool = EpochPool(i.indices, i.seed)  # the same order as the indices, until changed
    sampler = SelectiveBatchSampler(
        pool if method.selects_in == "epoch" else i.indices,
        i.batch_size,
        selector if in_sampler else None,
        i.features,
        i.filter_ratio if in_sampler else 0.0,
        seed=i.seed,
        keep=i.keep if in_sampler else None,
        labels=i.labels,
        ratio_at=i.ratio_at if in_sampler else None,
        coverage=i.coverage,
        share=i.share,
        rank=i.rank,
        world_size=i.world_size,
        every_rank=i.every_rank,
        device=i.selection_device if in_sampler and selector is not None else "cpu",
    )
    planner = method.build_planner(
        pool=pool,
        candidates=i.indices,
        dataset_size=i.dataset_size,
        epochs=i.epochs,
        device=i.device,
        prune_ratio=i.prune_ratio,
        delta=i.delta,
        seed=i.seed,
    )
    return SelectionParts(pool, sampler, planner)
