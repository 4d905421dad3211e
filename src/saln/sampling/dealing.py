"""Which super-batches each process trains: the epoch's order cut into batches and dealt
round-robin, so each super-batch is selected once, by the rank that trains it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from torch.utils.data import Sampler

from saln.errors import InvalidInput
from saln.sampling.order import batch_count, cut_batches, shuffled

Source = int | Sequence[int] | np.ndarray | Sampler[int]


@dataclass
class Dealer:
    """``source``: the number of samples (indices ``0..N-1``), a sequence of global indices
    (e.g. a training split), or any Sampler whose order is used as is. ``every_rank`` deals
    every rank's batches in turn (rank 0's first, rank 1's first, ...), for a loader that
    deals round-robin itself, as ``accelerate``'s ``prepare`` does."""

    source: Source
    batch_size: int
    seed: int = 0
    drop_last: bool = False
    rank: int = 0
    world_size: int = 1
    every_rank: bool = False

    def __post_init__(self) -> None:
        self.set_world(self.rank, self.world_size)

    def set_world(self, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise InvalidInput(f"rank {rank} is outside world_size {world_size}")
        self.rank, self.world_size = rank, world_size

    def order(self, epoch: int) -> np.ndarray:
        if isinstance(self.source, Sampler):
            if hasattr(self.source, "set_epoch"):
                self.source.set_epoch(epoch)
            return np.fromiter(iter(self.source), dtype=np.int64)
        return shuffled(self.fixed_pool(), self.seed, epoch)

    def fixed_pool(self) -> np.ndarray:
        assert not isinstance(self.source, Sampler)
        return np.arange(self.source) if isinstance(self.source, int) else np.asarray(self.source)

    def pool(self, epoch: int) -> np.ndarray:
        """The indices an epoch draws from."""
        if isinstance(self.source, Sampler):
            return np.unique(self.order(epoch))
        return self.fixed_pool()

    @property
    def drop_short(self) -> bool:
        return self.drop_last or self.world_size > 1  # ranks must get equal work

    def ranks(self) -> list[int]:
        """The ranks whose batches this process yields."""
        return list(range(self.world_size)) if self.every_rank else [self.rank]

    def deal(self, epoch: int) -> list[list[np.ndarray]]:
        """The epoch's super-batches of each of :meth:`ranks`, as many for each rank."""
        batches = cut_batches(self.order(epoch), self.batch_size, self.drop_short)
        batches = batches[: len(batches) - len(batches) % self.world_size]
        return [batches[r :: self.world_size] for r in self.ranks()]

    def __len__(self) -> int:
        n = self.source if isinstance(self.source, int) else len(self.source)  # type: ignore[arg-type]
        per_rank = batch_count(n, self.batch_size, self.drop_short) // self.world_size
        return per_rank * len(self.ranks())

    def largest_index(self) -> int | None:
        """The largest index drawn, checked to be a global dataset index; None for a Sampler,
        whose indices are known only when drawn."""
        if isinstance(self.source, Sampler):
            return None
        if isinstance(self.source, int):
            return self.source - 1
        pool = np.asarray(self.source)
        if pool.ndim != 1 or (len(pool) and not np.issubdtype(pool.dtype, np.integer)):
            raise InvalidInput("the sampler's indices must be a flat sequence of ints")
        if len(pool) and pool.min() < 0:
            raise InvalidInput(
                f"the sampler's indices must be global dataset indices, >= 0; got "
                f"{int(pool.min())} (Python's negative indexing is not meant here)"
            )
        return int(pool.max(initial=-1))
