"""Per-epoch selection diagnostics for the report: spectral gaps, how localised the Fiedler
vector is, and one example batch."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from saln.runs.records import SMALL_GAP
from saln.sampling import EpochPlan

MAX_VALUES = 20_000  # |Fiedler| values kept per group for the report's histogram


def top_entry_mass(abs_fiedler: torch.Tensor) -> torch.Tensor:
    """Per batch (last dim: the batch's rows), the share of the Fiedler vector's squared mass on
    its largest entry: 1/n when the vector spreads evenly over the batch, near 1 when it is
    localised on one sample, so that the rest of the kept set is ranked by near-zero entries."""
    squared = abs_fiedler.double().square()
    return squared.amax(-1) / squared.sum(-1).clamp_min(torch.finfo(torch.float64).tiny)


def spectral_epoch_stats(plan: EpochPlan) -> dict[str, Any]:
    gap = plan.stats.get("gap")
    if gap is None:
        return {}
    values = gap.float().cpu().numpy()
    stats = {
        "gap_median": float(np.median(values)),
        "gap_small_share": float((values < SMALL_GAP).mean()),
    }
    if "abs_fiedler" in plan.stats:
        mass = top_entry_mass(plan.stats["abs_fiedler"].cpu())
        stats["top_entry_mass_median"] = float(mass.median())
    return stats


def spectral_record(plan: EpochPlan) -> dict[str, Any] | None:
    """Gaps and scaled |Fiedler| (x sqrt(n), comparable across batches) of kept vs dropped rows."""
    stats = plan.stats
    if "abs_fiedler" not in stats or "positions" not in stats:
        return None
    magnitude = stats["abs_fiedler"].float().cpu()
    magnitude = magnitude * magnitude.shape[1] ** 0.5
    kept = torch.zeros_like(magnitude, dtype=torch.bool)
    kept.scatter_(1, stats["positions"].cpu(), True)
    return {
        "gaps": stats["gap"].float().cpu().tolist(),
        "top_entry_mass": top_entry_mass(magnitude).tolist(),
        "abs_fiedler_kept": magnitude[kept][:MAX_VALUES].tolist(),
        "abs_fiedler_dropped": magnitude[~kept][:MAX_VALUES].tolist(),
    }


def example_from_plan(plan: EpochPlan) -> dict[str, Any]:
    """The first super-batch of the epoch and which of its rows were kept."""
    batch = plan.super_batches[0].tolist()
    chosen = set(plan.rows[0])
    return {"indices": batch, "kept_positions": [i for i, g in enumerate(batch) if g in chosen]}


def example_from_step(
    indices: torch.Tensor, positions: torch.Tensor, scores: torch.Tensor
) -> dict[str, Any]:
    return {
        "indices": indices.tolist(),
        "kept_positions": sorted(positions.cpu().tolist()),
        "scores": scores.float().cpu().tolist(),
    }
