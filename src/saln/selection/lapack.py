"""The CPU path of the Fiedler solvers: BLAS/LAPACK through SciPy, one batch at a time.

On one core a 256 x 256 problem is small enough that per-call overhead matters as much as flops,
so every step here is one BLAS/LAPACK call on preallocated arrays:

- the Gram ``x x^T`` is a SYRK on the raw rows (half a GEMM's flops), written as the lower
  triangle of a Fortran-ordered matrix that LAPACK reads without copying; rows are normalised
  afterwards through the norms on its diagonal (no pass over x);
- the exact solve is LAPACK ``ssyevr`` for eigenpairs 2 and 3 only, called directly: the same
  routine ``scipy.linalg.eigh(subset_by_index=[1, 2], driver="evr")`` runs, minus its checks
  and copies;
- Lanczos multiplies by the stored triangle with ``ssymv``, so L is never symmetrised.
"""

from __future__ import annotations

import threading

import numpy as np
import scipy.linalg
from scipy.linalg.blas import ssymv, ssyrk
from scipy.linalg.lapack import ssyevr

_blas_limited = False
_blas_lock = threading.Lock()


def limit_blas_threads_once() -> None:
    """Run NumPy/SciPy BLAS single-threaded, once per process.

    Small dense problems lose from threading, and with two cores NumPy's and SciPy's OpenBLAS
    pools starve each other (a 0.6 ms call measured 108 ms). Limiting per call costs more than
    the solve itself, so the limit is set once for the process.
    """
    global _blas_limited
    with _blas_lock:
        if not _blas_limited:
            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=1, user_api="blas")
            _blas_limited = True


class NonFiniteRows(ValueError):
    """A row norm came out non-finite: the caller names the offending rows."""


def laplacian_lower(rows: np.ndarray) -> np.ndarray:
    """``D - S`` of one batch's cosine-similarity graph, float32 (n, n), Fortran order, lower
    triangle only (the strict upper triangle holds zeros and is never read).

    A zero row gets zero similarity to everything. Raises :class:`NonFiniteRows` when a row
    holds NaN/inf (exactly then is its squared norm, the Gram's diagonal, non-finite).
    """
    lap: np.ndarray = ssyrk(1.0, rows.T, trans=1, lower=1)  # rows.T is a no-copy F-order view
    squared_norms = lap.diagonal().copy()
    if not np.isfinite(squared_norms).all():
        raise NonFiniteRows
    inv = np.zeros_like(squared_norms)
    np.sqrt(squared_norms, out=inv, where=squared_norms > 0)
    np.divide(1.0, inv, out=inv, where=squared_norms > 0)
    lap *= inv[:, None]
    lap *= inv[None, :]
    # Row sums of the symmetric S from its lower triangle: row part + column part - diagonal.
    degree = lap.sum(axis=0) + lap.sum(axis=1) - lap.diagonal()
    np.negative(lap, out=lap)
    lap.flat[:: lap.shape[0] + 1] += degree
    return lap


def exact_fiedler(lap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fiedler vector (n,) and (lambda_2, lambda_3) of a :func:`laplacian_lower` matrix, exact
    (LAPACK ``ssyevr``); ``lap`` is overwritten."""
    values, vectors, _, _, info = ssyevr(
        lap, compute_v=1, range="I", il=2, iu=3, lower=1, overwrite_a=1
    )
    if info != 0:
        raise np.linalg.LinAlgError(f"LAPACK ssyevr failed (info={info})")
    return vectors[:, 0], values[:2]


def _orthogonalise(w: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Remove span(basis rows) from w, twice ("twice is enough")."""
    for _ in range(2):
        w -= (basis @ w) @ basis
    return w


def lanczos_fiedler_dense(
    lap: np.ndarray, steps: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Fiedler vector and (lambda_2, lambda_3) of a :func:`laplacian_lower` matrix by Lanczos.

    The Krylov space is kept orthogonal to the constant vector (L's null vector) by full
    re-orthogonalisation against a basis that starts with it, so the smallest Ritz pair
    approximates (lambda_2, Fiedler).
    """
    n = lap.shape[0]
    steps = max(2, min(steps, n - 1))
    basis = np.empty((steps + 1, n), dtype=np.float32)
    basis[0] = n**-0.5
    alpha, beta = np.zeros(steps), np.zeros(steps - 1)
    start = rng.random((n,), dtype=np.float32)
    start -= 0.5
    q = _orthogonalise(start, basis[:1])
    for j in range(steps):
        # A breakdown (invariant subspace found) leaves q ~ 0: the tiny floor keeps it finite
        # and its zero beta decouples T, whose eigenvalues stay valid.
        q /= max(float(np.linalg.norm(q)), float(np.finfo(np.float32).tiny))
        basis[j + 1] = q
        w = ssymv(1.0, lap, q, lower=1)
        alpha[j] = w @ q
        if j + 1 < steps:
            w = _orthogonalise(w, basis[: j + 2])
            beta[j] = np.linalg.norm(w)
            q = w
    theta, ritz = scipy.linalg.eigh_tridiagonal(alpha, beta, select="i", select_range=(0, 1))
    return (ritz[:, 0] @ basis[1:]).astype(np.float32), theta.astype(np.float32)
