"""The CUDA Lanczos solve replayed from a CUDA graph: one launch instead of hundreds.

A batched 32-step Lanczos is about 1,200 torch calls, 416 of them kernels, whose launches, not
their work, set its time on a GPU (13.8 ms for a whole CIFAR-10 epoch of selections, 176
batches of 256 rows, on a sandboxed H200; docs/benchmarks.md). The recurrence
(:func:`saln.selection.solvers.lanczos_tridiagonal`) has no host sync and no random draw, so
it is captured once per input shape and replayed with each call's normalised rows copied into
the graph's static input. Normalisation (with its finiteness check) and the small tridiagonal
eigh run eagerly around the replay.

A shape's first call runs eagerly (it warms up cuBLAS and is all a one-off call needs); its
second call captures; later calls replay. Runs use it on CUDA by default
(``features.cuda_graph: auto``); the functions take ``cuda_graph=True``.
"""

from __future__ import annotations

import warnings
from collections import Counter, OrderedDict
from dataclasses import dataclass

import torch

from saln.errors import InvalidInput
from saln.selection.solvers import (
    LANCZOS_SEED,
    lanczos_fiedler,
    lanczos_steps,
    lanczos_tridiagonal,
    normalise_rows,
    ritz_fiedler,
    start_vector,
)

# Captured shapes kept per process: an epoch's batched call and a short tail's, for a couple of
# (n, d) settings. Each holds its static input, b * n * d floats.
CAPACITY = 4

Key = tuple[tuple[int, ...], torch.dtype, torch.device]


def capture_failed(setting: str, what: str, err: Exception) -> None:
    """A capture that fails is not fatal: the same work runs eagerly, only slower."""
    warnings.warn(
        f"{setting}: capturing a CUDA graph failed ({err}); these {what} run eagerly instead "
        f"(same results). Set {setting}=false to silence this.",
        RuntimeWarning,
        stacklevel=3,
    )


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    rows: torch.Tensor  # static input: each replay reads the normalised rows copied here
    start: torch.Tensor  # read by every replay: it must live as long as the graph
    basis: torch.Tensor  # static outputs: each replay overwrites them
    alpha: torch.Tensor
    beta: torch.Tensor


class GraphedLanczos:
    """``lanczos_fiedler`` for CUDA inputs, from CUDA graphs cached per input shape."""

    def __init__(self, seed: int = LANCZOS_SEED, capacity: int = CAPACITY) -> None:
        self.seed, self.capacity = seed, capacity
        self._graphs: OrderedDict[Key, _Captured] = OrderedDict()
        self._calls: Counter[Key] = Counter()
        self._failed: set[Key] = set()  # shapes whose capture failed: they solve eagerly

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not x.is_cuda:
            raise InvalidInput(f"CUDA-graph Lanczos needs a CUDA tensor, got one on {x.device}")
        key = (tuple(x.shape), x.dtype, x.device)
        captured = self._graphs.get(key)
        if captured is None:
            self._calls[key] += 1
            if self._calls[key] == 1 or key in self._failed:  # a one-off call is not captured
                return lanczos_fiedler(x, seed=self.seed)
            try:
                captured = self._capture(x)
            except RuntimeError as err:  # nothing ran during the failed capture
                self._failed.add(key)
                capture_failed("features.cuda_graph", "Lanczos solves", err)
                return lanczos_fiedler(x, seed=self.seed)
        self._graphs.move_to_end(key)
        normalise_rows(x, out=captured.rows)  # straight into the static input: no extra copy
        captured.graph.replay()
        return ritz_fiedler(captured.basis, captured.alpha, captured.beta)

    def _capture(self, x: torch.Tensor) -> _Captured:
        n = x.shape[1]
        rows = normalise_rows(x)  # becomes the static input; replays overwrite it in place
        start = start_vector(n, rows, self.seed)
        steps = lanczos_steps(n)
        # PyTorch's recipe: run the work once on a side stream before capturing it.
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            lanczos_tridiagonal(rows, start, steps)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: a DataLoader's pin-memory thread may run during the capture.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            basis, alpha, beta = lanczos_tridiagonal(rows, start, steps)
        captured = _Captured(graph, rows, start, basis, alpha, beta)
        self._graphs[(tuple(x.shape), x.dtype, x.device)] = captured
        while len(self._graphs) > self.capacity:
            self._graphs.popitem(last=False)  # the least recently used graph and its memory
        return captured


GRAPHED_LANCZOS = GraphedLanczos()
