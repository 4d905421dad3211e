"""The CUDA Lanczos solve replayed from a CUDA graph: one launch instead of hundreds.

A batched 32-step Lanczos is about 1,200 torch calls, 416 of them kernels, whose launches, not
their work, set its time on a GPU (docs/benchmarks.md). The recurrence
(:func:`saln.selection.solvers.lanczos_tridiagonal`) has no host sync and no random draw, so
it is captured once per input shape and replayed with each call's normalised rows copied into
the graph's static input. Normalisation (with its finiteness check) and the small tridiagonal
eigh run eagerly around the replay.

A shape's first call runs eagerly (it warms up cuBLAS and is all a one-off call needs); its
second call captures; later calls replay. Runs use it on CUDA by default
(``features.cuda_graph: auto``); the functions take ``cuda_graph=True``.
"""

from __future__ import annotations

from collections import Counter

import torch

from saln.errors import InvalidInput
from saln.graphs import Captured, GraphCache, on_side_stream
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
Outputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # the basis, alpha and beta


class GraphedLanczos:
    """``lanczos_fiedler`` for CUDA inputs, from CUDA graphs cached per input shape. The graph's
    static input holds the normalised rows; the basis, alpha and beta are its outputs."""

    def __init__(self, seed: int = LANCZOS_SEED, capacity: int = CAPACITY) -> None:
        self.seed = seed
        self._cache: GraphCache[Outputs] = GraphCache(
            "features.cuda_graph", "Lanczos solves", capacity, fail_all=False
        )
        self._calls: Counter[Key] = Counter()

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not x.is_cuda:
            raise InvalidInput(f"CUDA-graph Lanczos needs a CUDA tensor, got one on {x.device}")
        key = (tuple(x.shape), x.dtype, x.device)
        captured = self._cache.get(key)
        if captured is None:
            self._calls[key] += 1
            # a one-off call is not captured; its eager run warms cuBLAS up
            if self._calls[key] == 1 or self._cache.is_eager(key):
                return lanczos_fiedler(x, seed=self.seed)
            captured = self._capture(key, x)
            if captured is None:
                return lanczos_fiedler(x, seed=self.seed)
        normalise_rows(x, out=captured.inputs[0])  # straight into the static input: no copy
        captured.graph.replay()
        return ritz_fiedler(*captured.outputs)

    def _capture(self, key: Key, x: torch.Tensor) -> Captured[Outputs] | None:
        n = x.shape[1]
        rows = normalise_rows(x)  # becomes the static input; replays overwrite it in place
        start = start_vector(n, rows, self.seed)  # read by every replay: lives with the graph
        steps = lanczos_steps(n)
        on_side_stream(lambda: lanczos_tridiagonal(rows, start, steps), x.device)
        return self._cache.capture(
            key, (rows, start), lambda: lanczos_tridiagonal(rows, start, steps)
        )


# The process-wide solver the spectral selectors use on CUDA: its graphs serve every run.
GRAPHED_LANCZOS = GraphedLanczos()
