"""Which batches a process trains, and a check that it trains exactly those.

Under torchrun the Curator's sampler deals each process its own super-batches (as ``saln
train`` does). A loader wrapper that deals batches itself, as ``accelerate``'s ``prepare``
does (round-robin over processes), must instead be given every process's batches in turn, or
each process would train a fraction of its own. Either way, a mistake in the wiring is a
silent one (wrong rows trained, half the data skipped), so the Curator's batch sampler notes
the batches it dealt this process, in order, and :meth:`DealtBatches.take` refuses a step
whose batch is not the next of them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from torch.utils.data import Sampler

from saln.errors import InvalidInput
from saln.sampling import SelectiveBatchSampler

# Who deals the batches to processes -> whether the sampler yields every process's batches.
SHARDED_BY = {"saln": False, "accelerate": True}

WIRING = (
    "build the loader with batch_sampler=curator.batch_sampler, have the dataset return each "
    "sample's global index, call curator.set_epoch(epoch) before each epoch, and let nothing "
    "re-shard the batches (Lightning: Trainer(use_distributed_sampler=False); accelerate: "
    "Curator(sharded_by='accelerate') and accelerator.prepare(loader))"
)


def every_rank(sharded_by: str) -> bool:
    if sharded_by not in SHARDED_BY:
        raise InvalidInput(
            f"sharded_by must be one of {sorted(SHARDED_BY)}, got {sharded_by!r}: 'saln' under "
            "torchrun or Lightning, 'accelerate' for a loader passed to accelerator.prepare"
        )
    return SHARDED_BY[sharded_by]


class DealtBatches(Sampler[list[int]]):
    """The Curator's batch sampler: the kept rows of each super-batch, noting which batches
    are this process's. It has no ``batch_size``: its batches are kept rows, and a loader
    wrapper that reads one (accelerate's) would hold back every batch shorter than it."""

    def __init__(self, sampler: SelectiveBatchSampler) -> None:
        self.sampler = sampler
        self.pending: deque[tuple[int, ...]] = deque()  # this process's, in dealing order
        self.others: set[tuple[int, ...]] = set()

    def ours(self, position: int) -> bool:
        s = self.sampler
        return not s.every_rank or position % s.world_size == s.rank

    def __iter__(self) -> Iterator[list[int]]:
        self.pending.clear()
        self.others.clear()
        for position, rows in enumerate(self.sampler.plan_epoch().rows):
            if self.ours(position):
                self.pending.append(tuple(rows))
            else:
                self.others.add(tuple(rows))
            yield rows

    def __len__(self) -> int:
        return len(self.sampler)

    def take(self, rows: list[int]) -> None:
        """Mark ``rows`` trained; refuse any batch but the next one dealt to this process."""
        key = tuple(rows)
        if self.pending and self.pending[0] == key:
            self.pending.popleft()
            return
        rank = self.sampler.rank
        if key in self.pending:
            skipped = list(self.pending).index(key)
            raise InvalidInput(
                f"process {rank} skipped {skipped} of the batches dealt to it before this one: "
                "something shards the Curator's batches again or reorders them (a "
                "DistributedSampler, accelerator.prepare without sharded_by='accelerate', "
                "Lightning's use_distributed_sampler, DataLoader(in_order=False)); call "
                "curator.loss once for every batch"
            )
        if key in self.others:
            raise InvalidInput(
                f"process {rank} got a batch dealt to another process: the loader did not "
                "shard the batches. With Curator(sharded_by='accelerate') pass the loader "
                "through accelerator.prepare; under torchrun alone use sharded_by='saln'"
            )
        raise InvalidInput(
            f"the step's indices are not a batch the Curator dealt process {rank} in this "
            f"epoch: {WIRING}"
        )
