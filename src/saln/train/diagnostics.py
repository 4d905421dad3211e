"""Per-epoch selection diagnostics for the report: spectral gaps and one example batch."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from saln.sampling import SelectiveBatchSampler

SMALL_GAP = 1e-3
MAX_VALUES = 20_000  # |Fiedler| values kept per group for the report's histogram


def spectral_epoch_stats(sampler: SelectiveBatchSampler) -> dict[str, float]:
    gap = sampler.last_stats.get("gap")
    if gap is None:
        return {}
    values = gap.float().cpu().numpy()
    return {
        "gap_median": float(np.median(values)),
        "gap_small_share": float((values < SMALL_GAP).mean()),
    }


def spectral_record(sampler: SelectiveBatchSampler) -> dict[str, Any] | None:
    """Gaps and scaled |Fiedler| (x sqrt(n), comparable across batches) of kept vs dropped rows."""
    stats = sampler.last_stats
    if "abs_fiedler" not in stats or "positions" not in stats:
        return None
    magnitude = stats["abs_fiedler"].float().cpu()
    magnitude = magnitude * magnitude.shape[1] ** 0.5
    kept = torch.zeros_like(magnitude, dtype=torch.bool)
    kept.scatter_(1, stats["positions"].cpu(), True)
    return {
        "gaps": stats["gap"].float().cpu().tolist(),
        "abs_fiedler_kept": magnitude[kept][:MAX_VALUES].tolist(),
        "abs_fiedler_dropped": magnitude[~kept][:MAX_VALUES].tolist(),
    }


def example_from_sampler(sampler: SelectiveBatchSampler, kept: list[int]) -> dict[str, Any]:
    """The first super-batch of the epoch and which of its rows were kept."""
    batch = sampler.last_super_batches[0].tolist()
    chosen = set(kept)
    return {"indices": batch, "kept_positions": [i for i, g in enumerate(batch) if g in chosen]}


def example_from_step(
    indices: torch.Tensor, positions: torch.Tensor, scores: torch.Tensor
) -> dict[str, Any]:
    return {
        "indices": indices.tolist(),
        "kept_positions": sorted(positions.cpu().tolist()),
        "scores": scores.float().cpu().tolist(),
    }
