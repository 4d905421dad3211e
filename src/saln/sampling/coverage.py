"""The coverage cycle: which samples were kept since the cycle began, for selectors that
prefer rows not trained yet (``train.coverage``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch


class CoverageCycle:
    """A cycle ends when every sample of the pool was kept once; ``share`` merges the kept
    masks of every rank (an all-reduce under torchrun), so all ranks agree on it."""

    def __init__(self, share: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        self.share = share
        self.seen = np.zeros(0, dtype=bool)  # kept in this cycle, by global index

    def start_if_done(self, pool: np.ndarray) -> None:
        """A new cycle once every sample of ``pool`` was kept (or on the first epoch)."""
        size = int(pool.max(initial=-1)) + 1
        if len(self.seen) < size:
            self.seen = np.concatenate([self.seen, np.zeros(size - len(self.seen), dtype=bool)])
        if self.seen[pool].all():
            self.seen[:] = False

    def mark(self, kept: list[list[int]]) -> None:
        now = np.zeros_like(self.seen)
        now[np.asarray([i for rows in kept for i in rows], dtype=np.int64)] = True
        self.seen |= self.share(now) if self.share is not None else now

    def of(self, indices: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.seen[indices])

    def state_dict(self) -> dict[str, Any]:
        return {"seen": self.seen.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "seen" in state:
            self.seen = np.asarray(state["seen"], dtype=bool).copy()
