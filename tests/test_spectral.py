"""SALN maths against the paper-faithful oracle and against known answers."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import scipy.linalg
import torch

import saln
from saln.selection.spectral import priority_order, spectral_select_with_stats
from tests.conftest import clustered_features

SOLVERS = ["exact", "lanczos"]
SMALL_GAP = 1e-3  # below this relative gap the Fiedler vector is not unique


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    sa, sb = set(a.tolist()), set(b.tolist())
    return len(sa & sb) / len(sa | sb)


def assert_agrees_with_oracle(batches: np.ndarray, solver: str) -> None:
    positions, stats = spectral_select_with_stats(batches, 0.8, solver=solver)
    gaps = stats["gap"].numpy()
    scores = []
    for batch, pos, gap in zip(batches, positions, gaps):
        oracle = saln.reference_select(batch, 0.8)
        score = jaccard(pos, oracle)
        scores.append(score)
        if gap > SMALL_GAP and solver == "exact":
            assert set(pos.tolist()) == set(oracle.tolist()), f"gap {gap:.2e}"
        if score < 1.0:
            assert gap < 0.02, f"{solver} disagrees (J={score:.3f}) on a batch with gap {gap:.3f}"
    assert np.mean(scores) >= 0.99


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("n", [64, 200])
def test_matches_oracle_on_clustered_features(solver: str, n: int) -> None:
    assert_agrees_with_oracle(clustered_features(12, n, 256, seed=n), solver)


@pytest.mark.parametrize("solver", SOLVERS)
def test_matches_oracle_on_real_cifar_pixels(
    solver: str, cifar_pixels: tuple[np.ndarray, np.ndarray]
) -> None:
    pixels, _ = cifar_pixels
    rng = np.random.default_rng(0)
    batches = np.stack([pixels[rng.permutation(len(pixels))[:64]] for _ in range(15)])
    assert_agrees_with_oracle(batches, solver)


@pytest.mark.parametrize("solver", SOLVERS)
def test_fiedler_vector_is_the_second_eigenvector(solver: str) -> None:
    x = clustered_features(1, 80, 32, seed=3)[0].astype(np.float64)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = xn @ xn.T
    lap = np.diag(sim.sum(1)) - sim
    values = scipy.linalg.eigvalsh(lap)
    v = saln.fiedler_vector(x.astype(np.float32), solver=solver).astype(np.float64)
    v /= np.linalg.norm(v)
    assert abs(v.sum()) < 1e-3  # orthogonal to the constant null vector
    rayleigh = v @ lap @ v
    assert rayleigh == pytest.approx(values[1], rel=1e-3)
    assert np.linalg.norm(lap @ v - rayleigh * v) < 1e-2 * values[1]


@pytest.mark.parametrize("solver", SOLVERS)
def test_fiedler_sign_splits_two_clusters(solver: str) -> None:
    rng = np.random.default_rng(1)
    a = np.abs(rng.normal(size=(30, 16))) + np.r_[np.full(8, 4.0), np.zeros(8)]
    b = np.abs(rng.normal(size=(25, 16))) + np.r_[np.zeros(8), np.full(8, 4.0)]
    v = saln.fiedler_vector(np.vstack([a, b]).astype(np.float32), solver=solver)
    assert len(set(np.sign(v[:30]))) == 1 and len(set(np.sign(v[30:]))) == 1
    assert np.sign(v[0]) != np.sign(v[30])


@pytest.mark.parametrize("solver", SOLVERS)
def test_gap_matches_eigenvalues(solver: str) -> None:
    x = clustered_features(1, 60, 32, seed=5)[0]
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = xn.astype(np.float64) @ xn.T.astype(np.float64)
    w = scipy.linalg.eigvalsh(np.diag(sim.sum(1)) - sim)
    _, stats = spectral_select_with_stats(x, 0.5, solver=solver)
    assert float(stats["gap"][0]) == pytest.approx((w[2] - w[1]) / w[1], rel=1e-2, abs=1e-4)


@pytest.mark.parametrize("solver", SOLVERS)
def test_two_groups_of_identical_rows_give_the_analytic_fiedler_pair(solver: str) -> None:
    # Rows repeated within two groups whose cosine is c: S is block-constant, so the Krylov
    # space is exhausted after about 3 steps (a Lanczos breakdown), and the answer is known:
    # lambda_2 = c * n, with a Fiedler vector constant on each group, proportional to
    # (n_b on group a, -n_a on group b); lambda_3 = n_b + c * n_a, the degree of the smaller
    # group (any vector summing to zero within that group and zero elsewhere).
    n_a, n_b, c = 30, 20, 0.4
    a = np.eye(8, dtype=np.float32)[0]
    b = c * a + np.sqrt(1 - c**2) * np.eye(8, dtype=np.float32)[1]
    x = np.vstack([np.tile(a, (n_a, 1)), np.tile(b, (n_b, 1))]).astype(np.float32)
    v = saln.fiedler_vector(x, solver=solver)
    assert np.isfinite(v).all()
    v = v / v[0]
    np.testing.assert_allclose(v[:n_a], 1.0, atol=1e-3)
    np.testing.assert_allclose(v[n_a:], -n_a / n_b, atol=1e-3)
    positions, stats = spectral_select_with_stats(x, 0.8, solver=solver)
    assert set(positions.tolist()) <= set(range(n_a, n_a + n_b))  # the larger |v|
    lambda_2, lambda_3 = c * (n_a + n_b), n_b + c * n_a
    assert float(stats["gap"][0]) == pytest.approx(lambda_3 / lambda_2 - 1, rel=1e-3)


@pytest.mark.parametrize("solver", SOLVERS)
def test_batched_equals_loop_and_order_is_by_priority(solver: str) -> None:
    # 20 batches: the CPU Lanczos solves them in two lockstep groups (16 + 4).
    batches = clustered_features(20, 50, 24, seed=7)
    batched = saln.spectral_select(batches, 0.6, solver=solver)
    for batch, row in zip(batches, batched):
        np.testing.assert_array_equal(row, saln.spectral_select(batch, 0.6, solver=solver))
        magnitude = np.abs(saln.fiedler_vector(batch, solver=solver))
        assert np.all(np.diff(magnitude[row]) <= 0)


def test_containers_and_dtypes_follow_the_input() -> None:
    x = clustered_features(1, 20, 8)[0]
    out_np = saln.spectral_select(x)
    out_t = saln.spectral_select(torch.from_numpy(x))
    assert isinstance(out_np, np.ndarray) and out_np.dtype == np.int64
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.int64
    assert out_np.shape == (4,)
    np.testing.assert_array_equal(out_np, out_t.numpy())
    assert saln.spectral_select(x.astype(np.float16)).shape == (4,)
    assert saln.spectral_select((x * 100).astype(np.int32)).shape == (4,)


def test_ties_break_to_the_lower_position() -> None:
    scores = torch.tensor([0.5, 0.9, 0.5, 0.9, 0.1])
    assert priority_order(scores).tolist() == [1, 3, 0, 2, 4]


def test_keep_count_follows_the_paper_without_round_off() -> None:
    assert saln.keep_count(256, 0.8) == 51
    assert saln.keep_count(64, 0.8) == 12
    assert saln.keep_count(10, 0.8) == 2  # 10 * (1 - 0.8) is 1.9999999999999996 in floats
    assert saln.keep_count(7, 0.0) == 7


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5])
def test_filter_ratio_outside_range_is_rejected(ratio: float) -> None:
    with pytest.raises(ValueError, match=r"filter_ratio=.* outside \[0, 1\)"):
        saln.spectral_select(clustered_features(1, 10, 4)[0], ratio)


def test_keep_zero_is_an_error_not_keep_everything() -> None:
    with pytest.raises(ValueError, match="keeps 0 of a batch of 4 rows"):
        saln.spectral_select(clustered_features(1, 4, 4)[0], 0.8)
    with pytest.raises(ValueError, match="keeps 0"):
        saln.reference_select(clustered_features(1, 4, 4)[0], 0.8)


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4, 5)])
def test_wrong_rank_is_rejected(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"must be 2-D .* or 3-D"):
        saln.spectral_select(np.ones(shape, dtype=np.float32))


def test_nan_and_inf_rows_are_named() -> None:
    x = clustered_features(1, 10, 4)[0]
    x[3, 1] = np.nan
    x[7, 0] = np.inf
    with pytest.raises(ValueError, match=r"NaN or inf at rows 3, 7"):
        saln.spectral_select(x, 0.5)
    batched = clustered_features(2, 10, 4)
    batched[1, 2, 2] = np.nan
    with pytest.raises(ValueError, match=r"rows \(1, 2\)"):
        saln.spectral_select(batched, 0.5)


@pytest.mark.parametrize(
    "bad",
    [
        np.array([["a", "b"], ["c", "d"], ["e", "f"]]),
        np.ones((4, 3), dtype=bool),
        np.ones((4, 3), dtype=complex),
        torch.ones(4, 3, dtype=torch.bool),
        [[1.0, 2.0]],
    ],
)
def test_non_numeric_features_are_rejected(bad: object) -> None:
    with pytest.raises(TypeError, match="features must be"):
        saln.spectral_select(bad, 0.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("solver", SOLVERS)
def test_zero_rows_give_no_nan(solver: str) -> None:
    x = clustered_features(1, 20, 6)[0]
    x[[2, 9]] = 0
    v = saln.fiedler_vector(x, solver=solver)
    assert np.isfinite(v).all()
    assert len(set(saln.spectral_select(x, 0.5, solver=solver).tolist())) == 10


def test_tiny_batches_take_a_recorded_fallback() -> None:
    positions, stats = spectral_select_with_stats(np.ones((2, 3), dtype=np.float32), 0.5)
    assert positions.tolist() == [0] and stats["fallback"] == "n<3:first_positions"


def test_filter_ratio_zero_keeps_all() -> None:
    positions, stats = spectral_select_with_stats(clustered_features(1, 9, 3)[0], 0.0)
    assert sorted(positions.tolist()) == list(range(9)) and stats["fallback"] == "keep_all"


def test_unknown_solver_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown solver 'eig'; valid names: auto, exact, lanczos"):
        saln.spectral_select(clustered_features(1, 10, 4)[0], 0.5, solver="eig")


@pytest.mark.gpu
@pytest.mark.parametrize("solver", SOLVERS)
def test_cuda_selects_what_cpu_selects(solver: str) -> None:
    x = torch.from_numpy(clustered_features(8, 128, 64, seed=11))
    cpu, stats = spectral_select_with_stats(x, 0.8, solver="exact")
    gpu = saln.spectral_select(x.cuda(), 0.8, solver=solver)
    assert gpu.device.type == "cuda"
    for a, b, gap in zip(cpu, gpu.cpu(), stats["gap"]):
        if gap > SMALL_GAP:
            assert set(a.tolist()) == set(b.tolist())


def test_the_cuda_maths_agrees_with_the_cpu_path_when_run_on_cpu() -> None:
    """The torch Laplacian, batched float64 eigh and the torch Lanczos (factored and dense) are
    what CUDA runs; here they run on CPU against the LAPACK path and the oracle."""
    from saln.selection import lapack, solvers

    x = torch.from_numpy(clustered_features(6, 96, 64, seed=21))
    for batch, lap in zip(x.numpy(), solvers.torch_laplacian(x)):
        lower = lapack.laplacian_lower(batch)
        assert np.allclose(np.tril(lower), np.tril(lap.numpy()), atol=1e-4)
        assert not np.triu(lower, 1).any()  # LAPACK reads only the lower triangle
    _, val_cpu = solvers.solve_exact(x)
    vec_gpu, val_gpu = solvers.eigh_torch(x)
    assert torch.allclose(val_cpu, val_gpu, rtol=1e-3)
    vec_fac, val_fac = solvers.lanczos_fiedler(x, factored=True)
    vec_dense, val_dense = solvers.lanczos_fiedler(x, factored=False)
    for i, batch in enumerate(x.numpy()):
        oracle = set(saln.reference_select(batch, 0.8).tolist())
        for vec in (vec_gpu[i], vec_fac[i], vec_dense[i]):
            kept = set(torch.sort(vec.abs(), descending=True, stable=True).indices[:19].tolist())
            assert kept == oracle
    assert torch.allclose(val_fac, val_cpu, rtol=1e-3)
    assert torch.allclose(val_dense, val_cpu, rtol=1e-3)


def test_cuda_graph_option_leaves_cpu_solves_unchanged() -> None:
    x = clustered_features(4, 64, 32, seed=5)
    plain = saln.spectral_select(x, 0.8, solver="lanczos")
    assert np.array_equal(saln.spectral_select(x, 0.8, solver="lanczos", cuda_graph=True), plain)


@pytest.mark.gpu
def test_graphed_lanczos_replays_what_eager_lanczos_computes() -> None:
    """The first call runs eagerly, the second captures, later ones replay. Each call brings new
    data and must get the eager solve's eigenpairs (a stale static input or output would not)."""
    from saln.selection.graphed import GraphedLanczos
    from saln.selection.solvers import lanczos_fiedler

    graphed = GraphedLanczos()
    for seed in range(4):
        x = torch.from_numpy(clustered_features(8, 128, 64, seed=seed)).cuda()
        vectors, values = graphed(x)
        # Reuse freed memory: a tensor the graph reads but nobody keeps alive would be clobbered.
        clobber = [torch.full((1, 1, 128), 7.0, device="cuda") for _ in range(64)]
        del clobber
        eager_vectors, eager_values = lanczos_fiedler(x)
        assert torch.allclose(values, eager_values, rtol=1e-4)
        assert torch.allclose(vectors.abs(), eager_vectors.abs(), atol=1e-4)
    assert len(graphed._cache.graphs) == 1  # one shape, captured once
    x[0, 5, 0] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or inf at rows \(0, 5\)"):
        graphed(x)


