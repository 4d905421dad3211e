"""uniform: the same-size random control.

Method card. ``keep`` positions uniformly at random from a seeded generator. Cost: none beyond
a permutation. Every comparison runs it at the same filter ratio: a selector that does not
beat it has shown nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from saln.selection.base import SELECTORS, BatchedSelector, check_keep, prefer_unseen


def uniform_select(
    n: int,
    keep: int,
    *,
    batches: int = 1,
    generator: torch.Generator | None = None,
    seen: torch.Tensor | None = None,
) -> torch.Tensor:
    """(batches, keep) positions drawn uniformly without replacement, independently per row;
    with ``seen`` (batches, n), from the rows not yet trained in this cycle first."""
    check_keep(keep, n)
    keys = torch.rand(batches, n, generator=generator)
    return prefer_unseen(-keys, seen).argsort(dim=-1, descending=True)[:, :keep]


@SELECTORS.register("uniform")
@dataclass(frozen=True)
class UniformSelector(BatchedSelector):
    name: str = "uniform"
    needs: frozenset[str] = frozenset()

    def select_many(
        self,
        features: torch.Tensor,
        keep: int,
        *,
        generator: torch.Generator | None = None,
        seen: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        b, n = features.shape[:2]
        seen = None if seen is None else seen.cpu()
        return uniform_select(n, keep, batches=b, generator=generator, seen=seen), {}
