"""Repaired spectral selection, spectral strata and class stratification: known answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from saln import config as cfg
from saln.sampling import SelectiveBatchSampler
from saln.selection import SELECTORS, BatchView, reference_select
from saln.selection.laplacians import (
    graph_weights,
    normalized,
    regularized,
    similarity,
    spectral_embedding,
)
from saln.selection.repaired import (
    GraphOptions,
    StrataOptions,
    class_stratified_select,
    repaired_select,
    spectral_strata_select,
)
from saln.selection.strata import allocate, kmeans, sample_within, stratum_sizes
from saln.train import fit
from saln.train.diagnostics import top_entry_mass
from tests.conftest import clustered_features
from tests.test_train import tiny

PAPER = GraphOptions(centre=False, graph="dense", laplacian="combinatorial")


def two_clusters_and_outliers(seed: int = 0) -> torch.Tensor:
    """30 rows round one direction, 30 round another, 4 far-off rows: (1, 64, 16)."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(30, 16, generator=gen) * 0.1 + torch.tensor([1.0] * 8 + [0.0] * 8)
    b = torch.randn(30, 16, generator=gen) * 0.1 + torch.tensor([0.0] * 8 + [1.0] * 8)
    far = torch.randn(4, 16, generator=gen) * 3
    return torch.cat([a, b, far]).unsqueeze(0)


def test_with_every_repair_off_it_is_the_papers_algorithm() -> None:
    """Non-negative features, dense graph, D - S: the paper's Algorithm 1 (numpy oracle)."""
    x = clustered_features(4, 40, 16, seed=1)
    positions, stats = repaired_select(torch.from_numpy(x), 8, PAPER)
    for batch in range(4):
        assert positions[batch].tolist() == reference_select(x[batch], 0.8).tolist()
    assert stats["fallback"] is None


def test_the_knn_graph_is_symmetric_and_keeps_each_rows_neighbours() -> None:
    x = torch.from_numpy(clustered_features(1, 30, 8, seed=2)).double()
    sim = similarity(x, centre=True)[0].numpy()
    weights = graph_weights(torch.from_numpy(sim)[None], "knn", 4)[0].numpy()
    np.fill_diagonal(sim, -np.inf)
    listed = np.zeros_like(sim, dtype=bool)  # the brute-force construction
    for row in range(30):
        listed[row, np.argsort(-sim[row])[:4]] = True
    expected = np.where(listed | listed.T, np.maximum(sim, 0), 0)
    np.fill_diagonal(expected, 0)
    assert np.allclose(weights, expected) and np.allclose(weights, weights.T)


def test_the_normalised_laplacians_match_their_definitions() -> None:
    x = torch.from_numpy(clustered_features(1, 20, 8, seed=3)).double()
    w = graph_weights(similarity(x, centre=False), "dense", 1)
    d = w[0].sum(-1).numpy()
    lap, scale = normalized(w)
    expected = np.eye(20) - w[0].numpy() / np.sqrt(np.outer(d, d))
    assert np.allclose(lap[0].numpy(), expected) and np.allclose(scale[0], 1 / np.sqrt(d))
    values = np.linalg.eigvalsh(lap[0].numpy())
    assert values[0] == pytest.approx(0, abs=1e-9) and values[-1] <= 2 + 1e-9
    lap_tau, _ = regularized(w)
    dt = d + d.mean()
    assert np.allclose(lap_tau[0].numpy(), np.eye(20) - w[0].numpy() / np.sqrt(np.outer(dt, dt)))


def test_the_repaired_fiedler_vector_cuts_the_clusters_instead_of_isolating_an_outlier() -> None:
    x = two_clusters_and_outliers()
    vectors, _ = spectral_embedding(x, 1, centre=True, graph="knn", k=10, laplacian="regularized")
    signs = torch.sign(vectors[0, :60, 0])
    assert abs(int(signs[:30].sum())) == 30 and abs(int(signs[30:].sum())) == 30
    assert int(signs[:30].sum()) == -int(signs[30:].sum())  # the two clusters, opposite sides
    _, paper = repaired_select(x, 12, PAPER)
    _, repaired = repaired_select(x, 12)
    assert float(top_entry_mass(paper["abs_fiedler"])) > 0.5  # the paper's: one row
    assert float(top_entry_mass(repaired["abs_fiedler"])) < 0.1