@pytest.mark.gpu
def test_a_failed_capture_warns_and_solves_eagerly(monkeypatch: pytest.MonkeyPatch) -> None:
    """A host sync inside the recurrence makes the real capture fail; the solves go on eagerly."""
    from saln.selection import graphed, solvers

    def syncing(
        xn: torch.Tensor, start: torch.Tensor, steps: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        basis, alpha, beta = solvers.lanczos_tridiagonal(xn, start, steps)
        float(alpha.sum())  # a host sync: not allowed while a stream is being captured
        return basis, alpha, beta

    monkeypatch.setattr(graphed, "lanczos_tridiagonal", syncing)
    solve = graphed.GraphedLanczos()
    x = torch.from_numpy(clustered_features(8, 128, 64, seed=3)).cuda()
    solve(x)  # the first call of a shape is eager
    with pytest.warns(RuntimeWarning, match="features.cuda_graph: capturing a CUDA graph failed"):
        _, values = solve(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second attempt, no second warning
        again, _ = solve(x)
    eager_vectors, eager_values = solvers.lanczos_fiedler(x)
    assert torch.allclose(values, eager_values, rtol=1e-4) and not solve._cache.graphs
    assert torch.allclose(again.abs(), eager_vectors.abs(), atol=1e-4)


def two_way_graph(sizes: tuple[int, int], cross: float) -> np.ndarray:
    """Rows whose cosine similarity is exactly 1 within each group and ``cross`` between them."""
    first = np.tile([1.0, 0.0], (sizes[0], 1))
    second = np.tile([cross, np.sqrt(1 - cross**2)], (sizes[1], 1))
    return np.vstack([first, second]).astype(np.float32)


@pytest.mark.parametrize(
    ("sizes", "expected"),
    [
        ((31, 1), 31 / 32),  # one weakly linked sample: v = (n - 1, -1, ..., -1) / norm
        ((16, 16), 1 / 32),  # two equal groups: v = +-1 / sqrt(n), spread evenly
    ],
)
def test_the_fiedler_vectors_top_entry_mass_has_its_known_value(
    sizes: tuple[int, int], expected: float
) -> None:
    from saln.train.diagnostics import top_entry_mass

    x = two_way_graph(sizes, cross=0.1)
    oracle = torch.from_numpy(np.abs(saln.selection.reference_fiedler(x)))
    ours = saln.fiedler_vector(torch.from_numpy(x), solver="exact").abs()
    assert top_entry_mass(oracle).item() == pytest.approx(expected, abs=1e-4)
    assert top_entry_mass(ours).item() == pytest.approx(expected, abs=1e-4)
    batched = top_entry_mass(torch.stack([oracle, torch.full((32,), 0.5)]))
    assert batched.tolist() == pytest.approx([expected, 1 / 32], abs=1e-4)


def test_a_cpu_solve_leaves_the_callers_blas_threads_as_they_were() -> None:
    """The solve runs BLAS single-threaded, and only inside: it once limited the whole process
    for good, behind its caller's back."""
    from threadpoolctl import ThreadpoolController

    from saln.selection.lapack import single_threaded_blas

    controller = ThreadpoolController()
    blas = controller.select(user_api="blas")
    if not blas.lib_controllers:
        pytest.skip("no BLAS library with a thread pool is loaded")

    def threads() -> list[int]:
        return [
            lib.num_threads
            for lib in ThreadpoolController().select(user_api="blas").lib_controllers
        ]

    with controller.limit(limits=2, user_api="blas"):
        before = threads()
        with single_threaded_blas():
            assert threads() == [1] * len(before)  # the solve's own setting
        x = torch.randn(2, 64, 8)
        for solver in ("exact", "lanczos"):
            saln.spectral_select(x, 0.5, solver=solver)
        assert threads() == before


def test_the_graph_cache_evicts_the_oldest_and_falls_back_once_a_capture_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The one capture helper's bookkeeping, on CPU: the capture itself is replaced."""
    from saln import graphs

    def fake_capture(work: Any) -> tuple[str, Any]:
        out = work()
        if out == "boom":
            raise RuntimeError("operation not permitted when stream is capturing")
        return "graph", out

    monkeypatch.setattr(graphs, "capture", fake_capture)
    cache: graphs.GraphCache[str] = graphs.GraphCache("features.cuda_graph", "solves", 2, False)
    for key in ("a", "b"):
        assert cache.capture(key, (), lambda k=key: k) is not None
    assert cache.get("a") is not None  # "a" is now the most recently used
    cache.capture("c", (), lambda: "c")
    assert list(cache.graphs) == ["a", "c"]
    with pytest.warns(RuntimeWarning, match=r"features.cuda_graph: capturing a CUDA graph failed"):
        assert cache.capture("d", (), lambda: "boom") is None
    assert cache.is_eager("d") and not cache.is_eager("a") and not cache.eager_only
    every: graphs.GraphCache[str] = graphs.GraphCache("train.cuda_graphs", "steps")
    with pytest.warns(RuntimeWarning):
        every.capture("x", (), lambda: "boom")
    assert every.eager_only and every.is_eager("y")  # a failed step fails for any shape
