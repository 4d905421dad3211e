"""Where a method's rows are chosen within a step, one function per place (see
:data:`saln.train.methods.PLACES`), so the epoch loop never asks what kind of method it runs.

Rows chosen in the sampler arrive already selected: the step trains on all of them. Rows chosen
in the step are scored by the learner without grad and the selector keeps its share. Rows
planned a whole epoch ahead arrive selected too, with the loss weights of the epoch's plan.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from saln.data.loaders import Batch
from saln.selection import BatchView, tail_keep
from saln.train import sharding
from saln.train.setup import RunContext


@dataclass(frozen=True)
class StepRows:
    """The rows of a loaded batch that one step trains on."""

    positions: torch.Tensor | None = None  # into the loaded batch; None: every row
    scale: float = 1.0  # this rank's loss scale (global selection under torchrun)
    counted: bool = True  # False: a zero-weight step that trained nothing
    scores: torch.Tensor | None = None  # what the selector ranked by (the report's example)
    weights: torch.Tensor | None = None  # per-row loss weights of an epoch-level method


# (context, the loaded batch, generator, epoch, step) -> the rows to train
RowChoice = Callable[[RunContext, Batch, torch.Generator, int, int], StepRows]


def every_row(
    ctx: RunContext, batch: Batch, gen: torch.Generator, epoch: int, step: int
) -> StepRows:
    """The sampler has chosen already (or nothing is chosen): train on every loaded row."""
    return StepRows()


def score_and_select(
    ctx: RunContext, batch: Batch, gen: torch.Generator, epoch: int, step: int
) -> StepRows:
    """Model-aware selection: score the loaded rows without grad, keep the selector's choice.
    ``global`` mode under torchrun selects over the union of every rank's rows."""
    assert ctx.selector is not None
    images, labels, indices = batch
    losses = ctx.score(images, labels)
    ref = None
    if ctx.ref_losses is not None:  # indices are pinned by the loaders on CUDA: no sync
        ref = ctx.ref_losses[indices.to(ctx.device, non_blocking=True)]
    view = BatchView(
        indices=indices, labels=labels, losses=losses, ref_losses=ref, epoch=epoch, step=step
    )
    keep = tail_keep(len(indices), ctx.keep_at(epoch), ctx.loaded_batch)
    if ctx.world_size > 1 and ctx.config.train.selection_mode == "global":
        positions, scale = sharding.global_select(ctx.selector, view, keep, gen)
    else:
        positions, scale = ctx.selector.select(view, keep, generator=gen).positions, 1.0
    positions = positions.to(images.device)
    if ctx.proxy is not None:  # the proxy trains on the rows it kept, every k-th step
        ctx.proxy.learn(images[positions], labels[positions])
    scores = losses - ref if ref is not None else losses
    if len(positions) == 0:  # global mode gave this rank no rows: a zero-weight step
        return StepRows(positions.new_zeros(1), 0.0, counted=False, scores=scores)
    return StepRows(positions, scale, scores=scores)


def replayed_rows(
    ctx: RunContext, batch: Batch, gen: torch.Generator, epoch: int, step: int
) -> StepRows:
    """The proxy's first pass chose these rows before training: train on them."""
    assert ctx.replay is not None
    return StepRows(ctx.replay[(epoch, step)].to(batch.images.device))


def planned_rows(
    ctx: RunContext, batch: Batch, gen: torch.Generator, epoch: int, step: int
) -> StepRows:
    """The epoch's plan chose the rows before the epoch: train on all, with its weights."""
    return StepRows(weights=ctx.planner.weights(batch.indices))


PLACEMENTS: dict[str, RowChoice] = {
    "sampler": every_row,
    "step": score_and_select,
    "epoch": planned_rows,
}


def row_choice(ctx: RunContext, epoch: int) -> RowChoice:
    """This epoch's row choice: a model-aware method outside its schedule's selecting window
    trains every loaded row without scoring them."""
    if ctx.method.selects_in == "step" and ctx.keep_at(epoch) == ctx.loaded_batch:
        return every_row
    if ctx.replay is not None:
        return replayed_rows
    return PLACEMENTS[ctx.method.selects_in]


def train_rows(
    ctx: RunContext, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor,
    rows: StepRows,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """One step on the chosen rows: (summed loss, correct). Weighted rows also hand their
    training losses to the epoch's planner, which plans the next epoch from them."""
    if rows.weights is None:
        return ctx.step(images, labels, rows.scale)
    loss_sum, correct, losses = ctx.weighted_step(images, labels, rows.weights, rows.scale)
    ctx.planner.record(indices, losses)
    return loss_sum, correct
