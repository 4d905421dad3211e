"""loss: hard-example selection (online batch selection / selective backprop).

Method card. Top-``keep`` rows by the learner's cross-entropy on the loaded super-batch.
Cost: one no-grad forward of the whole super-batch per step (timed as selection).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from saln.selection.base import (
    SELECTORS,
    BatchView,
    Selection,
    check_finite_scores,
    check_keep,
    require,
)
from saln.selection.spectral import priority_order


def top_k_positions(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Positions of the ``keep`` largest scores, largest first, ties to the lower position."""
    check_finite_scores(scores, "selection scores")
    return priority_order(scores)[..., : check_keep(keep, scores.shape[-1])]


@SELECTORS.register("loss")
@dataclass(frozen=True)
class LossSelector:
    name: str = "loss"
    needs: frozenset[str] = frozenset({"losses"})

    def select(
        self, batch: BatchView, keep: int, *, generator: torch.Generator | None = None
    ) -> Selection:
        require(batch, self)
        assert batch.losses is not None
        return Selection(positions=top_k_positions(batch.losses, keep))
