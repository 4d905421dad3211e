"""Epoch-level methods: the whole epoch's sample list is planned before the epoch starts, from
what earlier epochs recorded, so a dropped sample is never loaded.

A :class:`Planner` sets the sampler's pool before each epoch, gives each trained row its loss
weight, takes the rows' training losses from the step the engine already runs, and keeps its
state in the checkpoint. Methods without one get :class:`EveryEpoch`, which changes nothing.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch

from saln import distributed
from saln.registry import Registry
from saln.sampling import EpochPool, epoch_seed
from saln.selection.infobatch import annealing, check_infobatch, prune_epoch


class Planner(Protocol):
    def before_epoch(self, epoch: int) -> None: ...
    def weights(self, indices: torch.Tensor) -> torch.Tensor | None: ...
    def record(self, indices: torch.Tensor, losses: torch.Tensor) -> None: ...
    def end_epoch(self) -> dict[str, Any]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...
    def to(self, device: torch.device) -> None: ...


class EveryEpoch:
    """No epoch-level planning: the sampler draws from the whole training split."""

    def before_epoch(self, epoch: int) -> None: ...

    def weights(self, indices: torch.Tensor) -> torch.Tensor | None:
        return None

    def record(self, indices: torch.Tensor, losses: torch.Tensor) -> None: ...

    def end_epoch(self) -> dict[str, Any]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def to(self, device: torch.device) -> None: ...


class InfoBatch:
    """:mod:`saln.selection.infobatch` over a run: each sample's latest training loss (NaN until
    it is first trained), gathered over every rank at the end of an epoch, so every rank plans
    the same next epoch."""

    def __init__(
        self,
        pool: EpochPool,
        candidates: np.ndarray,
        dataset_size: int,
        epochs: int,
        device: torch.device,
        *,
        prune_ratio: float = 0.5,
        delta: float = 0.875,
        seed: int = 0,
    ) -> None:
        check_infobatch(prune_ratio, delta)
        self.pool, self.candidates, self.epochs = pool, candidates, epochs
        self.prune_ratio, self.delta = prune_ratio, delta
        self.seed, self.device = seed, device
        self.scores = np.full(dataset_size, np.nan)
        self.table = torch.ones(dataset_size, device=device)
        self.stats: dict[str, float] = {}
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []

    def before_epoch(self, epoch: int) -> None:
        if annealing(epoch, self.epochs, self.delta):
            kept, weights = self.candidates, np.ones(len(self.candidates))
            self.stats = {"kept_share": 1.0, "low_loss_share_of_kept": 0.0, "mean_weight": 1.0}
        else:
            gen = torch.Generator().manual_seed(epoch_seed(self.seed, epoch, stream=5))
            kept, weights, self.stats = prune_epoch(
                self.scores, self.candidates, self.prune_ratio, gen
            )
        self.pool.set_pool(kept)
        table = np.ones(len(self.scores), dtype=np.float32)
        table[kept] = weights
        self.table = torch.from_numpy(table).to(self.device)
        self._pending.clear()

    def weights(self, indices: torch.Tensor) -> torch.Tensor:
        return self.table[indices.to(self.device, non_blocking=True)]

    def record(self, indices: torch.Tensor, losses: torch.Tensor) -> None:
        """Kept on the device until the epoch ends: recording never waits for it."""
        self._pending.append((indices, losses))

    def end_epoch(self) -> dict[str, Any]:
        """Every rank's losses of this epoch become the scores the next epoch is planned by."""
        totals = torch.zeros(2, len(self.scores), dtype=torch.float64)
        if self._pending:
            indices = torch.cat([i for i, _ in self._pending]).cpu()
            losses = torch.cat([loss for _, loss in self._pending]).double().cpu()
            totals[0].index_add_(0, indices, losses)
            totals[1].index_add_(0, indices, torch.ones_like(losses))
        self._pending.clear()
        totals = distributed.all_reduce(totals.to(self.device)).cpu()
        trained = (totals[1] > 0).numpy()
        self.scores[trained] = (totals[0][trained] / totals[1][trained]).numpy()
        return dict(self.stats)

    def state_dict(self) -> dict[str, Any]:
        return {"scores": self.scores.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scores = np.asarray(state["scores"], dtype=np.float64).copy()

    def to(self, device: torch.device) -> None:
        """Weights on ``device`` from now on (before any step: losses recorded stay put)."""
        self.device, self.table = device, self.table.to(device)


PLANNERS: Registry[Planner] = Registry("epoch planner")
PLANNERS.register("every_epoch")(lambda **_: EveryEpoch())
PLANNERS.register("infobatch")(InfoBatch)
