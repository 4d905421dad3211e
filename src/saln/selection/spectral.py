"""SALN: spectral analysis joint batch selection (pure functions + the selector wrapper).

Method card. For a batch of n feature rows: cosine-similarity graph, Laplacian ``D - S``,
Fiedler vector, keep the ``keep`` rows with the largest |Fiedler| entries. Cost: one (n x d)
normalisation plus the eigen-solve; model-free, so a whole epoch is solved in one batched call
in the sampler, before any image is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from saln.errors import InvalidInput
from saln.selection.base import (
    SELECTORS,
    BatchedSelector,
    check_keep,
    keep_count,
    prefer_unseen,
)
from saln.selection.graphed import GRAPHED_LANCZOS
from saln.selection.solvers import SOLVERS

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

# Below this many rows a batch has no meaningful Fiedler vector (n=2 has a single nonzero mode).
MIN_SPECTRAL_ROWS = 3
# On one CPU core both solvers pay the same Gram matrix, which is most of the cost up to
# n = 256; there LAPACK's exact subset solve is exact and at most ~1.3x slower than Lanczos.
# From 512 rows Lanczos wins clearly (benchmarks/results/selection_cpu.json).
AUTO_LANCZOS_MIN_ROWS_CPU = 512


def as_feature_tensor(features: Any) -> torch.Tensor:
    """Validate features and return a float tensor of shape (b, n, d) (a view where possible)."""
    if isinstance(features, np.ndarray):
        if features.dtype == object or not np.issubdtype(features.dtype, np.number):
            raise TypeError(
                f"features must be numeric, got dtype {features.dtype}; convert with .astype(float)"
            )
        if np.iscomplexobj(features):
            raise TypeError("features must be real-valued, got a complex array")
        tensor = torch.from_numpy(np.ascontiguousarray(features))
    elif isinstance(features, torch.Tensor):
        tensor = features.detach()  # fixed reference features: selection never backpropagates
    else:
        raise TypeError(
            f"features must be a numpy array or torch tensor, got {type(features).__name__}"
        )
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise TypeError(f"features must be real numbers, got dtype {tensor.dtype}")
    if tensor.ndim not in (2, 3):
        raise InvalidInput(
            f"features must be 2-D (n, d) or 3-D batched (b, n, d), got shape {tuple(tensor.shape)}"
        )
    if tensor.shape[-1] == 0:
        raise InvalidInput("features have zero columns (d == 0)")
    if not tensor.is_floating_point() or tensor.dtype in (torch.float16, torch.bfloat16):
        tensor = tensor.float()
    batched = tensor if tensor.ndim == 3 else tensor.unsqueeze(0)
    return batched


def resolve_solver(solver: str, n: int, device: torch.device) -> str:
    """``auto``: batched Lanczos on CUDA; on CPU exact below 512 rows, Lanczos from there."""
    if solver != "auto":
        if solver not in SOLVERS.names():
            raise InvalidInput(
                f"unknown solver {solver!r}; valid names: auto, {', '.join(SOLVERS.names())}"
            )
        return solver
    if device.type == "cuda" or n >= AUTO_LANCZOS_MIN_ROWS_CPU:
        return "lanczos"
    return "exact"


def _solve(
    x: torch.Tensor, solver: str, cuda_graph: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fiedler vectors (b, n) and (lambda_2, lambda_3) (b, 2) of validated features (b, n, d)."""
    n = x.shape[1]
    if n < MIN_SPECTRAL_ROWS:
        raise InvalidInput(f"a batch of {n} rows has no Fiedler vector; it needs at least 3 rows")
    name = resolve_solver(solver, n, x.device)
    if cuda_graph and name == "lanczos" and x.is_cuda:
        return GRAPHED_LANCZOS(x)
    return SOLVERS.get(name)(x)


def _like_input(result: torch.Tensor, features: Any, batched: bool) -> Any:
    result = result if batched else result[0]
    return result.cpu().numpy() if isinstance(features, np.ndarray) else result


def fiedler_vector(features: ArrayT, *, solver: str = "auto", cuda_graph: bool = False) -> ArrayT:
    """The Fiedler vector of each batch's cosine-similarity Laplacian: shape (n,) or (b, n).

    Its sign is arbitrary (only |v| is used for selection). Accepts NumPy or torch, CPU or CUDA.
    ``cuda_graph``: replay the Lanczos solve of CUDA inputs from a CUDA graph
    (:mod:`saln.selection.graphed`); it has no effect on other solves.
    """
    vectors, _ = _solve(as_feature_tensor(features), solver, cuda_graph)
    return _like_input(vectors, features, features.ndim == 3)


def priority_order(scores: torch.Tensor) -> torch.Tensor:
    """Positions by descending score; ties go to the lower position (stable sort)."""
    return torch.sort(scores, dim=-1, descending=True, stable=True).indices


def spectral_gap(values: torch.Tensor) -> torch.Tensor:
    """Relative gap ``(l3 - l2) / l2`` per batch; near 0 means the Fiedler vector is not unique."""
    l2, l3 = values[..., 0], values[..., 1]
    return (l3 - l2) / l2.abs().clamp_min(torch.finfo(values.dtype).tiny)


