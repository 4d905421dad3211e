"""One training step, and the model-aware scoring pass that precedes it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch
import torch.nn.functional as F
from torch import nn

# (images, labels, loss scale) -> (summed loss, correct), both on the device
StepFn = Callable[[torch.Tensor, torch.Tensor, float], tuple[torch.Tensor, torch.Tensor]]


def autocast_for(
    device: torch.device, enabled: bool, cache: bool = True
) -> AbstractContextManager[object]:
    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=cache)
    return nullcontext()


@contextmanager
def frozen_batchnorm(model: nn.Module) -> Iterator[None]:
    """Score with batch statistics, as training sees them, without moving the running stats
    (momentum 0 leaves them unchanged)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, saved, strict=True):
            m.momentum = momentum


# (images, labels) -> per-row losses on the device
ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def score_losses(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    autocast: bool,
    autocast_cache: bool = True,
) -> torch.Tensor:
    """Per-row cross-entropy of the learner, no grad: what loss/RHO-LOSS/JEST select by."""
    amp = autocast_for(images.device, autocast, autocast_cache)
    with torch.no_grad(), frozen_batchnorm(model), amp:
        logits = model(images)
    return F.cross_entropy(logits.float(), labels, reduction="none")


def eager_scorer(model: nn.Module, autocast: bool) -> ScoreFn:
    return lambda images, labels: score_losses(model, images, labels, autocast)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    autocast: bool,
    loss_scale: float = 1.0,
    autocast_cache: bool = True,
    *,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward/backward/update on the kept rows; returns (summed loss, correct) on device.

    ``loss_scale`` weights this rank's gradient when ranks train unequal shares of a globally
    selected batch (see distributed.global_select). ``label_smoothing`` (``optim.label_smoothing``)
    smooths the targets of the loss trained on, and reported."""
    with autocast_for(images.device, autocast, autocast_cache):
        logits = model(images)
    loss = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    (loss * loss_scale).backward()
    optimizer.step()
    with torch.no_grad():
        correct = (logits.argmax(1) == labels).sum()
    return loss.detach() * labels.numel(), correct


# (images, labels, per-row loss weights, loss scale) -> (summed loss, correct, per-row losses)
WeightedStepFn = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, float],
    tuple[torch.Tensor, torch.Tensor, torch.Tensor],
]


def weighted_train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor,
    autocast: bool,
    loss_scale: float = 1.0,
    autocast_cache: bool = True,
    *,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`train_step` with each row's loss weighted (InfoBatch's rescaled low-loss rows);
    also returns the rows' unweighted losses, which are what InfoBatch keeps per sample."""
    with autocast_for(images.device, autocast, autocast_cache):
        logits = model(images)
    per_row = F.cross_entropy(
        logits.float(), labels, reduction="none", label_smoothing=label_smoothing
    )
    optimizer.zero_grad(set_to_none=True)
    ((per_row * weights).mean() * loss_scale).backward()
    optimizer.step()
    with torch.no_grad():
        correct = (logits.argmax(1) == labels).sum()
    per_row = per_row.detach()
    return per_row.sum(), correct, per_row


def eager_weighted_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    autocast: bool,
    label_smoothing: float = 0.0,
) -> WeightedStepFn:
    def step(
        images: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, loss_scale: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return weighted_train_step(
            model, optimizer, images, labels, weights, autocast, loss_scale,
            label_smoothing=label_smoothing,
        )  # fmt: skip

    return step


def eager_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    autocast: bool,
    label_smoothing: float = 0.0,
) -> StepFn:
    def step(
        images: torch.Tensor, labels: torch.Tensor, loss_scale: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return train_step(
            model, optimizer, images, labels, autocast, loss_scale,
            label_smoothing=label_smoothing,
        )  # fmt: skip

    return step


def shifted(images: torch.Tensor, by: int) -> torch.Tensor:
    """Images moved ``by`` pixels down and right (left and up when negative), the border
    reflected in: a 1-px translation of the kind training augments with."""
    h, w = images.shape[-2:]
    padded = F.pad(images, (1, 1, 1, 1), mode="reflect")
    return padded[..., 1 - by : 1 - by + h, 1 - by : 1 - by + w]


def tta_logits(model: nn.Module, images: torch.Tensor, level: int) -> torch.Tensor:
    """Logits averaged over test-time views (``eval.tta``): 0 the images; 1 the mean with
    their mirror; 2 half of that plus a quarter each of the same for the images shifted by
    +1 and -1 px (airbench's test-time augmentation)."""
    if level == 0:
        return model(images)

    def mirrored(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (model(x) + model(x.flip(-1)))

    if level == 1:
        return mirrored(images)
    moved = mirrored(shifted(images, 1)) + mirrored(shifted(images, -1))
    return 0.5 * mirrored(images) + 0.25 * moved


@torch.no_grad()
def evaluate_batches(
    model: nn.Module,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    autocast: bool,
    tta: int = 0,
) -> tuple[float, float, torch.Tensor]:
    """(mean loss, accuracy, per-row losses) over all batches, in eval mode, with ``tta``'s
    test-time views (:func:`tta_logits`)."""
    was_training = model.training
    model.eval()
    losses, hits = [], []
    for images, labels in batches:
        with autocast_for(images.device, autocast):
            logits = tta_logits(model, images, tta)
        losses.append(F.cross_entropy(logits.float(), labels, reduction="none"))
        hits.append(logits.argmax(1) == labels)
    model.train(was_training)
    loss, hit = torch.cat(losses), torch.cat(hits)
    return float(loss.mean()), float(hit.float().mean()), loss.cpu()
