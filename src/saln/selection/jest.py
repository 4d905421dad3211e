"""jest: joint example selection (Evans et al., 2024), adapted to classification.

Method card. Learnability ``s_i = learner_CE_i - reference_CE_i``. The kept set is built in
``n_chunks`` chunks; each chunk is sampled without replacement with probability proportional to
``exp(s_i + interaction_i)``, where the interaction term scores a candidate against the rows
already chosen. JEST's contrastive loss makes that term non-zero; a per-sample classification
loss makes it exactly zero, so this equals sampling ``keep`` rows without replacement with
probability proportional to ``exp(s)``, which is one Gumbel top-k: with no interaction that is
what runs (the chunk loop's ~12 launches per chunk were a visible share of a 12-row GPU step).
The chunked loop runs when a pairwise score is plugged in. Cost: as rho_loss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from saln.errors import InvalidInput
from saln.selection.base import (
    SELECTORS,
    BatchView,
    Selection,
    check_finite_scores,
    check_keep,
    require,
)
from saln.selection.rho import reducible_loss

# (scores (n,), chosen mask (n,)) -> additive interaction term (n,)
Interaction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def no_interaction(scores: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(scores)


def chunk_sizes(keep: int, n_chunks: int) -> list[int]:
    """Split ``keep`` into at most ``n_chunks`` near-equal positive chunks."""
    chunks = min(n_chunks, keep)
    base, extra = divmod(keep, chunks)
    return [base + (i < extra) for i in range(chunks)]


def gumbel(
    shape: torch.Size, generator: torch.Generator | None, like: torch.Tensor
) -> torch.Tensor:
    """Gumbel noise drawn on the generator's device (``like``'s without one), then moved to
    ``like``'s: a generator on the scores' device costs no copy."""
    device = generator.device if generator is not None else like.device
    uniform = torch.rand(shape, generator=generator, device=device).clamp_(1e-20, 1.0)
    return (-torch.log(-torch.log(uniform))).to(like.device, like.dtype)


def jest_select(
    scores: torch.Tensor,
    keep: int,
    *,
    n_chunks: int = 16,
    interaction: Interaction = no_interaction,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Positions chosen chunk by chunk, each chunk without replacement with p ~ exp(score).

    Sampling without replacement proportional to exp(logit) is the Gumbel top-k trick: add
    independent Gumbel noise and take the k largest.
    """
    n = scores.shape[-1]
    check_keep(keep, n)
    check_finite_scores(scores, "JEST scores")
    if interaction is no_interaction:  # the chunks' joint law is one draw without replacement
        return (scores + gumbel(scores.shape, generator, scores)).topk(keep).indices
    chosen = torch.zeros(n, dtype=torch.bool, device=scores.device)
    picked: list[torch.Tensor] = []
    for size in chunk_sizes(keep, n_chunks):
        logits = scores + interaction(scores, chosen)
        perturbed = (logits + gumbel(scores.shape, generator, scores)).masked_fill(
            chosen, -torch.inf
        )
        chunk = perturbed.topk(size).indices
        chosen[chunk] = True
        picked.append(chunk)
    return torch.cat(picked)


@SELECTORS.register("jest")
@dataclass(frozen=True)
class JestSelector:
    n_chunks: int = 16
    name: str = "jest"
    needs: frozenset[str] = frozenset({"losses", "ref_losses"})

    def __post_init__(self) -> None:
        if self.n_chunks < 1:
            raise InvalidInput(f"JestSelector(n_chunks={self.n_chunks}): n_chunks must be >= 1")

    def select(
        self, batch: BatchView, keep: int, *, generator: torch.Generator | None = None
    ) -> Selection:
        require(batch, self)
        assert batch.losses is not None and batch.ref_losses is not None
        scores = reducible_loss(batch.losses, batch.ref_losses).float()
        positions = jest_select(scores, keep, n_chunks=self.n_chunks, generator=generator)
        return Selection(positions=positions)
