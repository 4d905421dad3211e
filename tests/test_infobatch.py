"""InfoBatch: the pruning rule against a hand-worked epoch, and a run's epochs as planned."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from saln import config as cfg
from saln.selection.infobatch import annealing, prune_epoch
from saln.train import fit
from tests.test_train import tiny


def test_samples_below_the_mean_are_dropped_at_the_prune_ratio_and_reweighted() -> None:
    n = 20_000
    scores = np.concatenate([np.full(n // 2, 1.0), np.full(n // 2, 3.0)])  # mean 2
    candidates = np.arange(n)
    kept, weights, stats = prune_epoch(scores, candidates, 0.3, torch.Generator().manual_seed(0))
    low_kept = kept[kept < n // 2]
    assert set(kept[kept >= n // 2].tolist()) == set(range(n // 2, n))  # high loss: all kept
    assert len(low_kept) / (n // 2) == pytest.approx(0.7, abs=0.02)  # each low one w.p. 0.7
    assert np.allclose(weights[kept < n // 2], 1 / 0.7) and np.all(weights[kept >= n // 2] == 1)
    # unbiased: the expected weighted count of low-loss samples is their full count
    assert weights[kept < n // 2].sum() == pytest.approx(n // 2, rel=0.03)
    assert stats["kept_share"] == pytest.approx(len(kept) / n)
    assert stats["low_loss_share_of_kept"] == pytest.approx(len(low_kept) / len(kept))


def test_unseen_samples_are_kept_and_a_zero_ratio_keeps_everything() -> None:
    scores = np.array([np.nan, 0.1, 5.0, np.nan, 0.2])
    gen = torch.Generator().manual_seed(1)
    kept, weights, _ = prune_epoch(scores, np.arange(5), 0.0, gen)
    assert kept.tolist() == [0, 1, 2, 3, 4] and np.all(weights == 1.0)
    kept, _, _ = prune_epoch(scores, np.arange(5), 0.99, torch.Generator().manual_seed(1))
    assert {0, 2, 3} <= set(kept.tolist())  # never trained, or above the mean
    first = np.full(5, np.nan)  # the first epoch: nothing seen, everything kept
    assert prune_epoch(first, np.arange(5), 0.5, gen)[0].tolist() == [0, 1, 2, 3, 4]


def test_annealing_starts_at_delta_of_the_epochs() -> None:
    assert [annealing(e, 8, 0.875) for e in range(8)] == [False] * 7 + [True]
    assert not any(annealing(e, 8, 1.0) for e in range(8))


@pytest.mark.parametrize("loader", ["resident", "dataloader"])
def test_a_run_trains_fewer_rows_until_it_anneals_then_all(tmp_path: Path, loader: str) -> None:
    settings = {"train.epochs": 4, "train.infobatch_delta": 0.75, "data.loader": loader}
    config = tiny(tmp_path, "infobatch", **settings, **{"data.workers": 0})
    summary = fit(config, tmp_path / "run")
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    split = rows[0]["examples"]  # epoch 1: every sample, nothing seen yet
    assert rows[0]["kept_share"] == 1.0 and split == 1005
    for row in rows[1:3]:  # about half of the below-mean samples left out
        assert 0.6 < row["kept_share"] < 0.9 and row["examples"] < split
        assert row["mean_weight"] > 1.0 and row["low_loss_share_of_kept"] > 0
    assert rows[3]["kept_share"] == 1.0 and rows[3]["examples"] == split  # annealing
    assert summary.examples_trained == sum(r["examples"] for r in rows) < 4 * split


@pytest.mark.parametrize(
    ("key", "value"), [("train.prune_ratio", 1.0), ("train.prune_ratio", -0.1),
                       ("train.infobatch_delta", 0.0), ("train.infobatch_delta", 1.5)],
)  # fmt: skip
def test_bad_infobatch_settings_are_refused_naming_the_key(key: str, value: float) -> None:
    with pytest.raises(cfg.ConfigError, match=key.replace(".", r"\.")):
        cfg.load(None, {key: value})


def test_a_budget_matched_standard_trains_the_examples_another_method_trained(
    tmp_path: Path,
) -> None:
    from saln.experiments.compare import run_comparison

    pruning = {"train.epochs": 4, "train.infobatch_delta": 0.75, "train.prune_ratio": 0.9}
    config = tiny(tmp_path, "standard", **pruning)  # InfoBatch trains about 3 epochs' rows
    methods = ["standard_matched@infobatch", "infobatch"]  # the budget trains after its method
    report = run_comparison(config, methods, [0, 1], tmp_path / "cmp")
    rows = report["methods"]
    assert set(rows) == {"infobatch", "standard_matched@infobatch"}
    for seed in (0, 1):
        runs = tmp_path / "cmp" / "runs"
        spent = json.loads((runs / f"infobatch-seed{seed}" / "summary.json").read_text())
        matched = json.loads(
            (runs / f"standard_matched@infobatch-seed{seed}" / "summary.json").read_text()
        )
        epochs = round(spent["examples_trained"] / 1005)  # whole epochs of the 1005-row split
        assert matched["epochs"] == epochs < 4
        assert matched["examples_trained"] == epochs * 1005
        assert matched["method"] == "standard_matched@infobatch"
        stored = yaml.safe_load(
            (runs / f"standard_matched@infobatch-seed{seed}" / "config.yaml").read_text()
        )
        assert stored["train"]["budget_examples"] == spent["examples_trained"]


@pytest.mark.parametrize(
    ("methods", "message"),
    [
        (["standard_matched@infobatch"], "add infobatch to --methods"),
        (["uniform@infobatch", "infobatch"], "only standard_matched takes"),
        (["standard_matched@nope", "uniform"], "unknown method 'nope'"),
    ],
)
def test_a_budget_needs_its_method_in_the_comparison(
    tmp_path: Path, methods: list[str], message: str
) -> None:
    from saln.experiments.compare import run_comparison

    with pytest.raises(ValueError, match=message):
        run_comparison(tiny(tmp_path, "standard"), methods, [0], tmp_path / "cmp")
    assert not (tmp_path / "cmp").exists()


def test_a_budget_is_only_for_standard_matched() -> None:
    with pytest.raises(cfg.ConfigError, match=r"train\.budget_examples sets the budget of"):
        cfg.load(None, {"train.method": "uniform", "train.budget_examples": 100})
    with pytest.raises(cfg.ConfigError, match=r"train\.budget_examples must be positive"):
        cfg.load(None, {"train.method": "standard_matched", "train.budget_examples": 0})
