"""InfoBatch (Qin et al., ICLR 2024): unbiased dynamic data pruning, planned a whole epoch ahead.

Each sample keeps the loss it had when it was last trained. Before an epoch, samples whose kept
loss is below the mean are dropped with probability ``prune_ratio``; the low-loss samples that
stay have their loss scaled by ``1 / (1 - prune_ratio)``, so the expected gradient over the
epoch is the full data's; samples at or above the mean, and samples never trained yet, are always
kept with weight 1. From epoch ``delta * epochs`` on every sample trains with weight 1
(annealing), which removes the remaining bias of the rescaled gradients.

Method card. Cost: no extra forward (the losses come from the training step itself) and one
pass over N stored losses per epoch; the dropped samples are never loaded. Saves roughly
``prune_ratio`` x the low-loss share of each epoch until annealing.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from saln.errors import InvalidInput


def check_infobatch(prune_ratio: float, delta: float) -> None:
    if not 0.0 <= prune_ratio < 1.0:
        raise InvalidInput(f"prune_ratio={prune_ratio} must be in [0, 1)")
    if not 0.0 < delta <= 1.0:
        raise InvalidInput(f"delta={delta} must be in (0, 1]")


def annealing(epoch: int, epochs: int, delta: float) -> bool:
    """Whether ``epoch`` (0-based) of ``epochs`` trains on every sample with weight 1."""
    return epoch >= math.ceil(delta * epochs)


def prune_epoch(
    scores: np.ndarray,
    candidates: np.ndarray,
    prune_ratio: float,
    generator: torch.Generator,
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """The samples an epoch trains on and their loss weights.

    ``scores``: each sample's latest training loss by global index, NaN where it was never
    trained. ``candidates``: the global indices the epoch may train on (the training split).
    Returns (kept indices in candidate order, their weights, statistics of the plan)."""
    values = scores[candidates]
    seen = ~np.isnan(values)
    mean = float(values[seen].mean()) if seen.any() else math.inf
    low = seen & (values < mean)
    draws = torch.rand(len(candidates), generator=generator, dtype=torch.float64).numpy()
    dropped = low & (draws < prune_ratio)
    kept = ~dropped
    weights = np.where(low[kept], 1.0 / (1.0 - prune_ratio), 1.0)
    stats = {
        "kept_share": float(kept.mean()) if len(kept) else 1.0,
        "low_loss_share_of_kept": float(low[kept].mean()) if kept.any() else 0.0,
        "mean_weight": float(weights.mean()) if len(weights) else 1.0,
    }
    return candidates[kept], weights, stats
