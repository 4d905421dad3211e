"""The proxy model of method ``proxy`` (:mod:`saln.selection.proxy`): a small learner that
scores each loaded batch for the learner and trains on the rows it kept every k-th step.

Under torchrun each rank scores and keeps its own rows, and the proxy's gradients are averaged
across ranks (DistributedDataParallel) on the steps it trains, so every rank's proxy holds the
same weights, as the learner's do.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from saln import distributed
from saln.config import Config, channels_last
from saln.data.loaders import Pipeline
from saln.errors import InvalidInput
from saln.models import DataInitialised, build_learner, check_input_size
from saln.models.airbench import WIDTHS
from saln.train.components import INIT_SAMPLE, build_optimizer
from saln.train.schedules import LearningRates, Progress
from saln.train.step import score_losses, train_step


def proxy_widths(config: Config) -> list[int]:
    """``selection.proxy_widths``, else a quarter of the learner's airbench widths (of
    airbench94's for another learner)."""
    if config.selection.proxy_widths is not None:
        return list(config.selection.proxy_widths)
    m = config.model
    own = m.widths if m.learner == "airbench" and m.widths else WIDTHS
    return [max(1, w // 4) for w in own]


class ProxyModel:
    """A proxy network, its optimizer and when it trains: it scores every loaded row and
    trains on the rows it kept every ``every``-th step. ``saln train`` builds one from the
    config (:func:`build_proxy`); the Curator from the caller's own network and optimizer.

    Under torchrun its gradients are averaged across ranks (DistributedDataParallel, wrapped
    at its first training step, so a process group that starts later is followed), so every
    rank's proxy holds the same weights; a network already wrapped in DDP is used as it is.
    ``rates`` sets the optimizer's lr from the run's progress; without it the caller owns the
    optimizer's schedule."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        every: int = 4,
        resolution: int | None = None,
        amp: bool = False,
        label_smoothing: float = 0.0,
        rates: LearningRates | None = None,
    ) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise InvalidInput(
                f"proxy_every must be an int >= 1 (the proxy trains every k-th step), got {every!r}"
            )
        wrapped = isinstance(model, nn.parallel.DistributedDataParallel)
        self.model: nn.Module = distributed.unwrap(model) if wrapped else model
        self._trained: nn.Module | None = model if wrapped else None
        self.optimizer, self.rates = optimizer, rates
        self.every, self.resolution, self.amp = every, resolution, amp
        self.label_smoothing = label_smoothing
        self.calls = 0
        self.progress = Progress(0, 1)  # the run's, set before each step

    @property
    def trained(self) -> nn.Module:
        """The network the proxy's steps train: DDP-wrapped under torchrun."""
        if self._trained is None:
            device = next(self.model.parameters()).device
            self._trained = distributed.wrap(self.model, device)
        return self._trained

    def resize(self, images: torch.Tensor) -> torch.Tensor:
        """Images at the proxy's resolution (antialiased bilinear), or as they are."""
        size = self.resolution
        if size is None or (images.shape[-1] == size and images.shape[-2] == size):
            return images
        return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True)

    def init_from_data(self, pipeline: Pipeline, rows: np.ndarray) -> float:
        """The proxy's data-dependent init (airbench's whitening) from the rows the learner
        trains on, at its resolution; the seconds it took (a one-off cost)."""
        start = time.perf_counter()
        if isinstance(self.model, DataInitialised):
            first = [int(i) for i in rows[:INIT_SAMPLE]]
            batches = pipeline.batches([first], train=False, seed=0)
            self.model.init_from_data(self.resize(torch.cat([b.images for b in batches])))
        return time.perf_counter() - start

    def score(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Each loaded row's proxy cross-entropy, no grad."""
        return score_losses(self.model, self.resize(images), labels, self.amp)

    def learn(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """Called with the rows kept at each step; every ``proxy_every``-th call trains on them."""
        self.calls += 1
        if self.calls % self.every == 0:
            if self.rates is not None:
                self.rates.set(self.progress, rows=len(labels))
            train_step(
                self.trained, self.optimizer, self.resize(images), labels, self.amp,
                label_smoothing=self.label_smoothing,
            )  # fmt: skip

    def flops_per_step(self, loaded: int, keep: int, image_size: int) -> float:
        """The proxy's FLOPs per step, counted by torch: a forward over ``loaded`` rows, and a
        training step (forward and backward, about 3 forwards) on ``keep`` rows every k-th."""
        device = next(self.model.parameters()).device
        probe = torch.zeros(2, 3, image_size, image_size, device=device)
        was_training = self.model.training
        self.model.eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            self.model(self.resize(probe))
        self.model.train(was_training)
        per_row = counter.get_total_flops() / 2
        return per_row * (loaded + 3 * keep / self.every)

    def state_dict(self) -> dict[str, Any]:
        """A snapshot (torch's state dicts alias the live tensors, which train on)."""
        return {
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "calls": self.calls,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = next(self.model.parameters()).device
        self.model.load_state_dict({k: v.to(device) for k, v in state["model"].items()})
        self.optimizer.load_state_dict(state["optimizer"])
        self.calls = int(state["calls"])


def build_proxy(
    config: Config, num_classes: int, device: torch.device, rows_per_step: int
) -> ProxyModel:
    """The proxy ``saln train`` runs: ``selection.proxy_learner`` at ``proxy_widths``, the
    learner's optimizer settings and schedule, scoring at ``proxy_resolution``."""
    s = config.selection
    shape: dict[str, Any] = (
        {"widths": proxy_widths(config)} if s.proxy_learner == "airbench" else {}
    )
    resolution = s.proxy_resolution or config.data.image_size
    model = build_learner(s.proxy_learner, num_classes, **shape)
    name = f"the proxy {s.proxy_learner}"
    check_input_size(model, resolution, "selection.proxy_resolution", name)
    model = model.to(device)
    if channels_last(config, device.type):
        model = model.to(memory_format=torch.channels_last)
    optimizer, rates = build_optimizer(model, config, rows_per_step)
    return ProxyModel(
        model, optimizer, every=s.proxy_every, resolution=resolution, amp=config.train.amp,
        label_smoothing=config.optim.label_smoothing, rates=rates,
    )  # fmt: skip
