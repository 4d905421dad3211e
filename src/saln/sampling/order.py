"""An epoch's order and its batches: seeded shuffles, cutting, dealing order, the plan."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import torch
from torch.utils.data import Sampler

T = TypeVar("T")


def cut_batches(order: np.ndarray, size: int, drop_short: bool = False) -> list[np.ndarray]:
    """``order`` in consecutive batches of ``size``. A short last batch is left out when
    ``drop_short``, and always when it has a single row, since BatchNorm cannot train on one
    row; either way it reshuffles into the next epoch."""
    batches = [order[i : i + size] for i in range(0, len(order), size)]
    tail = len(batches[-1]) if batches else size
    if tail < size and (drop_short or tail == 1):
        batches.pop()
    return batches


def batch_count(n: int, size: int, drop_short: bool = False) -> int:
    """``len(cut_batches(order, size, drop_short))`` for ``len(order) == n``, without the order."""
    full, tail = divmod(n, size)
    return full + int(tail > 1 and not drop_short)


def interleave(parts: list[list[T]]) -> list[T]:
    """Equal-length lists taken in turn: ``[a0, b0, a1, b1, ...]``."""
    return [item for group in zip(*parts) for item in group]


def interleave_stats(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Per-batch statistics (first dim: the batches) of several ranks, in dealing order."""
    if len(parts) == 1:
        return parts[0]
    keys = set.intersection(*(set(p) for p in parts))
    return {k: torch.stack([p[k] for p in parts], dim=1).flatten(0, 1) for k in sorted(keys)}


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A distinct, reproducible seed per (run seed, epoch, stream); independent of rank."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1)[0])


def shuffled(pool: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """``pool`` in the seeded order of ``epoch``: every sampler of a run shuffles this way, so
    an epoch-level method that drops nothing draws the batches standard training draws."""
    gen = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    return np.asarray(pool)[torch.randperm(len(pool), generator=gen).numpy()].astype(np.int64)


class EpochPool(Sampler[int]):
    """Global indices whose set may change between epochs (an epoch-level method such as
    InfoBatch sets it before each epoch), shuffled with a seed per epoch exactly as
    :class:`~saln.sampling.SelectiveBatchSampler` shuffles a fixed sequence."""

    def __init__(self, indices: np.ndarray, seed: int) -> None:
        self.indices, self.seed, self.epoch = np.asarray(indices, dtype=np.int64), seed, 0

    def set_pool(self, indices: np.ndarray) -> None:
        self.indices = np.asarray(indices, dtype=np.int64)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        yield from shuffled(self.indices, self.seed, self.epoch).tolist()

    def __len__(self) -> int:
        return len(self.indices)


@dataclass(frozen=True)
class EpochPlan:
    """One rank's epoch, decided before any image is loaded: for each step the super-batch it
    was drawn from and the global indices kept of it, plus the selector's per-batch statistics
    over the full super-batches (e.g. SALN's ``gap``, ``abs_fiedler`` and kept ``positions``)."""

    epoch: int
    super_batches: list[np.ndarray]
    rows: list[list[int]]
    stats: dict[str, torch.Tensor] = field(default_factory=dict)
    seconds: float = 0.0  # wall time of the planning (the model-free selection)

    def __len__(self) -> int:
        return len(self.rows)
