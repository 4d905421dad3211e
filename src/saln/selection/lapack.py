"""The CPU path of the Fiedler solvers: BLAS/LAPACK through SciPy, one batch at a time.

On one core a 256 x 256 problem is small enough that per-call overhead matters as much as flops,
so every step here is one BLAS/LAPACK call on preallocated arrays:

- the Gram ``x x^T`` is a SYRK on the raw rows (half a GEMM's flops), written as the lower
  triangle of a Fortran-ordered matrix that LAPACK reads without copying; rows are normalised
  afterwards through the norms on its diagonal (no pass over x);
- the exact solve is LAPACK ``ssyevr`` for eigenpairs 2 and 3 only, called directly: the same
  routine ``scipy.linalg.eigh(subset_by_index=[1, 2], driver="evr")`` runs, minus its checks
  and copies;
- Lanczos runs a group of batches in lockstep on mirrored (full) Laplacians, so that each NumPy
  call's overhead is shared by the group.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import numpy as np
from scipy.linalg.blas import ssyrk
from scipy.linalg.lapack import ssyevr
from threadpoolctl import ThreadpoolController

from saln.errors import InvalidInput

_controller: ThreadpoolController | None = None
_controller_lock = threading.Lock()


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run NumPy/SciPy BLAS single-threaded inside the block, and as before after it.

    Small dense problems lose from threading, and with two cores NumPy's and SciPy's OpenBLAS
    pools starve each other (docs/benchmarks.md). The caller's own setting is theirs: it is
    restored on leaving. The controller (which finds the loaded BLAS libraries, the costly
    part) is made once, so a scoped limit costs microseconds.
    """
    global _controller
    with _controller_lock:
        if _controller is None:
            _controller = ThreadpoolController()
        controller = _controller
    with controller.limit(limits=1, user_api="blas"):
        yield


class NonFiniteRows(InvalidInput):
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


def symmetric_laplacian(rows: np.ndarray, out: np.ndarray) -> None:
    """Write the full symmetric ``D - S`` of one batch into ``out`` (n, n), C order: the
    :func:`laplacian_lower` triangle mirrored, so batched ``matmul`` can multiply by it."""
    lower = laplacian_lower(rows)
    np.add(lower, lower.T, out=out)  # the diagonal is counted twice here ...
    np.einsum("ii->i", out)[...] = lower.diagonal()  # ... and set right here


def _column_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dot products of matching column vectors (g, n, 1) x (g, n, 1) -> (g,)."""
    return np.einsum("gik,gik->g", a, b)


def lanczos_fiedler_dense(
    laps: np.ndarray, steps: int, start: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Fiedler vectors (g, n) and (lambda_2, lambda_3) (g, 2) of a group of full symmetric
    Laplacians (g, n, n) (:func:`symmetric_laplacian`), by ``steps`` (2 <= steps < n) Lanczos
    steps from ``start`` (n,).

    The group moves in lockstep so that each NumPy call serves g problems: on one core a
    256-row step is a few microseconds of BLAS and about as much call overhead. Every problem
    starts from the same vector and runs the same BLAS calls on its own slice, so a problem's
    result does not depend on its group. The Krylov space is kept orthogonal to the constant
    vector (L's null vector) by full re-orthogonalisation against a basis that starts with it,
    so the smallest Ritz pair approximates (lambda_2, Fiedler).
    """
    g, n, _ = laps.shape
    basis = np.empty((g, steps + 1, n), dtype=np.float32)  # row 0: the constant vector
    basis[:, 0] = n**-0.5
    alpha, beta = np.empty((g, steps)), np.empty((g, steps - 1))
    w = np.repeat(start.astype(np.float32)[None, :, None], g, axis=0)  # column vectors (g, n, 1)
    w -= w.mean(axis=1, keepdims=True)
    for j in range(steps):
        # A breakdown (invariant subspace found) leaves w ~ 0: the tiny floor keeps q finite
        # and its zero beta decouples T, whose eigenvalues stay valid.
        norm = np.sqrt(_column_dot(w, w))
        if j:
            beta[:, j - 1] = norm
        q = basis[:, j + 1, :, None]
        np.divide(w, np.maximum(norm, np.finfo(np.float32).tiny)[:, None, None], out=q)
        w = laps @ q
        if j + 1 == steps:
            alpha[:, j] = _column_dot(w, q)  # the last step needs only alpha
            break
        # Remove the span of the basis so far, twice ("twice is enough"); alpha_j = w . q_j is
        # the first pass's last coefficient.
        span = basis[:, : j + 2]
        coefficients = span @ w
        alpha[:, j] = coefficients[:, j + 1, 0]
        w -= span.transpose(0, 2, 1) @ coefficients
        w -= span.transpose(0, 2, 1) @ (span @ w)
    return _smallest_ritz_pair(basis, alpha, beta)


def _smallest_ritz_pair(
    basis: np.ndarray, alpha: np.ndarray, beta: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The smallest Ritz pair of each tridiagonal T (float64): Fiedler vectors (g, n) and the
    two smallest Ritz values (g, 2), which approximate (lambda_2, lambda_3)."""
    tri = np.zeros((*alpha.shape, alpha.shape[1]))
    rows = np.arange(alpha.shape[1])
    tri[:, rows, rows] = alpha
    tri[:, rows[1:], rows[:-1]] = beta  # eigh reads the lower triangle
    theta, ritz = np.linalg.eigh(tri)
    fiedler = np.matmul(ritz[:, None, :, 0].astype(np.float32), basis[:, 1:])[:, 0]
    return fiedler, theta[:, :2].astype(np.float32)
