"""Lookahead as airbench trains with it: every k steps the weights are pulled to an
exponential moving average of themselves, and at the end they are set to it.

The EMA's decay ramps with progress (``0.95**5 * progress**3``): near 0 early, where the average
follows the weights, towards 0.77 at the end, where it smooths the last steps. Floating-point
state (weights and BatchNorm statistics) is averaged; integer buffers are left alone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

PEAK_DECAY = 0.95**5


def lookahead_decay(progress: float) -> float:
    return PEAK_DECAY * progress**3


def ema_update(average: torch.Tensor, current: torch.Tensor, decay: float) -> None:
    """average <- decay * average + (1 - decay) * current; then current <- average."""
    average.lerp_(current, 1 - decay)
    current.copy_(average)


class Lookahead:
    def __init__(self, model: nn.Module, every: int) -> None:
        self.model, self.every, self.steps = model, every, 0
        self.average = {k: v.detach().clone() for k, v in self._floating().items()}

    def _floating(self) -> dict[str, torch.Tensor]:
        state = self.model.state_dict(keep_vars=False)
        return {k: v for k, v in state.items() if v.is_floating_point()}

    @torch.no_grad()
    def after_step(self, progress: float) -> None:
        """Count a step; on every k-th, pull the weights to the average at ``progress``."""
        self.steps += 1
        if self.steps % self.every == 0:
            self._pull(lookahead_decay(progress))

    @torch.no_grad()
    def finish(self) -> None:
        """The weights become the average (the steps since the last pull are not kept)."""
        self._pull(1.0)

    def _pull(self, decay: float) -> None:
        current = self._floating()
        for key, average in self.average.items():
            ema_update(average, current[key], decay)

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "average": {k: v.cpu() for k, v in self.average.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
        for key, value in state["average"].items():
            self.average[key].copy_(value)