def test_allocation_is_proportional_with_one_per_stratum_where_keep_allows() -> None:
    sizes = torch.tensor([[5, 3, 0, 2], [10, 0, 0, 0], [1, 1, 1, 1], [5, 3, 0, 2]])
    assert allocate(sizes[:3], 4).tolist() == [[2, 1, 0, 1], [4, 0, 0, 0], [1, 1, 1, 1]]
    assert allocate(sizes[3:], 2).tolist() == [[1, 1, 0, 0]]  # fewer rows than strata
    gen = torch.Generator().manual_seed(0)
    many = torch.randint(0, 12, (500, 7), generator=gen)
    many[:, 0] += 1  # no batch is empty
    for keep in (1, 5, 13):
        counts = allocate(many, keep)
        fits = counts.sum(-1) == keep
        assert bool(fits.all()) and bool((counts <= many).all())
        quota = keep * many / many.sum(-1, keepdim=True)
        covered = ((many > 0).sum(-1) <= keep).unsqueeze(-1)
        assert bool(((counts - quota).abs() < 1 + covered.long()).all())
        assert bool((~covered | (counts >= (many > 0).long())).all())


def test_equal_remainders_go_to_every_stratum_equally_often() -> None:
    # 10 strata of 6 and keep 12: one each, and the 2 left over tie between all ten
    sizes = torch.full((4000, 10), 6)
    counts = allocate(sizes, 12, torch.Generator().manual_seed(0))
    assert bool((counts.sum(-1) == 12).all()) and set(counts.unique().tolist()) == {1, 2}
    assert torch.allclose(counts.double().mean(0), torch.full((10,), 1.2, dtype=torch.double),
                          atol=0.03)  # fmt: skip


def test_rows_are_drawn_uniformly_within_each_stratum() -> None:
    strata = torch.tensor([[0, 0, 0, 0, 1, 1, 2, 2, 2, 2]])
    counts = torch.tensor([[2, 1, 1]])
    gen = torch.Generator().manual_seed(1)
    seen = torch.zeros(10)
    for _ in range(4000):
        positions = sample_within(strata, counts, gen)[0]
        assert stratum_sizes(strata[:, positions], 3).tolist() == counts.tolist()
        seen[positions] += 1
    expected = torch.tensor([0.5] * 4 + [0.5] * 2 + [0.25] * 4) * 4000
    assert torch.allclose(seen, expected, rtol=0.08)


def test_kmeans_recovers_well_separated_blobs() -> None:
    gen = torch.Generator().manual_seed(4)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    truth = torch.arange(3).repeat_interleave(20)
    points = (centres[truth] + torch.randn(60, 2, generator=gen)).unsqueeze(0)
    ids = kmeans(points, 3, torch.Generator().manual_seed(0))[0]
    # the same partition up to the clusters' names: one cluster per blob, three clusters (a
    # set of (blob, cluster) pairs of size 3 also held with every point in one cluster)
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(truth.numpy(), ids.numpy()) == 1.0
    assert len(set(ids.tolist())) == 3


