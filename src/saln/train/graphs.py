"""Whole training steps as CUDA graphs: one launch per step instead of hundreds.

At the paper's 12-row steps a ResNet-18 step is bound by kernel launches, not by the GPU
(docs/benchmarks.md). This follows PyTorch's whole-network capture recipe (:mod:`saln.graphs`):
the first steps of each batch shape run eagerly on a side stream (they create the optimizer
state and let cuDNN autotune), then forward, backward and the fused optimizer step are captured
once per (batch shape, learning rate) and replayed with each batch copied into the graph's
static inputs. A step of another shape before its warm-up is done runs eagerly.

``train.cuda_graphs: auto`` (the default) uses it wherever it can run: one process on CUDA,
eager SGD. Steps are the same computation as :func:`saln.train.step.train_step`; only the
kernels' launch changes.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch import nn

from saln.graphs import Captured, GraphCache, on_side_stream
from saln.train.step import score_losses, train_step, weighted_train_step

WARMUP_STEPS = 3  # eager steps per batch shape before its capture (PyTorch's recipe uses 3)

Outputs = tuple[torch.Tensor, ...]


class _GraphedSteps:
    """A train step of one model and optimizer, replayed from CUDA graphs: :meth:`_eager` is
    the step, on the batch's tensors (images first), as subclasses define it."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        autocast: bool,
        label_smoothing: float = 0.0,
    ) -> None:
        self.model, self.optimizer, self.autocast = model, optimizer, autocast
        self.label_smoothing = label_smoothing
        self._cache: GraphCache[Outputs] = GraphCache("train.cuda_graphs", "steps")
        self._warm: Counter[tuple[int, ...]] = Counter()

    @property
    def eager_only(self) -> bool:
        """Whether a capture failed: the run then goes on with eager steps."""
        return self._cache.eager_only

    def _eager(
        self, inputs: tuple[torch.Tensor, ...], loss_scale: float, autocast_cache: bool = True
    ) -> Outputs:
        raise NotImplementedError

    def _run(self, inputs: tuple[torch.Tensor, ...], loss_scale: float) -> Outputs:
        images = inputs[0]
        shape = tuple(images.shape)
        # Only DDP's global selection scales the loss, and graphs run without DDP.
        if self.eager_only or loss_scale != 1.0:
            return self._eager(inputs, loss_scale)
        if self._warm[shape] < WARMUP_STEPS:
            self._warm[shape] += 1
            return on_side_stream(lambda: self._eager(inputs, loss_scale))
        # The learning rates are baked into the captured optimizer kernel, and what trains
        # into its backward: a new lr (the schedule's next epoch) or a frozen parameter gets
        # its own graph, and the old one is released.
        lrs = tuple(group["lr"] for group in self.optimizer.param_groups)
        trainable = sum(p.requires_grad for p in self.model.parameters())
        key = (shape, images.stride(), lrs, trainable)
        captured = self._cache.get(key)
        if captured is None:
            self._cache.drop(lambda k: k[0] != shape)  # type: ignore[index]
            captured = self._capture(key, inputs)
            if captured is None:
                return self._eager(inputs, loss_scale)
        for static, given in zip(captured.inputs, inputs, strict=True):
            static.copy_(given)
        captured.graph.replay()
        return tuple(out.clone() for out in captured.outputs)

    def _capture(
        self, key: tuple[object, ...], inputs: tuple[torch.Tensor, ...]
    ) -> Captured[Outputs] | None:
        static = tuple(t.clone() for t in inputs)
        # Gradients allocated inside the capture live in the graph's private memory pool.
        self.optimizer.zero_grad(set_to_none=True)
        # no autocast cache: a cached cast would outlive the capture
        return self._cache.capture(key, static, lambda: self._eager(static, 1.0, False))


class GraphedStep(_GraphedSteps):
    """``train_step`` for one model and optimizer, replayed from CUDA graphs."""

    def __call__(
        self, images: torch.Tensor, labels: torch.Tensor, loss_scale: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        loss_sum, correct = self._run((images, labels), loss_scale)
        return loss_sum, correct

    def _eager(
        self, inputs: tuple[torch.Tensor, ...], loss_scale: float, autocast_cache: bool = True
    ) -> Outputs:
        images, labels = inputs
        return train_step(
            self.model, self.optimizer, images, labels, self.autocast, loss_scale, autocast_cache,
            label_smoothing=self.label_smoothing,
        )  # fmt: skip


class GraphedWeightedStep(_GraphedSteps):
    """``weighted_train_step`` replayed likewise: the rows' loss weights are one more static
    input, and the rows' losses (which the epoch's planner keeps) one more output."""

    def __call__(
        self, images: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, loss_scale: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        loss_sum, correct, per_row = self._run((images, labels, weights), loss_scale)
        return loss_sum, correct, per_row

    def _eager(
        self, inputs: tuple[torch.Tensor, ...], loss_scale: float, autocast_cache: bool = True
    ) -> Outputs:
        images, labels, weights = inputs
        return weighted_train_step(
            self.model, self.optimizer, images, labels, weights, self.autocast, loss_scale,
            autocast_cache, label_smoothing=self.label_smoothing,
        )  # fmt: skip


class GraphedScorer:
    """``score_losses`` for one model, replayed from CUDA graphs (one per batch shape).

    Loss, RHO-LOSS and JEST score every loaded row with a no-grad forward before each step;
    eagerly that forward costs a whole network's launches, as an eager step does, so with
    graphed steps alone these methods would pay for launches that the others no longer pay.
    The model's parameters are updated in place by the steps, so a replay always reads the
    current weights; batch-norm momentum is 0 during the capture, as in every scoring pass."""

    def __init__(self, model: nn.Module, autocast: bool) -> None:
        self.model, self.autocast = model, autocast
        self._cache: GraphCache[torch.Tensor] = GraphCache("train.cuda_graphs", "scoring passes")
        self._calls: Counter[tuple[object, ...]] = Counter()

    @property
    def eager_only(self) -> bool:
        return self._cache.eager_only

    def _eager(
        self, images: torch.Tensor, labels: torch.Tensor, cache: bool = True
    ) -> torch.Tensor:
        return score_losses(self.model, images, labels, self.autocast, autocast_cache=cache)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.eager_only:
            return self._eager(images, labels)
        key = (tuple(images.shape), images.stride())
        captured = self._cache.get(key)
        if captured is None:
            self._calls[key] += 1
            if self._calls[key] <= WARMUP_STEPS:
                return on_side_stream(lambda: self._eager(images, labels))
            static = (images.clone(), labels.clone())
            captured = self._cache.capture(key, static, lambda: self._eager(*static, False))
            if captured is None:
                return self._eager(images, labels)
        for held, given in zip(captured.inputs, (images, labels), strict=True):
            held.copy_(given)
        captured.graph.replay()
        return captured.outputs.clone()  # the next replay overwrites the static output
