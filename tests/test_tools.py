"""The publishing tools, on synthetic runs with hand-checked numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tools import infobatch_study

from tests.test_report import SYNTHETIC, write_run

SPLIT = {"train": list(range(100)), "val": list(range(100, 120)), "reference": [], "seed": 0,
         "val_fraction": 0.1, "reference_fraction": 0.1}  # fmt: skip


def test_the_infobatch_study_sets_each_variant_against_standard(tmp_path: Path) -> None:
    """standard trains 100 rows an epoch in 10 / 12 s, every other run 20 rows in 2.5 / 2 s
    (saln's times): examples 0.2 of standard's, training time 0.25 and 1/6 per seed."""
    SYNTHETIC["infobatch"] = SYNTHETIC["saln"]
    SYNTHETIC["standard_matched@infobatch"] = SYNTHETIC["uniform"]
    try:
        for seed in (0, 1):
            for method in ("standard", "infobatch", "standard_matched@infobatch"):
                write_run(tmp_path / "infobatch", method, seed, SPLIT)
            write_run(tmp_path / "matched_ratio", "uniform", seed, SPLIT)
    finally:
        del SYNTHETIC["infobatch"], SYNTHETIC["standard_matched@infobatch"]
    out = tmp_path / "published"
    assert infobatch_study.main([str(tmp_path), str(out)]) == 0
    result = json.loads((out / "study.json").read_text())
    rows = result["rows"]
    assert list(rows) == [
        "standard", "infobatch (prune 0.5, delta 0.875)", "standard_matched@infobatch (prune 0.5)",
        "uniform at filter ratio 0.8",
    ]  # fmt: skip
    infobatch = rows["infobatch (prune 0.5, delta 0.875)"]
    assert infobatch["examples_share"]["mean"] == pytest.approx(0.2)
    assert infobatch["train_time_share"]["mean"] == pytest.approx((0.25 + 2 / 12) / 2)
    assert infobatch["vs_standard"]["difference"] == pytest.approx(0.705 - 0.89)
    assert infobatch["vs_budget_control"]["control"] == "standard_matched@infobatch"
    assert infobatch["vs_budget_control"]["difference"] == pytest.approx(0.705 - 0.79)
    assert infobatch["vs_uniform_matched"]["difference"] == pytest.approx(0.705 - 0.79)
    assert infobatch["meets_goal"] is False
    missed = ["-18.50 points", "wall time unknown", "worse vs budget-matched"]  # no epoch times
    assert infobatch["goal_missed_by"] == missed
    assert rows["uniform at filter ratio 0.8"]["meets_goal"] is None  # the goal is InfoBatch's
    assert result["missing"] == [str(tmp_path / "prune0.3"), str(tmp_path / "prune0.7")]
    table = (out / "study.md").read_text()
    assert "| uniform at filter ratio 0.8 | 2 | 79.00 ± 1.41 |" in table
    assert (out / "report" / "report.md").exists()