def test_spectral_strata_keeps_each_cluster_in_proportion() -> None:
    gen = torch.Generator().manual_seed(2)
    two = two_clusters_and_outliers()[:, :60]  # 30 and 30: quantiles of the Fiedler vector
    positions, stats = spectral_strata_select(two, 10, strata=StrataOptions(2, 1), generator=gen)
    assert sorted(stats["strata_sizes"][0].tolist()) == [30, 30]
    assert int((positions[0] < 30).sum()) == 5
    directions = torch.eye(3).repeat_interleave(20, dim=0)  # 20 rows round each of 3 directions
    three = (directions + torch.randn(60, 3, generator=gen) * 0.05).unsqueeze(0)
    options = GraphOptions(k=5)
    positions, stats = spectral_strata_select(three, 12, options, StrataOptions(3, 2), gen)
    assert stats["strata_sizes"][0].tolist() == [20, 20, 20]  # k-means found the 3 clusters
    assert torch.bincount(positions[0] // 20).tolist() == [4, 4, 4]


def test_class_stratified_keeps_each_class_in_proportion() -> None:
    labels = torch.tensor([[3] * 20 + [7] * 10 + [1] * 10, [0] * 38 + [1, 2]])
    positions = class_stratified_select(labels, 8, torch.Generator().manual_seed(0))
    kept = labels.gather(1, positions)
    assert sorted(kept[0].tolist()) == [1, 1, 3, 3, 3, 3, 7, 7]
    assert sorted(kept[1].tolist()) == [0] * 6 + [1, 2]  # rare classes still get a row


def test_a_batch_smaller_than_k_takes_the_documented_fallback() -> None:
    view = BatchView(
        indices=torch.arange(8),
        labels=torch.zeros(8, dtype=torch.long),
        features=torch.from_numpy(clustered_features(1, 8, 6)[0]),
    )
    selection = SELECTORS.build("spectral").select(view, 3)
    assert selection.stats["fallback"] == "k>=n:k=7" and len(selection.positions) == 3
    strata = SELECTORS.build("spectral_strata").select(view, 3, generator=torch.Generator())
    assert strata.stats["fallback"] == "k>=n:k=7;small:dims=6,strata=8"


@pytest.mark.parametrize(
    ("selector", "match"),
    [
        (SELECTORS.build("spectral", options=GraphOptions(k=64)), r"k=64 neighbours .* has 64"),
        (
            SELECTORS.build("spectral_strata", strata=StrataOptions(10, 63)),
            r"dims=63 eigenvectors and strata=10 need batches of at least 65 rows",
        ),
    ],
)
def test_options_too_large_for_the_batch_are_refused_by_the_sampler(
    selector: object, match: str
) -> None:
    features = clustered_features(1, 640, 8)[0]
    with pytest.raises(ValueError, match=match):
        SelectiveBatchSampler(640, 64, selector, features)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"selection.graph": "full"}, r"selection\.graph='full' is not one of dense, knn"),
        ({"selection.k": 0}, r"selection\.k must be positive"),
        ({"selection.strata": 1}, r"selection\.strata=1: stratifying needs >= 2"),
    ],
)
def test_bad_options_are_refused_naming_the_key(overrides: dict[str, object], match: str) -> None:
    with pytest.raises(cfg.ConfigError, match=match):
        cfg.load(None, overrides)


def test_an_unknown_laplacian_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown laplacian 'sym'; valid names: combinatorial"):
        GraphOptions(laplacian="sym")


def test_features_with_nan_are_refused() -> None:
    x = torch.from_numpy(clustered_features(1, 20, 4))
    x[0, 3, 1] = torch.nan
    with pytest.raises(ValueError, match="features contain NaN"):
        repaired_select(x, 5)


def test_class_stratified_without_labels_says_what_to_pass() -> None:
    with pytest.raises(ValueError, match="needs the dataset's class labels: pass labels="):
        SelectiveBatchSampler(100, 10, "class_stratified")


@pytest.mark.parametrize("method", ["spectral", "spectral_strata", "class_stratified"])
def test_each_selector_trains_a_run_keeping_its_share(tmp_path: Path, method: str) -> None:
    overrides = {"selection.k": 5, "selection.strata": 4, "selection.dims": 3}
    summary = fit(tiny(tmp_path, method, **overrides), tmp_path / "run")
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["examples"] for r in rows] == [20 * 10 + 2] * 2  # 10 of each 50, 2 of the last 5
    assert summary.method == method and summary.filter_ratio == 0.8


@pytest.mark.gpu
def test_cuda_draws_the_rows_cpu_draws() -> None:
    x = two_clusters_and_outliers()
    labels = torch.arange(64).remainder(5).unsqueeze(0)
    for select in (
        lambda f, g: spectral_strata_select(f, 12, generator=g)[0],
        lambda f, g: repaired_select(f, 12)[0],
    ):
        on_cpu = select(x, torch.Generator().manual_seed(0))
        on_cuda = select(x.cuda(), torch.Generator().manual_seed(0))
        assert torch.equal(on_cpu, on_cuda.cpu())
    gen = torch.Generator().manual_seed(0)
    on_cuda = class_stratified_select(labels.cuda(), 12, gen)
    assert torch.equal(class_stratified_select(labels, 12, torch.Generator().manual_seed(0)),
                       on_cuda.cpu())  # fmt: skip