def spectral_select(
    features: ArrayT,
    filter_ratio: float = 0.8,
    *,
    keep: int | None = None,
    solver: str = "auto",
    cuda_graph: bool = False,
) -> ArrayT:
    """Positions of the kept rows, largest |Fiedler| first: (keep,) or (b, keep), int64.

    ``keep`` defaults to ``int(n * (1 - filter_ratio))``; pass it to fix the kept count instead.
    ``cuda_graph`` as in :func:`fiedler_vector`.
    """
    positions, _ = _select(features, filter_ratio, keep, solver, cuda_graph, with_stats=False)
    return positions


def spectral_select_with_stats(
    features: ArrayT,
    filter_ratio: float = 0.8,
    *,
    keep: int | None = None,
    solver: str = "auto",
    cuda_graph: bool = False,
) -> tuple[ArrayT, dict[str, Any]]:
    """Like :func:`spectral_select`, also returning per-batch stats (gap, |Fiedler|, fallback)."""
    return _select(features, filter_ratio, keep, solver, cuda_graph, with_stats=True)


def _select(
    features: ArrayT,
    filter_ratio: float,
    keep: int | None,
    solver: str,
    cuda_graph: bool,
    with_stats: bool,
) -> tuple[ArrayT, dict[str, Any]]:
    x = as_feature_tensor(features)
    batched = features.ndim == 3
    b, n, _ = x.shape
    keep = keep_count(n, filter_ratio) if keep is None else check_keep(keep, n)
    if keep == n or n < MIN_SPECTRAL_ROWS:
        # Nothing to choose (keep all), or too few rows for a Fiedler vector: keep the first
        # ``keep`` positions, deterministically, and say so.
        order = torch.arange(n, device=x.device).expand(b, n)[:, :keep].contiguous()
        reason = "keep_all" if keep == n else "n<3:first_positions"
        return _like_input(order, features, batched), {"fallback": reason}
    vectors, values = _solve(x, solver, cuda_graph)
    magnitude = vectors.abs()
    order = priority_order(magnitude)[:, :keep].contiguous()
    # The stats cost a few small kernels per call; positions alone skip them.
    stats = (
        {"gap": spectral_gap(values), "abs_fiedler": magnitude, "fallback": None}
        if with_stats
        else {}
    )
    return _like_input(order, features, batched), stats


def reference_select(features: np.ndarray, filter_ratio: float = 0.8) -> np.ndarray:
    """The paper's Algorithm 1 in NumPy, one batch: the oracle for tests and the benchmark baseline.

    Cosine similarity, ``L = diag(S.sum(1)) - S``, ``np.linalg.eigh``, eigenvector 1, largest
    |v| first. Unlike the paper's listing, ``keep == 0`` raises instead of keeping everything.
    """
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2:
        raise InvalidInput(f"reference_select takes one batch (n, d), got shape {x.shape}")
    keep = keep_count(x.shape[0], filter_ratio)
    fiedler = np.abs(reference_fiedler(x))
    return np.argsort(-fiedler, kind="stable")[:keep].astype(np.int64)


def reference_fiedler(features: np.ndarray) -> np.ndarray:
    """The Fiedler vector of one batch (n, d) as the paper computes it (unit norm, sign
    arbitrary): cosine similarity, ``L = diag(S.sum(1)) - S``, ``np.linalg.eigh``, column 1."""
    x = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    xn = x / np.where(norms > 0, norms, 1.0)
    sim = xn @ xn.T
    lap = np.diag(sim.sum(axis=1)) - sim
    _, vectors = np.linalg.eigh(lap)
    return vectors[:, 1]


@SELECTORS.register("saln")
@dataclass(frozen=True)
class SpectralSelector(BatchedSelector):
    """SALN on fixed reference features (model-free)."""

    solver: str = "auto"
    cuda_graph: bool = False  # replay CUDA Lanczos solves from CUDA graphs
    name: str = "saln"
    needs: frozenset[str] = frozenset({"features"})

    def select_many(
        self,
        features: torch.Tensor,
        keep: int,
        *,
        generator: torch.Generator | None = None,
        seen: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """A whole epoch of equal-sized batches (b, n, d) in one batched call. With ``seen``
        (coverage), the rows not yet trained in this cycle come first, each group in |Fiedler|
        order; without it this is the paper's algorithm."""
        positions, stats = spectral_select_with_stats(
            features, keep=keep, solver=self.solver, cuda_graph=self.cuda_graph
        )
        return unseen_first(positions, stats, keep, seen), stats


def unseen_first(
    positions: torch.Tensor, stats: dict[str, Any], keep: int, seen: torch.Tensor | None
) -> torch.Tensor:
    """A |Fiedler| ranking re-ordered for coverage: unseen rows first (see ``prefer_unseen``)."""
    if seen is None or "abs_fiedler" not in stats:
        return positions
    return priority_order(prefer_unseen(stats["abs_fiedler"], seen))[:, :keep].contiguous()
