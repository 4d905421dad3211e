"""Coverage across epochs: a model-free selector prefers rows not trained yet in this cycle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from saln import config as cfg
from saln.report.aggregate import uniform_control
from saln.sampling import SelectiveBatchSampler
from saln.selection import spectral_select_with_stats
from saln.train import fit
from tests.conftest import clustered_features
from tests.test_train import tiny

N, BATCH = 200, 20  # keep 4 of each 20 at filter ratio 0.8: 40 kept an epoch


def epochs_of(sampler: SelectiveBatchSampler, epochs: range) -> list[list[list[int]]]:
    plans = []
    for epoch in epochs:
        sampler.set_epoch(epoch)
        plans.append(sampler.plan_epoch().rows)
    return plans


@pytest.mark.parametrize("selector", ["uniform", "saln", "spectral", "class_stratified"])
def test_a_batch_keeps_unseen_rows_first(selector: str) -> None:
    """Rankings and uniform: as many unseen rows as the batch has, up to keep. Strata draws
    (class_stratified here, whose strata are known): the same within each class."""
    features = clustered_features(1, N, 8, seed=1)[0]
    labels = np.arange(N) % 5
    sampler = SelectiveBatchSampler(
        N, BATCH, selector, features, labels=labels, coverage=True, seed=3
    )
    seen = np.zeros(N, dtype=bool)
    for epoch in range(12):
        if seen.all():
            seen[:] = False  # the cycle is complete: a new one starts
        sampler.set_epoch(epoch)
        plan = sampler.plan_epoch()
        for batch, kept in zip(plan.super_batches, plan.rows, strict=True):
            groups = labels if selector == "class_stratified" else np.zeros(N, dtype=int)
            for group in np.unique(groups[batch]):
                mine = [i for i in kept if groups[i] == group]
                unseen = int((~seen[batch[groups[batch] == group]]).sum())
                assert int((~seen[mine]).sum()) == min(unseen, len(mine))
        seen[np.concatenate(plan.rows)] = True


@pytest.mark.parametrize(("selector", "covered"), [("uniform", 0.93), ("spectral_strata", 0.8)])
def test_coverage_trains_every_sample_about_once_per_cycle(selector: str, covered: float) -> None:
    """Five epochs at filter ratio 0.8: nearly every sample once with coverage (strata keep
    their proportions first, so some of their picks are seen rows); a random subset each epoch
    reaches about 1 - 0.8**5 = 67% of them."""
    features = clustered_features(1, N, 8, seed=1)[0]
    shares = {}
    for coverage in (False, True):
        sampler = SelectiveBatchSampler(N, BATCH, selector, features, coverage=coverage, seed=0)
        kept = np.concatenate([np.concatenate(p) for p in epochs_of(sampler, range(5))])
        shares[coverage] = len(np.unique(kept)) / N
    assert shares[False] == pytest.approx(1 - 0.8**5, abs=0.08)
    assert shares[True] >= covered


def test_saln_with_coverage_keeps_the_largest_fiedler_entries_among_the_unseen() -> None:
    features = clustered_features(1, N, 8, seed=2)[0]
    sampler = SelectiveBatchSampler(N, BATCH, "saln", features, coverage=True, seed=1)
    first = epochs_of(sampler, range(1))[0]
    sampler.set_epoch(1)
    plan = sampler.plan_epoch()
    seen = np.zeros(N, dtype=bool)
    seen[np.concatenate(first)] = True
    for batch, kept in zip(plan.super_batches, plan.rows, strict=True):
        _, stats = spectral_select_with_stats(features[batch], keep=4)
        magnitude = np.asarray(stats["abs_fiedler"][0])
        unseen = [int(p) for p in np.argsort(-magnitude, kind="stable") if not seen[batch[p]]]
        assert kept == [int(batch[p]) for p in unseen[:4]]


def test_a_resumed_sampler_continues_the_cycle() -> None:
    whole = SelectiveBatchSampler(N, BATCH, "uniform", coverage=True, seed=4)
    expected = epochs_of(whole, range(4))
    first = SelectiveBatchSampler(N, BATCH, "uniform", coverage=True, seed=4)
    epochs_of(first, range(2))
    resumed = SelectiveBatchSampler(N, BATCH, "uniform", coverage=True, seed=4)
    resumed.load_state_dict(first.state_dict())
    assert epochs_of(resumed, range(2, 4)) == expected[2:]


def test_a_selector_that_cannot_prefer_unseen_rows_is_refused() -> None:
    class Plain:
        name, needs = "plain", frozenset[str]()

        def select(self, batch: object, keep: int, *, generator: object = None) -> object: ...

        def select_many(self, features: torch.Tensor, keep: int, *, generator: object = None): ...  # type: ignore[no-untyped-def]

    with pytest.raises(ValueError, match="'plain' cannot prefer unseen rows"):
        SelectiveBatchSampler(N, BATCH, Plain(), coverage=True)  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["standard", "infobatch", "loss"])
def test_coverage_for_a_method_without_a_model_free_selector_names_the_key(
    tmp_path: Path, method: str
) -> None:
    with pytest.raises(cfg.ConfigError, match=rf"train\.coverage steers .* {method!r} has none"):
        fit(tiny(tmp_path, method, **{"train.coverage": True}), tmp_path / "run")


def test_a_run_with_coverage_is_reported_beside_its_own_control(tmp_path: Path) -> None:
    summary = fit(tiny(tmp_path, "uniform", **{"train.coverage": True}), tmp_path / "run")
    assert summary.method == "uniform+coverage" and summary.share_ever_trained > 0.35
    assert uniform_control("saln+coverage") == "uniform+coverage"
    assert uniform_control("saln") == "uniform"
