"""SelectiveBatchSampler: model-free selection ahead of the loader.

The sampler decides which samples of each super-batch are trained on *before* any image is
loaded, so a ``DataLoader(batch_sampler=...)`` never decodes or augments a dropped sample. A
whole epoch's selections are computed in one batched call when the epoch starts. It is a thin
composition: a :class:`Dealer` (order, batches, ranks), a :class:`SelectionCall` (the selector
and the inputs it needs) and, with coverage, a :class:`CoverageCycle`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sized
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

from saln.errors import InvalidInput
from saln.sampling.coverage import CoverageCycle
from saln.sampling.dealing import Dealer, Source
from saln.sampling.features import as_feature_source
from saln.sampling.order import EpochPlan, epoch_seed, interleave, interleave_stats
from saln.sampling.selecting import Rows, SelectionCall, Stats
from saln.selection.base import SELECTORS, Selector, check_keep, keep_count


class SelectiveBatchSampler(Sampler[list[int]]):
    """Yields only the kept global indices of each super-batch of ``batch_size``.

    ``sampler_or_len``: the number of samples (indices ``0..N-1``), a sequence of global indices
    (e.g. a training split), or any Sampler whose order is used as is. Each epoch a seeded
    permutation is cut into super-batches; a model-free ``selector`` keeps
    ``int(n * (1 - filter_ratio))`` rows of each (or exactly ``keep`` if given). A short last
    super-batch keeps the same share, at least two rows; one of a single row is left out (it
    reshuffles into the next epoch), since BatchNorm cannot train on one row.
    ``ratio_at(epoch)``, if given, replaces the filter ratio each epoch
    (:class:`saln.selection.schedule.SelectionSchedule.ratio`). ``coverage`` has the selector
    prefer, in each batch, the rows not kept yet in the current cycle (a cycle ends when every
    sample of the pool was kept once); ``share`` merges the kept masks of every rank (an
    all-reduce under torchrun), and :meth:`state_dict` holds the cycle for a resumed run. With
    ``world_size > 1`` super-batches are dealt round-robin, so each is selected once, by the rank
    that trains it. ``every_rank`` yields every rank's batches in turn instead (rank 0's first,
    rank 1's first, ..., then each one's second), for a loader that deals batches round-robin
    itself, as ``accelerate``'s ``prepare`` does: each process then trains the rows torchrun
    would give it. Call ``set_epoch(e)`` before each epoch, as with ``DistributedSampler``;
    :meth:`plan_epoch` returns the epoch's :class:`EpochPlan`, iterating yields its rows.
    """

    def __init__(
        self,
        sampler_or_len: Source,
        batch_size: int,
        selector: Selector | str | None = "saln",
        features: Any = None,
        filter_ratio: float = 0.8,
        drop_last: bool = False,
        seed: int = 0,
        *,
        keep: int | None = None,
        labels: np.ndarray | torch.Tensor | None = None,
        ratio_at: Callable[[int], float] | None = None,
        coverage: bool = False,
        share: Callable[[np.ndarray], np.ndarray] | None = None,
        rank: int = 0,
        world_size: int = 1,
        every_rank: bool = False,
        device: str | torch.device = "cpu",
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInput(f"batch_size must be a positive int, got {batch_size!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InvalidInput(f"seed must be a non-negative int, got {seed!r}")
        self.dealer = Dealer(
            sampler_or_len, batch_size, seed, drop_last, rank, world_size, every_rank
        )
        self.keep = (
            keep_count(batch_size, filter_ratio) if keep is None else check_keep(keep, batch_size)
        )
        self.ratio_at = ratio_at
        self.cycle = CoverageCycle(share) if coverage else None
        built = SELECTORS.build(selector) if isinstance(selector, str) else selector
        device = torch.device(device)
        label_table = None if labels is None else torch.as_tensor(np.asarray(labels))
        self.call = SelectionCall(built, as_feature_source(features, device), label_table, device)
        self.call.check(batch_size, coverage)
        self._check_rows()
        self.epoch = 0
        self._plan: EpochPlan | None = None

    # The dealing, as DistributedSampler names it.
    @property
    def batch_size(self) -> int:
        return self.dealer.batch_size

    @property
    def rank(self) -> int:
        return self.dealer.rank

    @property
    def world_size(self) -> int:
        return self.dealer.world_size

    @property
    def every_rank(self) -> bool:
        return self.dealer.every_rank

    @property
    def selector(self) -> Selector | None:
        return self.call.selector

    def _check_rows(self) -> None:
        """Every index drawn must have a feature row and a label (on CUDA a bad gather is a
        device assert, not an error)."""
        largest = self.dealer.largest_index()
        if largest is None:
            return
        for what, table in (("features", self.call.features), ("labels", self.call.labels)):
            if isinstance(table, Sized) and largest >= len(table):
                raise InvalidInput(
                    f"{what} have {len(table)} rows but the sampler draws indices up to "
                    f"{largest}: pass the {what} of the whole dataset, one row per global index"
                )

    def set_world(self, rank: int, world_size: int) -> None:
        """The process's rank and the number of processes (for a process group that starts
        after the sampler was built, as Lightning's does)."""
        self.dealer.set_world(rank, world_size)
        self._plan = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.ratio_at is not None:
            self.keep = keep_count(self.batch_size, self.ratio_at(epoch))

    def plan_epoch(self) -> EpochPlan:
        """The kept global indices of every super-batch of this rank (of every rank, in turn,
        with ``every_rank``), computed once per epoch."""
        if self._plan is not None and self._plan.epoch == self.epoch:
            return self._plan
        start = time.perf_counter()
        per_rank = self.dealer.deal(self.epoch)
        if self.cycle is not None:
            self.cycle.start_if_done(self.dealer.pool(self.epoch))
        plans = [self._select(batches) for batches in per_rank]
        kept = interleave([rows for rows, _ in plans])
        if self.cycle is not None:
            self.cycle.mark(kept)
        stats = interleave_stats([found for _, found in plans])
        seconds = time.perf_counter() - start
        self._plan = EpochPlan(self.epoch, interleave(per_rank), kept, stats, seconds)
        return self._plan

    def _select(self, batches: list[np.ndarray]) -> tuple[Rows, Stats]:
        """One rank's kept rows. Every rank draws from the same seeded stream, so a rank's rows
        do not depend on which process plans them."""
        gen = torch.Generator().manual_seed(epoch_seed(self.dealer.seed, self.epoch, stream=1))
        cycle = self.cycle
        seen_of = (lambda _: None) if cycle is None else cycle.of
        return self.call.epoch(batches, self.batch_size, self.keep, gen, seen_of, self.epoch)

    def state_dict(self) -> dict[str, Any]:
        """The coverage cycle: which samples were kept in it so far."""
        return self.cycle.state_dict() if self.cycle is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.cycle is not None:
            self.cycle.load_state_dict(state)

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.plan_epoch().rows

    def __len__(self) -> int:
        return len(self.dealer)
