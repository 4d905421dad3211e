"""Repaired graph Laplacians of a batch's features: pure, batched functions (CPU and CUDA).

SALN's dense, all-positive cosine graph makes ``L = D - S`` nearly diagonal, and its Fiedler
vector sits on the batch's least connected row (docs/results/README.md). Three known remedies,
each an option:

- ``centre``: subtract the batch's mean feature before the cosine, so similarities measure
  where rows differ rather than the direction every ImageNet feature shares;
- ``graph="knn"``: keep each row's ``k`` most similar neighbours (symmetrised: an edge where
  either row lists the other), so distant rows stop weighing on everyone;
- ``laplacian``: ``normalized`` is ``I - D^-1/2 W D^-1/2`` (von Luxburg et al.: the consistent
  one); ``regularized`` uses ``D + tau I`` with ``tau`` the batch's mean degree (Zhang & Rohe
  2018), which stops cuts that isolate a dangling row. Their eigenvectors are mapped back by
  ``(D + tau I)^-1/2`` (Shi and Malik's normalised cut), so a row's entry is its place in the
  cut. ``combinatorial`` is the paper's ``D - W``.

Edge weights are the similarities clamped at 0 (a Laplacian needs non-negative weights).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from saln.errors import InvalidInput
from saln.registry import Registry

GRAPHS = ("dense", "knn")


def similarity(x: torch.Tensor, centre: bool) -> torch.Tensor:
    """Cosine similarities (b, n, n) of features (b, n, d), after centring each batch if asked,
    in float64. One pass over the features (their Gram); centring is the Gram's double
    centring, ``x_i.x_j - r_i - r_j + mean(r)`` with ``r_i = x_i.mean(x)``. A row of zeros
    (or a row at the mean) has similarity 0 to everything."""
    gram = (x @ x.transpose(1, 2)).double()
    # a row with NaN or inf has a non-finite squared norm, exactly then
    if not bool(torch.isfinite(gram.diagonal(dim1=1, dim2=2)).all()):
        raise InvalidInput(
            "features contain NaN or inf: the feature cache or the encoder is broken"
        )
    if centre:
        rows = gram.mean(dim=-1, keepdim=True)
        gram = gram - rows - rows.transpose(1, 2) + rows.mean(dim=1, keepdim=True)
    norms = gram.diagonal(dim1=1, dim2=2).clamp_min(0).sqrt()
    # a relative floor: a row that centring left at the mean is all round-off
    scale = torch.where(norms > 1e-6 * norms.amax(-1, keepdim=True), 1 / norms, 0)
    return gram * scale.unsqueeze(-1) * scale.unsqueeze(-2)


def graph_weights(sim: torch.Tensor, graph: str, k: int) -> torch.Tensor:
    """Edge weights (b, n, n): non-negative, symmetric, zero diagonal. ``knn`` keeps an edge
    where either end has the other among its ``k`` most similar rows."""
    n = sim.shape[-1]
    eye = torch.eye(n, dtype=torch.bool, device=sim.device)
    weights = sim.clamp_min(0).masked_fill(eye, 0)
    if graph == "dense":
        return weights
    if not 1 <= k < n:
        raise InvalidInput(f"k={k} neighbours needs a batch of more than k rows, got {n}")
    ranked = sim.masked_fill(eye, -torch.inf).topk(k, dim=-1).indices
    listed = torch.zeros_like(weights, dtype=torch.bool).scatter_(-1, ranked, True)
    return weights * (listed | listed.transpose(1, 2))


def _scaling(degrees: torch.Tensor) -> torch.Tensor:
    return torch.where(degrees > 0, degrees.clamp_min(1e-30).rsqrt(), torch.zeros_like(degrees))


def combinatorial(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``D - W``, and the map from its eigenvectors to the rows' values (none)."""
    degrees = weights.sum(-1)
    return torch.diag_embed(degrees) - weights, torch.ones_like(degrees)


def normalized(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``I - D^-1/2 W D^-1/2``, and ``D^-1/2`` (a row of degree 0 is its own component)."""
    return _normalised_by(weights, weights.sum(-1))


def regularized(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``I - Dt^-1/2 W Dt^-1/2`` with ``Dt = D + tau I``, tau the batch's mean degree."""
    degrees = weights.sum(-1)
    return _normalised_by(weights, degrees + degrees.mean(-1, keepdim=True))


def _normalised_by(
    weights: torch.Tensor, degrees: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    scale = _scaling(degrees)
    eye = torch.eye(weights.shape[-1], dtype=weights.dtype, device=weights.device)
    return eye - scale.unsqueeze(-1) * weights * scale.unsqueeze(-2), scale


# weights (b, n, n) -> (Laplacian (b, n, n), per-row scale of its eigenvectors (b, n))
Laplacian = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
LAPLACIANS: Registry[Laplacian] = Registry("laplacian")
for _kind in (combinatorial, normalized, regularized):
    LAPLACIANS.register(_kind.__name__)(lambda kind=_kind: kind)


def check_graph_options(graph: str, laplacian: str, k: int) -> None:
    """Option values, checked before any batch (``k`` against a batch happens per batch)."""
    if graph not in GRAPHS:
        raise InvalidInput(f"graph={graph!r} is not a graph; valid: {', '.join(GRAPHS)}")
    LAPLACIANS.get(laplacian)  # an unknown name fails here, listing the valid ones
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InvalidInput(f"k={k!r} neighbours must be a positive int")


def spectral_embedding(
    x: torch.Tensor, dims: int, *, centre: bool, graph: str, k: int, laplacian: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``dims`` non-trivial eigenvectors of each batch's repaired Laplacian, mapped to
    the rows (b, n, dims) and unit-normed per column, with their eigenvalues and the next one
    (b, dims + 1). Dense ``eigh`` in float64: batches are tens to hundreds of rows."""
    n = x.shape[1]
    if not 1 <= dims <= n - 2:
        raise InvalidInput(f"{dims} eigenvectors of a batch of {n} rows: at most n - 2 = {n - 2}")
    weights = graph_weights(similarity(x, centre), graph, k)
    lap, scale = LAPLACIANS.build(laplacian)(weights)
    values, vectors = smallest_eigenpairs(lap, dims + 2)
    rows = vectors[..., 1 : dims + 1] * scale.unsqueeze(-1)
    rows = rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-30)
    return rows.to(x.dtype), values[..., 1 : dims + 2].to(x.dtype)


def smallest_eigenpairs(lap: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``count`` smallest eigenvalues (b, count) and eigenvectors (b, n, count) of each
    symmetric matrix: batched float64 ``eigh`` on CUDA; on CPU LAPACK's ``dsyevr`` for those
    pairs only, a batch at a time (a full batched ``eigh`` costs several times more)."""
    if lap.is_cuda:
        values, vectors = torch.linalg.eigh(lap)
        return values[..., :count], vectors[..., :count]
    from scipy.linalg import eigh

    pairs = [
        eigh(m, subset_by_index=[0, count - 1], driver="evr", check_finite=False)
        for m in lap.numpy()
    ]
    values = torch.from_numpy(np.stack([v for v, _ in pairs]))
    return values, torch.from_numpy(np.stack([w for _, w in pairs]))
