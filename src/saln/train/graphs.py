"""Whole training steps as CUDA graphs: one launch per step instead of hundreds.

At the paper's 12-row steps a ResNet-18 step is bound by kernel launches, not by the GPU (7.6 ms
per step on a sandboxed H200, docs/benchmarks.md). This follows PyTorch's whole-network capture
recipe: the first steps of each batch shape run eagerly on a side stream (they create the
optimizer state and let cuDNN autotune), then forward, backward and the fused optimizer step
are captured once per (batch shape, learning rate) and replayed with each batch copied into the
graph's static inputs. A step of another shape before its warm-up is done runs eagerly.

``train.cuda_graphs: auto`` (the default) uses it wherever it can run: one process on CUDA,
eager SGD. Steps are the same computation as :func:`saln.train.step.train_step`; only the
kernels' launch changes (a graphed SALN epoch took 0.16x the eager one's time on an H200).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
from torch import nn

from saln.selection.graphed import capture_failed
from saln.train.step import score_losses, train_step, weighted_train_step

WARMUP_STEPS = 3  # eager steps per batch shape before its capture (PyTorch's recipe uses 3)


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    inputs: tuple[torch.Tensor, ...]  # static inputs: each replay reads the batch copied here
    outputs: tuple[torch.Tensor, ...]  # static outputs: each replay overwrites them


class _GraphedSteps:
    """A train step of one model and optimizer, replayed from CUDA graphs: :meth:`_eager` is
    the step, on the batch's tensors (images first), as subclasses define it."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, autocast: bool) -> None:
        self.model, self.optimizer, self.autocast = model, optimizer, autocast
        self._graphs: dict[tuple[object, ...], _Captured] = {}
        self._warm: Counter[tuple[int, ...]] = Counter()
        self._side = torch.cuda.Stream()
        self.eager_only = False  # set when a capture fails: the run goes on with eager steps

    def _eager(
        self, inputs: tuple[torch.Tensor, ...], loss_scale: float, autocast_cache: bool = True
    ) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def _run(self, inputs: tuple[torch.Tensor, ...], loss_scale: float) -> tuple[torch.Tensor, ...]:
        images = inputs[0]
        shape = tuple(images.shape)
        # Only DDP's global selection scales the loss, and graphs run without DDP.
        if self.eager_only or loss_scale != 1.0:
            return self._eager(inputs, loss_scale)
        if self._warm[shape] < WARMUP_STEPS:
            self._warm[shape] += 1
            return self._on_side_stream(inputs, loss_scale)
        # The learning rate is baked into the captured optimizer kernel: a new one (the
        # schedule's next epoch) gets its own graph, and the old one is released.
        key = (shape, images.stride(), self.optimizer.param_groups[0]["lr"])
        captured = self._graphs.get(key)
        if captured is None:
            self._graphs = {k: v for k, v in self._graphs.items() if k[0] != shape}
            try:
                captured = self._graphs[key] = self._capture(inputs)
            except RuntimeError as err:  # nothing ran during the failed capture: step eagerly
                self.eager_only = True
                capture_failed("train.cuda_graphs", "steps", err)
                return self._eager(inputs, loss_scale)
        for static, given in zip(captured.inputs, inputs, strict=True):
            static.copy_(given)
        captured.graph.replay()
        return tuple(out.clone() for out in captured.outputs)

    def _on_side_stream(
        self, inputs: tuple[torch.Tensor, ...], loss_scale: float
    ) -> tuple[torch.Tensor, ...]:
        self._side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self._side):
            out = self._eager(inputs, loss_scale)
        torch.cuda.current_stream().wait_stream(self._side)
        return out

    def _capture(self, inputs: tuple[torch.Tensor, ...]) -> _Captured:
        static = tuple(t.clone() for t in inputs)
        # Gradients allocated inside the capture live in the graph's private memory pool.
        self.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        # thread_local: a DataLoader's pin-memory thread keeps running during the capture.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            # no autocast cache: a cached cast would outlive the capture
            outputs = self._eager(static, 1.0, autocast_cache=False)
        return _Captured(graph, static, outputs)


class GraphedStep(_GraphedSteps):
    """``train_step`` for one model and optimizer, replayed from CUDA graphs."""

    def __call__(
        self, images: torch.Tensor, labels: torch.Tensor, loss_scale: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        loss_sum, correct = self._run((images, labels), loss_scale)
        return loss_sum, correct

    def _eager(
        self, inputs: tuple[torch.Tensor, ...], loss_scale: float, autocast_cache: bool = True
    ) -> tuple[torch.Tensor, ...]:
        images, labels = inputs
        return train_step(
            self.model, self.optimizer, images, labels, self.autocast, loss_scale, autocast_cache
        )


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
    ) -> tuple[torch.Tensor, ...]:
        images, labels, weights = inputs
        return weighted_train_step(
            self.model, self.optimizer, images, labels, weights, self.autocast, loss_scale,
            autocast_cache,
        )  # fmt: skip


@dataclass
class _CapturedScores:
    graph: torch.cuda.CUDAGraph
    images: torch.Tensor  # static inputs
    labels: torch.Tensor
    losses: torch.Tensor  # static output


class GraphedScorer:
    """``score_losses`` for one model, replayed from CUDA graphs (one per batch shape).

    Loss, RHO-LOSS and JEST score every loaded row with a no-grad forward before each step;
    eagerly that forward costs a whole network's launches, as an eager step does, so with
    graphed steps alone these methods would pay for launches that the others no longer pay.
    The model's parameters are updated in place by the steps, so a replay always reads the
    current weights; batch-norm momentum is 0 during the capture, as in every scoring pass."""

    def __init__(self, model: nn.Module, autocast: bool) -> None:
        self.model, self.autocast = model, autocast
        self._graphs: dict[tuple[object, ...], _CapturedScores] = {}
        self._calls: Counter[tuple[object, ...]] = Counter()
        self._side = torch.cuda.Stream()
        self.eager_only = False  # set when a capture fails: scoring goes on eagerly

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.eager_only:
            return score_losses(self.model, images, labels, self.autocast)
        key = (tuple(images.shape), images.stride())
        captured = self._graphs.get(key)
        if captured is None:
            self._calls[key] += 1
            if self._calls[key] <= WARMUP_STEPS:
                return self._on_side_stream(images, labels)
            try:
                captured = self._graphs[key] = self._capture(images, labels)
            except RuntimeError as err:  # nothing ran during the failed capture
                self.eager_only = True
                capture_failed("train.cuda_graphs", "scoring passes", err)
                return score_losses(self.model, images, labels, self.autocast)
        captured.images.copy_(images)
        captured.labels.copy_(labels)
        captured.graph.replay()
        return captured.losses.clone()  # the next replay overwrites the static output

    def _on_side_stream(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self._side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self._side):
            losses = score_losses(self.model, images, labels, self.autocast)
        torch.cuda.current_stream().wait_stream(self._side)
        return losses

    def _capture(self, images: torch.Tensor, labels: torch.Tensor) -> _CapturedScores:
        static_images, static_labels = images.clone(), labels.clone()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            losses = score_losses(
                self.model, static_images, static_labels, self.autocast, autocast_cache=False
            )
        return _CapturedScores(graph, static_images, static_labels, losses)
