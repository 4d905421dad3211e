"""Fiedler-vector solvers for batched cosine-similarity graph Laplacians.

Every solver takes validated feature rows ``x`` of shape (b, n, d) (cosine similarity is scale-
free, so each solver normalises the way that is cheapest for it) and returns the Fiedler vectors
(b, n) and the eigenvalue pairs (lambda_2, lambda_3), shape (b, 2), for the spectral gap.
``L = D - S`` with ``S = xn @ xn^T`` and ``D = diag(S.sum(1))``; its smallest eigenvalue is 0 with
the constant eigenvector, so the Fiedler vector is the eigenvector of the second-smallest one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn

import numpy as np
import torch

from saln.errors import InvalidInput
from saln.registry import Registry
from saln.selection.lapack import (
    NonFiniteRows,
    exact_fiedler,
    lanczos_fiedler_dense,
    laplacian_lower,
    single_threaded_blas,
    symmetric_laplacian,
)

# A solver maps features (b, n, d) to (Fiedler vectors (b, n), (lambda_2, lambda_3) (b, 2)).
SOLVERS: Registry[tuple[torch.Tensor, torch.Tensor]] = Registry("solver")

# Krylov dimension. 32 steps with full re-orthogonalisation selected the exact solver's set on
# clustered features and CIFAR-10 pixels (tests/test_spectral.py, benchmarks/bench_selection.py);
# 16 did not (DESIGN.md section 5). On CUDA the batched tridiagonal eigh is truly batched only
# up to 32x32, so 32 is also the ceiling there.
LANCZOS_STEPS = 32
LANCZOS_SEED = 0
# The CPU Lanczos runs this many bytes of Laplacians in lockstep (16 at n = 256, 4 at n = 512):
# enough problems per NumPy call to hide its overhead, few enough to stay in cache
# (benchmarks/results/selection_cpu.json).
CPU_LANCZOS_GROUP_BYTES = 4 << 20
MAX_CPU_LANCZOS_GROUP = 16


def raise_non_finite(x: torch.Tensor) -> NoReturn:
    """Name the rows that hold NaN/inf (called only once a row norm came out non-finite)."""
    where = (~torch.isfinite(x).all(-1)).nonzero().tolist()
    if not where:
        raise InvalidInput("features are too large: a row norm overflows float32; rescale them")
    shown = ", ".join(str(tuple(w) if x.shape[0] > 1 else w[1]) for w in where[:10])
    more = f" (+{len(where) - 10} more)" if len(where) > 10 else ""
    raise InvalidInput(
        f"features contain NaN or inf at rows {shown}{more}; "
        "re-extract the features or drop those samples"
    )


def normalise_rows(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """L2-normalise rows (into ``out`` if given); a zero row stays zero, so it has zero
    similarity to everything.

    A row norm is non-finite exactly when its row holds NaN or inf, so this is also the
    finiteness check, at no extra cost.
    """
    norm = x.norm(dim=-1, keepdim=True)
    if not bool(torch.isfinite(norm).all()):
        raise_non_finite(x)
    return torch.div(x, torch.where(norm > 0, norm, torch.ones_like(norm)), out=out)


def torch_laplacian(x: torch.Tensor) -> torch.Tensor:
    """``D - S`` in torch, batched: the CUDA path (any device; tested on CPU against NumPy's)."""
    return laplacian_of_normalised(normalise_rows(x))


def laplacian_of_normalised(xn: torch.Tensor) -> torch.Tensor:
    sim = xn @ xn.transpose(-1, -2)
    return torch.diag_embed(sim.sum(-1)) - sim


def exact_cpu(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The CPU exact path: each batch's lower-triangle Laplacian (SYRK) solved by LAPACK."""
    with single_threaded_blas():
        return _exact_cpu(x)


def _exact_cpu(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    rows = x.float().numpy()
    vectors = np.empty(rows.shape[:2], dtype=np.float32)
    values = np.empty((rows.shape[0], 2), dtype=np.float32)
    for i, batch in enumerate(rows):
        try:
            lap = laplacian_lower(batch)
        except NonFiniteRows:
            raise_non_finite(x)
        vectors[i], values[i] = exact_fiedler(lap)
    return torch.from_numpy(vectors), torch.from_numpy(values)


def cpu_lanczos_group(n: int) -> int:
    """How many n-row problems the CPU Lanczos runs in lockstep."""
    return max(1, min(MAX_CPU_LANCZOS_GROUP, CPU_LANCZOS_GROUP_BYTES // (4 * n * n)))


def grouped_cpu_lanczos(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The CPU Lanczos path: groups of batches' mirrored SYRK Laplacians solved in lockstep
    (cheaper on CPU than 64 memory-bound passes over x per batch). A batch's result does not
    depend on its group, so a batched call equals the per-batch loop."""
    with single_threaded_blas():
        return _grouped_cpu_lanczos(x)


def _grouped_cpu_lanczos(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    rows = x.float().numpy()
    b, n, _ = rows.shape
    group = min(b, cpu_lanczos_group(n))
    start = np.random.default_rng(LANCZOS_SEED).random((n,), dtype=np.float32)
    start -= 0.5
    laps = np.empty((group, n, n), dtype=np.float32)
    vectors = np.empty((b, n), dtype=np.float32)
    values = np.empty((b, 2), dtype=np.float32)
    for first in range(0, b, group):
        members = rows[first : first + group]
        for i, batch in enumerate(members):
            try:
                symmetric_laplacian(batch, out=laps[i])
            except NonFiniteRows:
                raise_non_finite(x)
        done = slice(first, first + len(members))
        vectors[done], values[done] = lanczos_fiedler_dense(
            laps[: len(members)], lanczos_steps(n), start
        )
    return torch.from_numpy(vectors), torch.from_numpy(values)


def eigh_torch(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched float64 ``torch.linalg.eigh``: the exact CUDA path."""
    values, vectors = torch.linalg.eigh(torch_laplacian(x.double()))
    return vectors[..., 1].to(x.dtype), values[..., 1:3].to(x.dtype)


@SOLVERS.register("exact")
def solve_exact(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact solve: LAPACK ``ssyevr`` (eigenpairs 2-3 only) in float32 on CPU, batched float64
    eigh on CUDA."""
    return eigh_torch(x) if x.is_cuda else exact_cpu(x)


Operator = Callable[[torch.Tensor], torch.Tensor]  # (b, 1, n) -> (b, 1, n)


def laplacian_operator(xn: torch.Tensor, factored: bool = True) -> Operator:
    """``v -> L v`` for normalised rows ``xn``: factored ``deg*v - (v xn) xn^T`` with S never
    formed (DESIGN.md section 5), or dense through the Laplacian matrix."""
    if not factored:
        lap = laplacian_of_normalised(xn)
        return lambda v: v @ lap
    xt = xn.transpose(-1, -2)
    deg = xn.sum(-2, keepdim=True) @ xt  # (b, 1, n): S @ 1
    return lambda v: torch.baddbmm(deg * v, v @ xn, xt, alpha=-1)


def _orthogonalise(v: torch.Tensor, basis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Remove span(basis) (b, m, n) from row vectors v (b, 1, n), twice ("twice is enough").
    Also returns the first pass's coefficients v . basis_i (b, 1, m)."""
    first = v @ basis.transpose(-1, -2)
    v = torch.baddbmm(v, first, basis, alpha=-1)
    return torch.baddbmm(v, v @ basis.transpose(-1, -2), basis, alpha=-1), first


def start_vector(n: int, like: torch.Tensor, seed: int = LANCZOS_SEED) -> torch.Tensor:
    """The seeded unit start vector (1, 1, n), orthogonal to the constant vector. One for every
    batch, so a batched call equals the per-batch loop."""
    gen = torch.Generator(device=like.device).manual_seed(seed)
    q = torch.rand(1, 1, n, generator=gen, device=like.device, dtype=like.dtype) - 0.5
    q = q - q.mean(-1, keepdim=True)
    return q / q.norm(dim=-1, keepdim=True)


def lanczos_tridiagonal(
    xn: torch.Tensor, start: torch.Tensor, steps: int, factored: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The Lanczos recurrence on normalised rows ``xn`` (b, n, d) from ``start`` (1, 1, n):
    the basis (b, steps + 1, n) (row 0 is the constant vector) and T's diagonal (b, steps) and
    off-diagonal (b, steps - 1).

    Only batched kernels, with no host sync and no random draw, so a CUDA graph can capture it
    whole. alpha_j = w . q_j is read off the re-orthogonalisation's
    coefficients, and one norm serves both beta_j and the next q.
    """
    b, n, _ = xn.shape
    apply = laplacian_operator(xn, factored)
    basis = torch.empty(b, steps + 1, n, dtype=xn.dtype, device=xn.device)
    basis[:, :1] = n**-0.5
    alpha = torch.empty(b, steps, dtype=xn.dtype, device=xn.device)
    beta = torch.empty(b, steps - 1, dtype=xn.dtype, device=xn.device)
    tiny = torch.finfo(xn.dtype).tiny
    q = start.expand(b, 1, n)
    for j in range(steps - 1):
        basis[:, j + 1 : j + 2] = q
        w, coefficients = _orthogonalise(apply(q), basis[:, : j + 2])
        alpha[:, j] = coefficients[:, 0, j + 1]  # w . q_j before w was orthogonalised
        # A breakdown (invariant subspace found) leaves w ~ 0: the tiny clamp keeps q finite,
        # and its zero beta decouples T, whose eigenvalues stay valid.
        norm = w.norm(dim=-1, keepdim=True)
        beta[:, j] = norm[:, 0, 0]
        q = w / norm.clamp_min(tiny)
    basis[:, steps : steps + 1] = q
    alpha[:, -1] = (apply(q) @ q.transpose(-1, -2))[:, 0, 0]  # the last step needs only alpha
    return basis, alpha, beta


def ritz_fiedler(
    basis: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The smallest Ritz pair of T (float64 eigh): the Fiedler vectors (b, n) and the two
    smallest Ritz values (b, 2), which approximate (lambda_2, lambda_3)."""
    tri = (
        torch.diag_embed(alpha.double())
        + torch.diag_embed(beta.double(), 1)
        + torch.diag_embed(beta.double(), -1)
    )
    theta, ritz = torch.linalg.eigh(tri)
    fiedler = (ritz[:, :, :1].transpose(-1, -2).to(basis.dtype) @ basis[:, 1:]).squeeze(-2)
    return fiedler, theta[:, :2].to(basis.dtype)


def lanczos_steps(n: int, steps: int = LANCZOS_STEPS) -> int:
    """The Krylov dimension for n rows: the constant vector takes one of the n dimensions."""
    return max(2, min(steps, n - 1))


def lanczos_fiedler(
    x: torch.Tensor, steps: int = LANCZOS_STEPS, seed: int = LANCZOS_SEED, factored: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched Lanczos for the Fiedler pair of every batch of rows ``x`` (b, n, d).

    The Krylov space is kept orthogonal to the constant vector (L's null vector), so the
    smallest Ritz pair approximates (lambda_2, Fiedler). Full re-orthogonalisation keeps float32
    honest: a dense positive similarity graph has a narrow spectrum, where plain Lanczos ghosts.
    Each step is a few batched kernels; on CUDA their launches, not their work, set the pace
    (``saln.selection.graphed`` replays them from a CUDA graph).
    """
    n = x.shape[1]
    start = start_vector(n, x, seed)
    recurrence = lanczos_tridiagonal(normalise_rows(x), start, lanczos_steps(n, steps), factored)
    return ritz_fiedler(*recurrence)


@SOLVERS.register("lanczos")
def solve_lanczos(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched factored Lanczos on CUDA; on CPU a dense one on groups of SYRK Laplacians
    (:func:`grouped_cpu_lanczos`). On both, every batch starts from the same seeded vector, so a
    batched call equals the per-batch loop."""
    return lanczos_fiedler(x) if x.is_cuda else grouped_cpu_lanczos(x)
