"""The selection call: a model-free selector over an epoch's super-batches, in one batched
call where the selector declares it can (:class:`saln.selection.Capabilities`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from saln.errors import InvalidInput
from saln.sampling.features import FeatureSource, gather
from saln.selection.base import (
    BatchedSelector,
    BatchView,
    Selector,
    capabilities,
    is_model_free,
    tail_keep,
)

Rows = list[list[int]]
Stats = dict[str, torch.Tensor]
SeenOf = Callable[[np.ndarray], torch.Tensor | None]  # coverage: kept this cycle, by index


class SelectionCall:
    """``selector`` (None keeps every row) with the inputs it declares it ``needs``: features
    gathered from ``features``, ``labels`` by global index. :meth:`check` refuses, before any
    epoch, a selector that cannot run here."""

    def __init__(
        self,
        selector: Selector | None,
        features: FeatureSource | None,
        labels: torch.Tensor | None,
        device: torch.device,
    ) -> None:
        self.selector, self.features, self.labels, self.device = selector, features, labels, device

    def check(self, batch_size: int, coverage: bool) -> None:
        selector = self.selector
        if selector is None:
            return
        if not is_model_free(selector):
            raise InvalidInput(
                f"selector {selector.name!r} needs the learner's losses; model-aware "
                "selectors run in the training step, not in the sampler"
            )
        if "labels" in selector.needs and self.labels is None:
            raise InvalidInput(
                f"selector {selector.name!r} needs the dataset's class labels: pass labels="
            )
        if coverage and not capabilities(selector).prefers_unseen:
            raise InvalidInput(
                f"selector {selector.name!r} cannot prefer unseen rows (it does not declare "
                "Capabilities(prefers_unseen=True)): turn coverage off for it"
            )
        if isinstance(selector, BatchedSelector):
            selector.check_batch_size(batch_size)
        if "features" in selector.needs and self.features is None:
            raise InvalidInput(
                f"selector {selector.name!r} needs reference features: pass features= "
                "(an (N, d) array or a FeatureStore from saln.extract_features)"
            )

    def epoch(
        self,
        batches: list[np.ndarray],
        full_size: int,
        keep: int,
        gen: torch.Generator,
        seen_of: SeenOf,
        epoch: int,
    ) -> tuple[Rows, Stats]:
        """The kept global indices of each super-batch, and the selector's per-batch stats of
        the full ones. Full batches come first in ``batches``; a short last one keeps its
        share (:func:`tail_keep`)."""
        full = [b for b in batches if len(b) == full_size]
        kept, stats = self._full(full, keep, gen, seen_of, epoch)
        for batch in batches[len(full) :]:
            kept.append(
                self.one(batch, tail_keep(len(batch), keep, full_size), gen, seen_of, epoch)
            )
        return kept, stats

    def _full(
        self, full: list[np.ndarray], keep: int, gen: torch.Generator, seen_of: SeenOf, epoch: int
    ) -> tuple[Rows, Stats]:
        selector = self.selector
        if not full:
            return [], {}
        if selector is None or keep == len(full[0]):
            return [b.tolist() for b in full], {}
        if not isinstance(selector, BatchedSelector) or not capabilities(selector).batched:
            return [self.one(b, keep, gen, seen_of, epoch) for b in full], {}
        stacked = np.stack(full)
        extra: dict[str, Any] = {}
        if "labels" in selector.needs and self.labels is not None:
            extra["labels"] = self.labels[torch.from_numpy(stacked)]
        seen = seen_of(stacked)
        if seen is not None:
            extra["seen"] = seen
        features = gather(self.features, stacked, self.device)
        positions, found = selector.select_many(features, keep, generator=gen, **extra)
        stats = {k: v for k, v in found.items() if isinstance(v, torch.Tensor)}
        stats["positions"] = torch.as_tensor(positions)
        rows = torch.as_tensor(positions).cpu().numpy()
        return np.take_along_axis(stacked, rows, axis=1).tolist(), stats

    def one(
        self, batch: np.ndarray, keep: int, gen: torch.Generator, seen_of: SeenOf, epoch: int
    ) -> list[int]:
        selector = self.selector
        if selector is None or keep == len(batch):
            return batch.tolist()
        indices = torch.from_numpy(batch)
        labels = self.labels[indices] if self.labels is not None else torch.full_like(indices, -1)
        needs_features = "features" in selector.needs
        view = BatchView(
            indices=indices,
            labels=labels,
            features=gather(self.features, batch, self.device) if needs_features else None,
            seen=seen_of(batch),
            epoch=epoch,
        )
        positions = selector.select(view, keep, generator=gen).positions
        return batch[positions.cpu().numpy()].tolist()
