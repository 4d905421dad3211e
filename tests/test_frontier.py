"""Standard's compute frontier: the points it trains, its interpolation, and each method's
verdict against it, checked against numpy and scipy on synthetic runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from saln import config as cfg
from saln.errors import InvalidInput
from saln.experiments.compare import run_settings, with_frontier
from saln.report.frontier import frontier_at, frontier_verdict
from saln.runs.records import RunLabel
from saln.train import METHODS

# seed -> (total seconds, accuracy) of standard at F = 0.4, 0.6, 0.8, 1.0
FRONTIER = {
    0: [(40.0, 0.80), (60.0, 0.85), (80.0, 0.88), (100.0, 0.90)],
    1: [(42.0, 0.81), (61.0, 0.84), (79.0, 0.89), (98.0, 0.91)],
    2: [(41.0, 0.79), (62.0, 0.86), (81.0, 0.87), (101.0, 0.90)],
}


def test_the_frontier_interpolates_between_its_points_and_holds_outside() -> None:
    points = FRONTIER[0]
    assert frontier_at(points, 70.0) == pytest.approx(0.865)
    assert frontier_at(list(reversed(points)), 50.0) == pytest.approx(0.825)  # any order
    assert frontier_at(points, 10.0) == 0.80 and frontier_at(points, 500.0) == 0.90


def test_a_method_above_on_and_below_the_frontier() -> None:
    times = {0: 70.0, 1: 65.0, 2: 75.0}
    expected = [float(np.interp(times[s], *zip(*FRONTIER[s], strict=True))) for s in (0, 1, 2)]
    above = {s: (times[s], expected[s] + 0.02 + 0.001 * s) for s in (0, 1, 2)}
    verdict = frontier_verdict(above, FRONTIER)
    ours = [above[s][1] for s in (0, 1, 2)]
    assert verdict["p"] == pytest.approx(stats.ttest_ind(ours, expected, equal_var=False).pvalue)
    assert verdict["frontier_acc"] == pytest.approx(expected)
    assert verdict["difference"] == pytest.approx(0.021) and verdict["verdict"] == "above"
    noisy = {0: (70.0, expected[0] + 0.03), 1: (65.0, expected[1] - 0.02), 2: (75.0, expected[2])}
    assert frontier_verdict(noisy, FRONTIER)["verdict"] == "on"
    below = {s: (times[s], expected[s] - 0.05 - 0.002 * s) for s in (0, 1, 2)}
    assert frontier_verdict(below, FRONTIER)["verdict"] == "below"
    one = frontier_verdict({0: above[0]}, FRONTIER)
    assert one["verdict"] == "no verdict (needs >= 2 seeds)" and one["p"] is None
    assert frontier_verdict(above, {})["verdict"] == "no frontier"


def test_a_frontier_point_trains_its_share_of_standards_epochs_decayed(tmp_path: Path) -> None:
    label = RunLabel.parse("standard_matched@0.4")
    assert label.fraction == 0.4 and label.is_control and not label.competes
    assert RunLabel.parse("standard_matched@loss").fraction is None
    settings = run_settings("standard_matched@0.4", 3, tmp_path)
    config = cfg.from_dict({"train": settings}, cfg.load(None, {"train.epochs": 10}))
    assert METHODS.build("standard_matched").epochs(config, 1000) == 4
    assert config.train.budget_fraction == 0.4 and config.train.budget_of == "0.4"


def test_compare_adds_the_frontier_only_beside_standard() -> None:
    assert with_frontier(["standard", "loss"], [0.4, 0.6, 0.8]) == [
        "standard", "loss", "standard_matched@0.4", "standard_matched@0.6",
        "standard_matched@0.8",
    ]  # fmt: skip
    assert with_frontier(["loss", "uniform"], [0.4]) == ["loss", "uniform"]
    assert with_frontier(["standard", "standard_matched@0.4"], [0.4, 1.0]) == [
        "standard", "standard_matched@0.4"
    ]  # fmt: skip


@pytest.mark.parametrize("fraction", [0.0, -0.2, 1.5])
def test_a_share_outside_zero_to_one_is_refused_naming_it(fraction: float) -> None:
    with pytest.raises(InvalidInput, match=r"--frontier: .* F in \(0, 1\]"):
        with_frontier(["standard"], [fraction])
    with pytest.raises(cfg.ConfigError, match=r"train\.budget_fraction"):
        cfg.load(None, {"train.method": "standard_matched", "train.budget_fraction": fraction})
