"""SelectiveBatchSampler: model-free selection ahead of the loader.

The sampler decides which samples of each super-batch are trained on *before* any image is
loaded, so a ``DataLoader(batch_sampler=...)`` never decodes or augments a dropped sample. A
whole epoch's selections are computed in one batched call when the epoch starts.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterator, Sequence, Sized
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np
import torch
from torch.utils.data import Sampler

from saln.errors import InvalidInput
from saln.selection.base import (
    SELECTORS,
    BatchView,
    Selector,
    check_keep,
    is_model_free,
    keep_count,
    tail_keep,
)

T = TypeVar("T")


class FeatureSource(Protocol):
    def get(self, indices: np.ndarray) -> torch.Tensor: ...


class _ArrayFeatures:
    """Adapts an (N, d) array or tensor, indexed by global index, to ``get(indices)``."""

    def __init__(self, table: np.ndarray | torch.Tensor) -> None:
        self.table = table

    def __len__(self) -> int:
        return len(self.table)

    def get(self, indices: np.ndarray) -> torch.Tensor:
        if isinstance(self.table, torch.Tensor):
            return self.table[torch.as_tensor(indices, device=self.table.device)]
        return torch.as_tensor(np.asarray(self.table[indices]))


def as_feature_source(features: Any, device: torch.device) -> FeatureSource | None:
    """A ``get(indices)`` view of the features. On CUDA the whole table moves to the GPU once
    (CIFAR-10 at d = 1280 in float16 is 128 MB), so an epoch's gather is one kernel instead of
    a host gather and copy that would cost more than the selection itself."""
    if features is None:
        return None
    if isinstance(features, torch.Tensor):
        features = features.detach()  # fixed reference features: selection never backpropagates
    if isinstance(features, (np.ndarray, torch.Tensor)):
        if features.ndim != 2:
            raise InvalidInput(
                f"features must be an (N, d) table, got shape {tuple(features.shape)}"
            )
        table: Any = features
    elif hasattr(features, "get"):
        if device.type != "cuda" or not hasattr(features, "numpy"):
            return features
        table = features.numpy()
    else:
        raise TypeError(
            "features must be an (N, d) array/tensor or have .get(indices), "
            f"got {type(features).__name__}"
        )
    if device.type == "cuda":
        table = torch.as_tensor(np.array(table) if isinstance(table, np.ndarray) else table).to(
            device
        )
    return _ArrayFeatures(table)


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
    :class:`SelectiveBatchSampler` shuffles a fixed sequence."""

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
        sampler_or_len: int | Sequence[int] | np.ndarray | Sampler[int],
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
        self.source = sampler_or_len
        self.batch_size = batch_size
        self.selector = SELECTORS.build(selector) if isinstance(selector, str) else selector
        self.keep = (
            keep_count(batch_size, filter_ratio) if keep is None else check_keep(keep, batch_size)
        )
        self.filter_ratio, self.ratio_at = filter_ratio, ratio_at
        self.coverage, self.share = coverage, share
        self.seen = np.zeros(0, dtype=bool)  # coverage: trained in this cycle, by global index
        self.device = torch.device(device)
        self.features = as_feature_source(features, self.device)
        self.labels = None if labels is None else torch.as_tensor(np.asarray(labels))
        self.drop_last, self.seed = drop_last, seed
        self.every_rank = every_rank
        self._plan: EpochPlan | None = None
        self.set_world(rank, world_size)
        self.epoch = 0
        self._check_selector()
        self._check_feature_rows()

    def _check_selector(self) -> None:
        if self.selector is None:
            return
        if not is_model_free(self.selector):
            raise InvalidInput(
                f"selector {self.selector.name!r} needs the learner's losses; model-aware "
                "selectors run in the training step, not in the sampler"
            )
        if "labels" in self.selector.needs and self.labels is None:
            raise InvalidInput(
                f"selector {self.selector.name!r} needs the dataset's class labels: pass labels="
            )
        many = getattr(self.selector, "select_many", None)
        if self.coverage and (many is None or "seen" not in inspect.signature(many).parameters):
            raise InvalidInput(
                f"selector {self.selector.name!r} cannot prefer unseen rows (its select_many "
                "takes no seen=): turn coverage off for it"
            )
        check_batch_size = getattr(self.selector, "check_batch_size", None)
        if check_batch_size is not None:
            check_batch_size(self.batch_size)
        if "features" in self.selector.needs and self.features is None:
            raise InvalidInput(
                f"selector {self.selector.name!r} needs reference features: pass features= "
                "(an (N, d) array or a FeatureStore from saln.extract_features)"
            )

    def _check_feature_rows(self) -> None:
        """Every index drawn must have a feature row and a label (on CUDA a bad gather is a
        device assert, not an error)."""
        if isinstance(self.source, Sampler):
            return  # a Sampler's indices are known only when drawn
        pool = self.source if isinstance(self.source, int) else np.asarray(self.source)
        if not isinstance(pool, int):
            if pool.ndim != 1 or (len(pool) and not np.issubdtype(pool.dtype, np.integer)):
                raise InvalidInput("the sampler's indices must be a flat sequence of ints")
            if len(pool) and pool.min() < 0:
                raise InvalidInput(
                    f"the sampler's indices must be global dataset indices, >= 0; got "
                    f"{int(pool.min())} (Python's negative indexing is not meant here)"
                )
        largest = pool - 1 if isinstance(pool, int) else int(pool.max(initial=-1))
        for what, table in (("features", self.features), ("labels", self.labels)):
            if isinstance(table, Sized) and largest >= len(table):
                raise InvalidInput(
                    f"{what} have {len(table)} rows but the sampler draws indices up to "
                    f"{largest}: pass the {what} of the whole dataset, one row per global index"
                )

    def set_world(self, rank: int, world_size: int) -> None:
        """The process's rank and the number of processes (for a process group that starts
        after the sampler was built, as Lightning's does)."""
        if not 0 <= rank < world_size:
            raise InvalidInput(f"rank {rank} is outside world_size {world_size}")
        self.rank, self.world_size = rank, world_size
        self._plan = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.ratio_at is not None:
            self.keep = keep_count(self.batch_size, self.ratio_at(epoch))

    def _order(self) -> np.ndarray:
        if isinstance(self.source, Sampler):
            if hasattr(self.source, "set_epoch"):
                self.source.set_epoch(self.epoch)
            return np.fromiter(iter(self.source), dtype=np.int64)
        pool = np.arange(self.source) if isinstance(self.source, int) else np.asarray(self.source)
        return shuffled(pool, self.seed, self.epoch)

    def _drop_short(self) -> bool:
        return self.drop_last or self.world_size > 1  # ranks must get equal work

    def _dealt_batches(self) -> list[np.ndarray]:
        """The epoch's super-batches, as many for each rank, in dealing order."""
        batches = cut_batches(self._order(), self.batch_size, self._drop_short())
        return batches[: len(batches) - len(batches) % self.world_size]

    def _keep_for(self, n: int) -> int:
        return tail_keep(n, self.keep, self.batch_size)

    def plan_epoch(self) -> EpochPlan:
        """The kept global indices of every super-batch of this rank (of every rank, in turn,
        with ``every_rank``), computed once per epoch."""
        if self._plan is not None and self._plan.epoch == self.epoch:
            return self._plan
        start = time.perf_counter()
        dealt = self._dealt_batches()
        if self.coverage:
            self._start_cycle_if_done()
        ranks = range(self.world_size) if self.every_rank else [self.rank]
        per_rank = [dealt[r :: self.world_size] for r in ranks]
        plans = [self._select_epoch(batches) for batches in per_rank]
        kept = interleave([rows for rows, _ in plans])
        if self.coverage:
            self._mark_kept(kept)
        stats = interleave_stats([found for _, found in plans])
        seconds = time.perf_counter() - start
        self._plan = EpochPlan(self.epoch, interleave(per_rank), kept, stats, seconds)
        return self._plan

    def _select_epoch(
        self, batches: list[np.ndarray]
    ) -> tuple[list[list[int]], dict[str, torch.Tensor]]:
        """One rank's kept rows. Every rank draws from the same seeded stream, so a rank's rows
        do not depend on which process plans them."""
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, stream=1))
        full = [b for b in batches if len(b) == self.batch_size]
        kept, stats = self._select_full(full, gen)
        kept += [self._select_one(b, gen) for b in batches[len(full) :]]
        return kept, stats

    def _pool(self) -> np.ndarray:
        if isinstance(self.source, Sampler):
            return np.unique(self._order())
        return np.arange(self.source) if isinstance(self.source, int) else np.asarray(self.source)

    def _start_cycle_if_done(self) -> None:
        """A new cycle once every sample of the pool was kept (or on the first epoch)."""
        pool = self._pool()
        size = int(pool.max(initial=-1)) + 1
        if len(self.seen) < size:
            self.seen = np.concatenate([self.seen, np.zeros(size - len(self.seen), dtype=bool)])
        if self.seen[pool].all():
            self.seen[:] = False

    def _mark_kept(self, kept: list[list[int]]) -> None:
        now = np.zeros_like(self.seen)
        now[np.asarray([i for rows in kept for i in rows], dtype=np.int64)] = True
        self.seen |= self.share(now) if self.share is not None else now

    def _seen_of(self, indices: np.ndarray) -> torch.Tensor | None:
        return torch.from_numpy(self.seen[indices]) if self.coverage else None

    def state_dict(self) -> dict[str, Any]:
        """The coverage cycle: which samples were kept in it so far."""
        return {"seen": self.seen.copy()} if self.coverage else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.coverage and "seen" in state:
            self.seen = np.asarray(state["seen"], dtype=bool).copy()

    def _select_full(
        self, full: list[np.ndarray], gen: torch.Generator
    ) -> tuple[list[list[int]], dict[str, torch.Tensor]]:
        if not full:
            return [], {}
        if self.selector is None or self.keep == self.batch_size:
            return [b.tolist() for b in full], {}
        stacked = np.stack(full)
        select_many = getattr(self.selector, "select_many", None)
        if select_many is None:
            return [self._select_one(b, gen) for b in full], {}
        feats = self._features(stacked)
        extra: dict[str, Any] = {}
        if "labels" in self.selector.needs and self.labels is not None:
            extra["labels"] = self.labels[torch.from_numpy(stacked)]
        if self.coverage:
            extra["seen"] = self._seen_of(stacked)
        positions, found = select_many(feats, self.keep, generator=gen, **extra)
        stats = {k: v for k, v in found.items() if isinstance(v, torch.Tensor)}
        stats["positions"] = torch.as_tensor(positions)
        rows = torch.as_tensor(positions).cpu().numpy()
        return np.take_along_axis(stacked, rows, axis=1).tolist(), stats

    def _select_one(self, batch: np.ndarray, gen: torch.Generator) -> list[int]:
        keep = self._keep_for(len(batch))
        if self.selector is None or keep == len(batch):
            return batch.tolist()
        indices = torch.from_numpy(batch)
        view = BatchView(
            indices=indices,
            labels=self.labels[indices]
            if self.labels is not None
            else torch.full_like(indices, -1),
            features=self._features(batch) if "features" in self.selector.needs else None,
            seen=self._seen_of(batch),
            epoch=self.epoch,
        )
        positions = self.selector.select(view, keep, generator=gen).positions
        return batch[positions.cpu().numpy()].tolist()

    def _features(self, indices: np.ndarray) -> torch.Tensor:
        if self.features is None:
            return torch.zeros(*indices.shape, 1)
        flat = self.features.get(indices.reshape(-1))
        return flat.reshape(*indices.shape, flat.shape[-1]).to(self.device, torch.float32)

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.plan_epoch().rows

    def __len__(self) -> int:
        n = self.source if isinstance(self.source, int) else len(self.source)  # type: ignore[arg-type]
        per_rank = batch_count(n, self.batch_size, self._drop_short()) // self.world_size
        return per_rank * self.world_size if self.every_rank else per_rank
