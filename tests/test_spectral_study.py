"""The repaired-spectral study table: every verdict is a Welch test on the runs' own summaries,
coverage rows are also set against uniform+coverage, and the goal names what beat uniform."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scipy import stats
from tools.spectral_study import goal, main

from saln import config as cfg
from saln.experiments.sweep import run_sweep
from tests.test_report import tiny_config


def accuracies(folder: Path, method: str) -> list[float]:
    paths = sorted(folder.glob(f"runs/{method}-seed*/summary.json"))
    assert paths, f"no runs of {method} in {folder}"
    return [json.loads(p.read_text())["test_acc_best"] for p in paths]


def test_the_study_sets_each_selector_against_uniform_and_its_coverage_control(
    tmp_path: Path,
) -> None:
    config, root = cfg.load(tiny_config(tmp_path)), tmp_path / "study"
    seeds = [0, 1]
    run_sweep(config, [0.8], ["standard", "uniform", "spectral"], seeds, root / "plain")
    covered = cfg.from_dict({"train": {"coverage": True}}, config)
    run_sweep(covered, [0.8], ["uniform", "spectral"], seeds, root / "coverage")
    out = tmp_path / "published"
    assert main([str(root), str(out)]) == 0

    result = json.loads((out / "study.json").read_text())
    rows = result["ratios"]["ratio-0.8"]["rows"]
    assert list(rows) == [
        "standard", "uniform", "uniform+coverage", "spectral", "spectral+coverage"
    ]  # fmt: skip
    plain, coverage = root / "plain" / "ratio-0.8", root / "coverage" / "ratio-0.8"
    uniform = accuracies(plain, "uniform")
    for method, folder in (("spectral", plain), ("spectral", coverage), ("uniform", coverage)):
        label = method + ("+coverage" if folder == coverage else "")
        ours = accuracies(folder, method)
        versus = rows[label]["vs_uniform"]
        assert versus["difference"] == pytest.approx(
            sum(ours) / len(ours) - sum(uniform) / len(uniform)
        )
        if len(set(ours + uniform)) > 2:  # Welch needs spread on a side
            expected = stats.ttest_ind(ours, uniform, equal_var=False).pvalue
            assert versus["p"] == pytest.approx(expected)
    assert "vs_uniform" not in rows["uniform"]
    own = rows["spectral+coverage"]["vs_uniform_coverage"]
    mean = sum(accuracies(coverage, "spectral")) / 2 - sum(accuracies(coverage, "uniform")) / 2
    assert own["difference"] == pytest.approx(mean)
    assert "vs_uniform_coverage" not in rows["spectral"]
    assert rows["spectral"]["top_entry_mass"] is not None  # a ranking selector records it
    assert 0 < rows["uniform"]["share_ever_trained"]["mean"] <= 1
    shares = rows["spectral"]["class_shares_trained"]
    assert len(shares) == 10 and sum(shares) == pytest.approx(1.0)
    assert "goal" in result["ratios"]["ratio-0.8"]
    table = (out / "study.md").read_text()
    assert "## Filter ratio 0.8" in table and "Goal" in table
    assert (out / "ratio-0.8" / "report.md").exists()
    env = json.loads((out / "ratio-0.8" / "env.json").read_text())
    assert set(env) == {"plain", "coverage"}


def test_the_goal_names_the_selectors_better_than_uniform_and_otherwise_the_closest() -> None:
    def versus(difference: float, verdict: str) -> dict[str, object]:
        return {"vs_uniform": {"difference": difference, "p": 0.01, "verdict": verdict}}

    rows = {
        "standard": versus(0.2, "better"),  # a reference, never the answer
        "uniform": {},
        "saln": versus(-0.03, "worse"),
        "spectral_strata": versus(0.004, "indistinguishable"),
    }
    assert goal(rows) == {"met": False, "better_than_uniform": [], "closest": "spectral_strata"}
    rows["uniform+coverage"] = versus(0.01, "better")
    assert goal(rows) == {
        "met": True, "better_than_uniform": ["uniform+coverage"], "closest": "uniform+coverage"
    }  # fmt: skip
