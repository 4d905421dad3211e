"""The optimizer's units and its learning-rate schedules, as pure functions of progress.

Progress is the share of the run's planned rows done: whole epochs done plus the share of this
epoch's planned rows, over the run's epochs. Each epoch is an equal share of the schedule, so a
method that plans shorter epochs (InfoBatch), a ratio ramp and a budget-matched run (fewer
epochs) each get the whole schedule, decayed to its end.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from saln.config import OptimConfig

KILO = 1024  # decoupled hyperparameters are per this many examples (airbench's unit)


@dataclass(frozen=True)
class Progress:
    epoch: int
    epochs: int
    within: float = 0.0  # share of this epoch's planned rows done, [0, 1]

    @property
    def fraction(self) -> float:
        return min(1.0, (self.epoch + self.within) / self.epochs)


def constant(progress: Progress, optim: OptimConfig) -> float:
    return 1.0


def cosine(progress: Progress, optim: OptimConfig) -> float:
    return (1 + math.cos(math.pi * progress.epoch / progress.epochs)) / 2


def step(progress: Progress, optim: OptimConfig) -> float:
    epochs = progress.epochs
    milestones = (max(1, epochs // 2), max(1, 3 * epochs // 4))
    return 0.1 ** sum(progress.epoch >= m for m in milestones)


def triangle(progress: Progress, optim: OptimConfig) -> float:
    start, peak, end = optim.triangle
    return float(np.interp(progress.fraction, [0.0, peak, 1.0], [start, 1.0, end]))


# Each multiplies every group's base lr. The epoch-level ones read the epoch alone, as they
# always have; triangle reads progress step by step (config.PER_STEP_SCHEDULES).
Schedule = Callable[[Progress, OptimConfig], float]
LR_SCHEDULES: dict[str, Schedule] = {
    "constant": constant,
    "cosine": cosine,
    "step": step,
    "triangle": triangle,
}


def coupled_hyperparameters(
    lr_per_kilo: float, decay_per_kilo: float, momentum: float, batch_size: int
) -> tuple[float, float]:
    """torch SGD's (lr, weight_decay) for a loss averaged over ``batch_size`` rows, from lr and
    weight decay per 1024 examples trained, corrected for momentum (whose steady state
    multiplies each step by 1 / (1 - momentum)): what airbench calls decoupled units.

    The update per example is ``lr_per_kilo / (1024 (1 + 1 / (1 - momentum)))`` whatever the
    batch; the weights shrink by ``decay_per_kilo * batch_size / that scale`` per step (lr times
    weight_decay), the lr's schedule scaling both."""
    scale = KILO * (1 + 1 / (1 - momentum))
    return lr_per_kilo * batch_size / scale, decay_per_kilo / lr_per_kilo


def norm_biases(model: nn.Module) -> list[nn.Parameter]:
    """The trainable biases of the model's normalisation layers."""
    norms = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    return [
        m.bias
        for m in model.modules()
        if isinstance(m, norms) and isinstance(m.bias, nn.Parameter) and m.bias.requires_grad
    ]


def param_groups(model: nn.Module, optim: OptimConfig, rows_per_step: int) -> list[dict]:
    """The optimizer's groups: lr and weight decay in torch's units; normalisation biases at
    ``optim.bias_lr_scale`` times the lr with the weight decay divided by it, so that their
    decay per step stays the others'."""
    lr, decay = optim.lr, optim.weight_decay
    if optim.decoupled:
        lr, decay = coupled_hyperparameters(lr, decay, optim.momentum, rows_per_step)
    params = list(model.parameters())
    if optim.bias_lr_scale == 1.0:
        return [{"params": params, "lr": lr, "weight_decay": decay}]
    biases = {id(p) for p in norm_biases(model)}
    scale = optim.bias_lr_scale
    return [  # the first group's lr is the one a run records
        {"params": [p for p in params if id(p) not in biases], "lr": lr, "weight_decay": decay},
        {"params": [p for p in params if id(p) in biases], "lr": lr * scale,
         "weight_decay": decay / scale},
    ]  # fmt: skip


class LearningRates:
    """Sets every group's lr to its base times the schedule's factor at a progress.

    In decoupled units the lr is per example: a step that trains fewer rows than
    ``rows_per_step`` (an epoch's last, short batch) takes a proportionally smaller step, as a
    summed loss would give it; else its few rows would take a full step's size."""

    def __init__(
        self, optimizer: torch.optim.Optimizer, optim: OptimConfig, rows_per_step: int
    ) -> None:
        self.optimizer, self.optim, self.rows_per_step = optimizer, optim, rows_per_step
        self.schedule = LR_SCHEDULES[optim.schedule]
        self.base = [float(group["lr"]) for group in optimizer.param_groups]

    def set(self, progress: Progress, rows: int | None = None) -> None:
        """The lrs of a step at ``progress`` that trains ``rows`` rows (None: a full step)."""
        factor = self.schedule(progress, self.optim)
        if self.optim.decoupled and rows is not None:
            factor *= min(1.0, rows / self.rows_per_step)
        for group, base in zip(self.optimizer.param_groups, self.base, strict=True):
            group["lr"] = base * factor


class EpochProgress:
    """The run's progress through one epoch of planned steps of these row counts."""

    def __init__(self, epoch: int, epochs: int, step_rows: list[int]) -> None:
        self.epoch, self.epochs, self.step_rows = epoch, epochs, step_rows
        self.planned, self.done, self.steps = max(1, sum(step_rows)), 0, 0

    def now(self) -> Progress:
        return Progress(self.epoch, self.epochs, self.done / self.planned)

    def advance(self) -> None:
        self.done += self.step_rows[self.steps]
        self.steps += 1
