"""The proxy model of method ``proxy`` (:mod:`saln.selection.proxy`): a small learner that
scores each loaded batch for the learner and trains on the rows it kept every k-th step.

Under torchrun each rank scores and keeps its own rows, and the proxy's gradients are averaged
across ranks (DistributedDataParallel) on the steps it trains, so every rank's proxy holds the
same weights, as the learner's do.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from saln import distributed
from saln.config import Config, channels_last
from saln.data.loaders import Pipeline
from saln.models import DataInitialised, build_learner, check_input_size
from saln.models.airbench import WIDTHS
from saln.train.components import INIT_SAMPLE, build_optimizer
from saln.train.schedules import Progress
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
    def __init__(
        self, config: Config, num_classes: int, device: torch.device, rows_per_step: int
    ) -> None:
        s = config.selection
        shape: dict[str, Any] = (
            {"widths": proxy_widths(config)} if s.proxy_learner == "airbench" else {}
        )
        self.resolution = s.proxy_resolution or config.data.image_size
        model = build_learner(s.proxy_learner, num_classes, **shape)
        name = f"the proxy {s.proxy_learner}"
        check_input_size(model, self.resolution, "selection.proxy_resolution", name)
        model = model.to(device)
        if channels_last(config, device.type):
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.trained = distributed.wrap(model, device)  # gradients averaged across ranks
        self.optimizer, self.rates = build_optimizer(model, config, rows_per_step)
        self.every, self.amp = s.proxy_every, config.train.amp
        self.label_smoothing = config.optim.label_smoothing
        self.calls = 0
        self.progress = Progress(0, 1)  # the run's, set before each step

    def resize(self, images: torch.Tensor) -> torch.Tensor:
        """Images at the proxy's resolution (antialiased bilinear), or as they are."""
        size = self.resolution
        if images.shape[-1] == size and images.shape[-2] == size:
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
        return {
            "model": {k: v.cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "calls": self.calls,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.calls = int(state["calls"])
