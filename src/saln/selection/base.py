"""The selector contract: what a selector sees (BatchView), returns (Selection) and declares."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from saln.errors import InvalidInput
from saln.registry import Registry

# Inputs a selector may declare in ``needs``; the engine computes only these.
KNOWN_NEEDS = frozenset({"features", "labels", "losses", "ref_losses"})


@dataclass(frozen=True)
class BatchView:
    """One loaded (super-)batch as a selector sees it. Row ``i`` of every tensor is sample ``i``."""

    indices: torch.Tensor  # int64 global dataset indices, shape (n,)
    labels: torch.Tensor  # int64 class labels, shape (n,)
    features: torch.Tensor | None = None  # fixed reference features, (n, d)
    losses: torch.Tensor | None = None  # learner cross-entropy per row, (n,)
    ref_losses: torch.Tensor | None = None  # reference-model cross-entropy per row, (n,)
    seen: torch.Tensor | None = None  # coverage: bool, trained in this cycle already, (n,)
    epoch: int = 0
    step: int = 0

    def __len__(self) -> int:
        return int(self.indices.shape[0])


@dataclass(frozen=True)
class Selection:
    """Kept rows: unique int64 positions into the batch, highest priority first."""

    positions: torch.Tensor
    weights: torch.Tensor | None = None
    stats: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Selector(Protocol):
    """A per-batch selection rule. ``needs`` names the BatchView fields it reads."""

    @property
    def name(self) -> str: ...

    @property
    def needs(self) -> frozenset[str]: ...

    def select(
        self, batch: BatchView, keep: int, *, generator: torch.Generator | None = None
    ) -> Selection: ...


@dataclass(frozen=True)
class Capabilities:
    """What a selector can do beyond ``select``, declared rather than probed. ``batched``: it
    has ``select_many(features (b, n, d), keep, *, generator, seen, [labels])`` and
    ``check_batch_size(n)`` (a :class:`BatchedSelector`), so a whole epoch is one call;
    ``prefers_unseen``: it honours ``seen`` (``train.coverage``)."""

    batched: bool = False
    prefers_unseen: bool = False


# A selector written to the protocol alone (a user's own) selects one batch at a time.
ONE_AT_A_TIME = Capabilities()


def capabilities(selector: Selector) -> Capabilities:
    """The selector's declared :class:`Capabilities` (:data:`ONE_AT_A_TIME` if it declares
    none)."""
    declared = getattr(selector, "capabilities", ONE_AT_A_TIME)
    if not isinstance(declared, Capabilities):
        raise TypeError(f"selector {selector.name!r}: capabilities must be a Capabilities")
    return declared


def is_model_free(selector: Selector) -> bool:
    """Model-free selectors depend only on which samples are in the batch (run in the sampler)."""
    return not (selector.needs & {"losses", "ref_losses"})


SELECTORS: Registry[Selector] = Registry("selector")


def check_filter_ratio(filter_ratio: float) -> float:
    if not isinstance(filter_ratio, (int, float)) or isinstance(filter_ratio, bool):
        raise TypeError(f"filter_ratio must be a number in [0, 1), got {filter_ratio!r}")
    if not 0.0 <= float(filter_ratio) < 1.0:
        raise InvalidInput(
            f"filter_ratio={filter_ratio} is outside [0, 1): it is the fraction of each batch "
            "that is dropped (0.8 keeps 20%); use 0 to keep everything"
        )
    return float(filter_ratio)


def keep_count(n: int, filter_ratio: float) -> int:
    """Rows kept from a batch of ``n``: ``int(n * (1 - filter_ratio))`` as in the paper.

    A relative 1e-9 guards against float round-off (``10 * (1 - 0.8)`` is 1.9999999999999996,
    which the paper's formula truncates to 1 although 2 rows are meant). Raises when nothing
    would be kept, where the paper's ``argsort(...)[-0:]`` silently keeps every row.
    """
    filter_ratio = check_filter_ratio(filter_ratio)
    keep = math.floor(n * (1.0 - filter_ratio) * (1 + 1e-9))
    if keep < 1:
        raise InvalidInput(
            f"filter_ratio={filter_ratio} keeps 0 of a batch of {n} rows; "
            f"use a larger batch (>= {math.ceil(1 / (1 - filter_ratio))}) or a smaller filter_ratio"
        )
    return min(keep, n)


def tail_keep(rows: int, keep: int, batch: int) -> int:
    """Rows kept from a batch of ``rows`` when a full ``batch`` keeps ``keep``: all of it when
    full; a short last batch keeps the same share, but at least two rows (one row is no batch
    for BatchNorm, whose training statistics need two values per channel)."""
    return keep if rows == batch else max(min(2, rows), rows * keep // batch)


def check_keep(keep: int, n: int) -> int:
    if isinstance(keep, bool) or not isinstance(keep, int):
        raise TypeError(f"keep must be an int, got {type(keep).__name__}")
    if not 1 <= keep <= n:
        raise InvalidInput(f"keep={keep} must be between 1 and the batch size {n}")
    return keep


def require(batch: BatchView, selector: Selector) -> None:
    """Fail clearly when a BatchView lacks an input the selector declared in ``needs``."""
    missing = [name for name in sorted(selector.needs) if getattr(batch, name) is None]
    if missing:
        raise InvalidInput(
            f"selector {selector.name!r} needs {', '.join(missing)} in the BatchView; "
            f"it declares needs={sorted(selector.needs)}"
        )


class BatchedSelector:
    """A model-free selector defined by its batched ``select_many(features (b, n, d), keep, *,
    generator, seen, [labels])``; :meth:`select` is that call on a batch of one."""

    name: str
    needs: frozenset[str]
    select_many: Callable[..., tuple[torch.Tensor, Mapping[str, Any]]]
    capabilities = Capabilities(batched=True, prefers_unseen=True)

    def check_batch_size(self, n: int) -> None:
        """Refuse, before any training, a super-batch of ``n`` rows the selector cannot use."""

    def select(
        self, batch: BatchView, keep: int, *, generator: torch.Generator | None = None
    ) -> Selection:
        require(batch, self)
        inputs: dict[str, Any] = {"generator": generator}
        if batch.seen is not None:
            inputs["seen"] = batch.seen.unsqueeze(0)
        if "labels" in self.needs:
            inputs["labels"] = batch.labels.unsqueeze(0)
        features = batch.features if batch.features is not None else torch.zeros(len(batch), 1)
        positions, stats = self.select_many(features.unsqueeze(0), keep, **inputs)
        return Selection(positions=positions[0].to(batch.indices.device), stats=stats)


def prefer_unseen(scores: torch.Tensor, seen: torch.Tensor | None) -> torch.Tensor:
    """Scores (higher kept first) that put every row trained in this coverage cycle after every
    row that was not, the order within each group unchanged. No host sync."""
    if seen is None:
        return scores
    span = scores.amax(-1, keepdim=True) - scores.amin(-1, keepdim=True) + 1
    return scores - seen.to(scores.device, scores.dtype) * span


def check_finite_scores(scores: torch.Tensor, what: str) -> None:
    """Raise when scores hold NaN/inf (the learner diverged). On CUDA the check would cost a host
    sync every step, so it is skipped there: the engine's divergence check (every
    ``train.check_every`` steps) stops a diverged run from its training loss instead."""
    if scores.device.type == "cpu" and not bool(torch.isfinite(scores).all()):
        raise InvalidInput(f"{what} contain NaN or inf; the learner has diverged")
