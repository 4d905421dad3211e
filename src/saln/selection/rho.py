"""rho_loss: reducible holdout loss selection (Mindermann et al., 2022).

Method card. Top-``keep`` rows by ``learner_CE - reference_CE``: points that are learnable,
worth learning and not yet learnt. The reference ("irreducible loss") model is trained once on
a held-out part of the training split that no learner trains on; its per-sample losses are
looked up by global index. Cost: the learner's no-grad scoring forward per step, plus the
one-off reference training and scoring (reported separately).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from saln.selection.base import SELECTORS, BatchView, Selection, require
from saln.selection.loss import top_k_positions


def reducible_loss(losses: torch.Tensor, ref_losses: torch.Tensor) -> torch.Tensor:
    return losses - ref_losses


@SELECTORS.register("rho_loss")
@dataclass(frozen=True)
class RhoLossSelector:
    name: str = "rho_loss"
    needs: frozenset[str] = frozenset({"losses", "ref_losses"})

    def select(
        self, batch: BatchView, keep: int, *, generator: torch.Generator | None = None
    ) -> Selection:
        require(batch, self)
        assert batch.losses is not None and batch.ref_losses is not None
        return Selection(
            positions=top_k_positions(reducible_loss(batch.losses, batch.ref_losses), keep)
        )
