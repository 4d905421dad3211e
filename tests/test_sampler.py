"""SelectiveBatchSampler: only kept indices reach the loader, reproducibly, once per batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import saln
from tests.conftest import clustered_features

N, BATCH = 200, 40


@pytest.fixture
def table() -> np.ndarray:
    return clustered_features(1, N, 12, seed=2)[0]


class RecordingDataset(Dataset[int]):
    def __init__(self, n: int) -> None:
        self.n = n
        self.seen: list[int] = []

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        self.seen.append(index)
        return index


def test_yields_exactly_the_spectral_selection_of_each_super_batch(table: np.ndarray) -> None:
    sampler = saln.SelectiveBatchSampler(N, BATCH, "saln", table, 0.8, seed=4)
    batches = list(sampler)
    assert len(batches) == len(sampler) == N // BATCH
    gen = torch.Generator().manual_seed(saln.sampling.epoch_seed(4, 0))
    order = torch.randperm(N, generator=gen).numpy()
    for i, kept in enumerate(batches):
        super_batch = order[i * BATCH : (i + 1) * BATCH]
        expected = super_batch[saln.spectral_select(table[super_batch], 0.8)]
        assert kept == expected.tolist()


def test_dataloader_never_loads_a_dropped_sample(table: np.ndarray) -> None:
    data = RecordingDataset(N)
    sampler = saln.SelectiveBatchSampler(N, BATCH, "saln", table, 0.8, seed=0)
    loaded = [b.tolist() for b in DataLoader(data, batch_sampler=sampler)]
    assert sorted(data.seen) == sorted(i for b in loaded for i in b)
    assert len(data.seen) == (N // BATCH) * saln.keep_count(BATCH, 0.8)


def test_epochs_reshuffle_and_seeds_reproduce(table: np.ndarray) -> None:
    a = saln.SelectiveBatchSampler(N, BATCH, "uniform", None, 0.5, seed=1)
    b = saln.SelectiveBatchSampler(N, BATCH, "uniform", None, 0.5, seed=1)
    first = list(a)
    assert first == list(b)
    a.set_epoch(1)
    assert list(a) != first
    c = saln.SelectiveBatchSampler(N, BATCH, "uniform", None, 0.5, seed=2)
    assert list(c) != first


def test_subset_indices_and_short_last_batch() -> None:
    pool = np.arange(1000, 1105)
    sampler = saln.SelectiveBatchSampler(pool, 20, "uniform", None, 0.8)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 6
    # The 5-row tail keeps its share (1 row) raised to two: one row is no batch for BatchNorm.
    assert [len(b) for b in batches] == [4] * 5 + [2]
    assert all(1000 <= i < 1105 for b in batches for i in b)
    assert len(list(saln.SelectiveBatchSampler(pool, 20, "uniform", drop_last=True))) == 5


def test_a_one_row_tail_is_left_out_and_reshuffled() -> None:
    sampler = saln.SelectiveBatchSampler(41, 20, None, filter_ratio=0.0)
    epochs = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) == 2 and all(len(b) == 20 for b in batches)
        (left_out,) = set(range(41)) - {i for b in batches for i in b}
        epochs.append(left_out)
    assert epochs[0] != epochs[1]  # not the same sample every epoch (seed 0: 2 draws differ)
    assert len(list(saln.SelectiveBatchSampler(1, 1, None, filter_ratio=0.0))) == 1


@pytest.mark.parametrize(("rows", "expected"), [(50, 10), (49, 9), (10, 2), (8, 2), (2, 2), (1, 1)])
def test_tail_keep(rows: int, expected: int) -> None:
    assert saln.selection.tail_keep(rows, 10, 50) == expected


def test_no_selector_keeps_everything() -> None:
    batches = list(saln.SelectiveBatchSampler(50, 10, None, filter_ratio=0.0))
    assert sorted(i for b in batches for i in b) == list(range(50))


def test_fixed_keep_overrides_the_ratio(table: np.ndarray) -> None:
    sampler = saln.SelectiveBatchSampler(N, BATCH, "saln", table, 0.8, keep=10)
    assert all(len(b) == 10 for b in sampler)


def test_ranks_get_disjoint_super_batches_covering_one_process(table: np.ndarray) -> None:
    single = saln.SelectiveBatchSampler(N, BATCH, "saln", table, 0.8, seed=3, drop_last=True)
    ranks = [
        saln.SelectiveBatchSampler(N, BATCH, "saln", table, 0.8, seed=3, rank=r, world_size=2)
        for r in range(2)
    ]
    per_rank = [list(s) for s in ranks]
    assert all(len(p) == len(s) == 2 for p, s in zip(per_rank, ranks))
    merged = [b for pair in zip(*per_rank) for b in pair]
    assert merged == list(single)[:4]


def test_model_aware_selector_is_refused() -> None:
    with pytest.raises(ValueError, match="model-aware selectors run in the training step"):
        saln.SelectiveBatchSampler(N, BATCH, "loss")


def test_missing_features_are_explained() -> None:
    with pytest.raises(ValueError, match="needs reference features"):
        saln.SelectiveBatchSampler(N, BATCH, "saln", None)


@pytest.mark.parametrize("batch_size", [0, -3, 2.5])
def test_bad_batch_size(batch_size: object) -> None:
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        saln.SelectiveBatchSampler(N, batch_size, "uniform")  # type: ignore[arg-type]


def test_batch_too_small_for_the_ratio(table: np.ndarray) -> None:
    with pytest.raises(ValueError, match="keeps 0 of a batch of 4 rows"):
        saln.SelectiveBatchSampler(N, 4, "saln", table, 0.8)


@pytest.mark.gpu
def test_cuda_sampler_holds_features_on_the_gpu_and_selects_as_on_cpu(table: np.ndarray) -> None:
    cpu = saln.SelectiveBatchSampler(N, BATCH, "saln", table, 0.8, seed=5)
    gpu = saln.SelectiveBatchSampler(N, BATCH, "saln", table, 0.8, seed=5, device="cuda")
    assert gpu.features is not None and gpu.features.get(np.arange(3)).is_cuda
    for a, b in zip(cpu, gpu):
        assert len(set(a) & set(b)) >= len(a) - 1  # CUDA solves in another precision; gaps decide


@pytest.mark.gpu
def test_graphed_selection_plans_the_epochs_eager_selection_plans(table: np.ndarray) -> None:
    """Three epochs: the first solves eagerly, the second captures, the third replays; each
    epoch reshuffles, so every replay brings new rows into the graph's static input."""
    from saln.selection.spectral import SpectralSelector

    plans: dict[bool, list[list[list[int]]]] = {}
    for graphed in (False, True):
        sampler = saln.SelectiveBatchSampler(
            N, BATCH, SpectralSelector(cuda_graph=graphed), table, 0.8, seed=5, device="cuda"
        )
        plans[graphed] = []
        for epoch in range(3):
            sampler.set_epoch(epoch)
            plans[graphed].append([sorted(b) for b in sampler])
    for graphed_epoch, eager_epoch in zip(plans[True], plans[False], strict=True):
        for a, b in zip(graphed_epoch, eager_epoch, strict=True):
            assert len(set(a) & set(b)) >= len(a) - 1  # a near-tie may round the other way


