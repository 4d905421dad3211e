"""CUDA-graph capture, one helper for every graphed piece of work (training steps, scoring
passes, Lanczos solves): warm-up on a side stream, capture, a cache of graphs by key with the
least recently used evicted, and the eager fallback when a capture fails.

PyTorch's recipe: work runs once or more on a side stream before its capture (that creates
optimizer state, lets cuDNN autotune and cuBLAS set up), then is captured with
``capture_error_mode="thread_local"`` (a DataLoader's pin-memory thread may run meanwhile) and
replayed with each call's inputs copied into the graph's static inputs.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch

T = TypeVar("T")


def on_side_stream(work: Callable[[], T], device: torch.device | None = None) -> T:
    """``work()`` on a side stream, ordered after and before the current stream's work."""
    side = torch.cuda.Stream(device=device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        out = work()
    torch.cuda.current_stream(device).wait_stream(side)
    return out


def capture(work: Callable[[], T]) -> tuple[torch.cuda.CUDAGraph, T]:
    """The graph of ``work()`` and its static outputs (each replay overwrites them)."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        out = work()
    return graph, out


def capture_failed(setting: str, what: str, err: Exception) -> None:
    """A capture that fails is not fatal: the same work runs eagerly, only slower."""
    warnings.warn(
        f"{setting}: capturing a CUDA graph failed ({err}); these {what} run eagerly instead "
        f"(same results). Set {setting}=false to silence this.",
        RuntimeWarning,
        stacklevel=3,
    )


@dataclass
class Captured(Generic[T]):
    graph: torch.cuda.CUDAGraph
    inputs: tuple[torch.Tensor, ...]  # static inputs: each replay reads what is copied here
    outputs: T  # static outputs: each replay overwrites them


class GraphCache(Generic[T]):
    """Captured graphs by key, the least recently used evicted beyond ``capacity``. A failed
    capture warns once (naming ``setting``) and marks its key eager, or every key with
    ``fail_all`` (a step whose capture failed would fail again for any shape)."""

    def __init__(self, setting: str, what: str, capacity: int = 8, fail_all: bool = True):
        self.setting, self.what, self.capacity, self.fail_all = setting, what, capacity, fail_all
        self.graphs: OrderedDict[Hashable, Captured[T]] = OrderedDict()
        self.failed: set[Hashable] = set()
        self.eager_only = False

    def is_eager(self, key: Hashable) -> bool:
        return self.eager_only or key in self.failed

    def get(self, key: Hashable) -> Captured[T] | None:
        found = self.graphs.get(key)
        if found is not None:
            self.graphs.move_to_end(key)
        return found

    def drop(self, keep: Callable[[Hashable], bool]) -> None:
        """Release the graphs (and their memory) whose key ``keep`` rejects."""
        self.graphs = OrderedDict((k, v) for k, v in self.graphs.items() if keep(k))

    def capture(
        self, key: Hashable, inputs: tuple[torch.Tensor, ...], work: Callable[[], T]
    ) -> Captured[T] | None:
        """Capture ``work`` (which reads the static ``inputs``) under ``key``; None if the
        capture failed, after which the caller runs the work eagerly (nothing ran in it)."""
        try:
            graph, outputs = capture(work)
        except RuntimeError as err:
            self.failed.add(key)
            self.eager_only = self.fail_all
            capture_failed(self.setting, self.what, err)
            return None
        captured = self.graphs[key] = Captured(graph, inputs, outputs)
        while len(self.graphs) > self.capacity:
            self.graphs.popitem(last=False)
        return captured
