"""What torchrun changes inside training: every rank runs one config, and model-aware
selection can be made over the union of the ranks' loaded batches."""

from __future__ import annotations

import hashlib
import json

import torch

from saln import distributed
from saln.config import Config, ConfigError
from saln.selection import BatchView, Selector


def check_same_config(config: Config) -> None:
    """Every rank must run the same config; differences are caught before any work."""
    digest = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()
    odd = distributed.differing_ranks(digest)
    if odd:
        raise ConfigError(
            f"ranks {odd} were started with a config that differs from rank 0's; "
            "launch every rank with the same --config and flags"
        )


def global_select(
    selector: Selector, view: BatchView, keep: int, generator: torch.Generator | None
) -> tuple[torch.Tensor, float]:
    """Select ``keep * world`` rows over the union of every rank's loaded batch, exactly as one
    process would on that global batch (same scores, same seed), and return this rank's share:
    (local positions, loss scale). The scale makes the DDP-averaged gradient the mean over the
    global kept set, whatever each rank's share."""
    world, me, n = distributed.world_size(), distributed.rank(), len(view)
    device = view.losses.device if view.losses is not None else view.indices.device

    def joined(values: torch.Tensor | None) -> torch.Tensor | None:
        return None if values is None else distributed.gather_rows(values.to(device))

    global_view = BatchView(
        indices=distributed.gather_rows(view.indices.to(device)).cpu(),
        labels=distributed.gather_rows(view.labels.to(device)),
        losses=joined(view.losses),
        ref_losses=joined(view.ref_losses),
        epoch=view.epoch,
        step=view.step,
    )
    positions = selector.select(global_view, keep * world, generator=generator).positions
    mine = positions[(positions >= me * n) & (positions < (me + 1) * n)] - me * n
    return mine, len(mine) * world / (keep * world)