def test_features_shorter_than_the_indices_are_named(table: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"features have 50 rows but .* indices up to 99"):
        saln.SelectiveBatchSampler(100, 10, "saln", table[:50])
    with pytest.raises(ValueError, match=r"up to 60"):
        saln.SelectiveBatchSampler(np.array([3, 60]), 10, "saln", torch.as_tensor(table[:50]))
    with pytest.raises(ValueError, match=r"labels have 5 rows .* up to 99"):
        saln.SelectiveBatchSampler(100, 10, "uniform", None, 0.5, labels=np.zeros(5))
    with pytest.raises(ValueError, match=r"seed must be a non-negative int, got -1"):
        saln.SelectiveBatchSampler(100, 10, "uniform", None, 0.5, seed=-1)


@pytest.mark.parametrize("size", [1, 2, 5, 7])
@pytest.mark.parametrize("drop_short", [False, True])
def test_batch_count_is_the_length_of_the_cut(size: int, drop_short: bool) -> None:
    for n in range(0, 23):
        cut = saln.sampling.cut_batches(np.arange(n), size, drop_short)
        assert saln.sampling.batch_count(n, size, drop_short) == len(cut), (n, size)
        assert all(len(b) >= min(2, size) for b in cut)
        assert [i for b in cut for i in b] == list(range(sum(map(len, cut))))


def test_the_spectral_record_has_each_super_batchs_top_entry_mass(table: np.ndarray) -> None:
    from saln.train.diagnostics import spectral_record

    plan = saln.SelectiveBatchSampler(N, BATCH, "saln", table, 0.8, seed=3).plan_epoch()
    record = spectral_record(plan)
    assert record is not None
    for super_batch, mass in zip(plan.super_batches, record["top_entry_mass"], strict=True):
        squared = saln.selection.reference_fiedler(table[super_batch]) ** 2
        assert mass == pytest.approx(squared.max() / squared.sum(), abs=1e-3)


def test_negative_or_non_integer_indices_are_refused() -> None:
    with pytest.raises(ValueError, match=r"global dataset indices, >= 0; got -3"):
        saln.SelectiveBatchSampler([0, 1, -3, 4], 2, "uniform", filter_ratio=0.5)
    with pytest.raises(ValueError, match="flat sequence of ints"):
        saln.SelectiveBatchSampler([0.5, 1.5], 2, "uniform", filter_ratio=0.5)


def test_features_that_require_grad_select_as_their_values_do(table: np.ndarray) -> None:
    """A feature tensor still attached to a graph (an encoder's output) is only read."""
    plain = torch.from_numpy(table)
    attached = plain.clone().requires_grad_(True)
    rows = [
        list(saln.SelectiveBatchSampler(N, BATCH, "saln", features, 0.8, seed=1))
        for features in (plain, attached)
    ]
    assert rows[0] == rows[1]
    assert torch.equal(saln.spectral_select(attached[:BATCH]), saln.spectral_select(plain[:BATCH]))
