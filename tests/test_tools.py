"""The publishing tools, on synthetic runs with hand-checked numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tools import infobatch_study, publish_comparison

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


def test_publishing_a_comparison_copies_the_records_of_its_finished_runs(tmp_path: Path) -> None:
    """The published folder holds each finished run's config, metrics and summary byte for
    byte, not its checkpoints nor an unfinished run; ``--records`` copies another folder's."""
    study, variant = tmp_path / "study", tmp_path / "variant"
    for seed in (0, 1):
        write_run(study, "standard", seed, SPLIT)
        write_run(variant, "uniform", seed, SPLIT)
    unfinished = study / "runs" / "saln-seed0"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text((study / "runs/standard-seed0/config.yaml").read_text())
    out = tmp_path / "published"
    publish_comparison.main([str(study), str(out)])
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["standard-seed0", "standard-seed1"]
    for name in ("config.yaml", "metrics.jsonl", "summary.json"):
        copied = (out / "runs/standard-seed1" / name).read_bytes()
        assert copied == (study / "runs/standard-seed1" / name).read_bytes()
    assert sorted(p.name for p in (out / "runs/standard-seed0").iterdir()) == [
        "config.yaml", "metrics.jsonl", "summary.json",
    ]  # fmt: skip
    assert (out / "report.md").exists() and not (out / "report.html").exists()

    # a variant's report: links to the study's runs beside its own; only its own are copied
    linked = tmp_path / "linked"
    (linked / "runs").mkdir(parents=True)
    control = tmp_path / "control"
    write_run(control, "saln", 0, SPLIT)  # a second folder of the variant's own runs
    own = [*(variant / "runs").iterdir(), *(control / "runs").iterdir()]
    for run in [*(study / "runs").glob("standard-*"), *own]:
        (linked / "runs" / run.name).symlink_to(run.resolve())
    out = tmp_path / "published_variant"
    publish_comparison.main([str(linked), str(out), "--records", str(variant), str(control)])
    assert sorted(p.name for p in (out / "runs").iterdir()) == [
        "saln-seed0", "uniform-seed0", "uniform-seed1",
    ]  # fmt: skip
    assert (out / "runs/uniform-seed0/selection_example.json").exists()  # the grid's batch
    assert "| uniform |" in (out / "report.md").read_text()


def test_publishing_refuses_a_records_folder_without_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_run(tmp_path / "study", "standard", 0, SPLIT)
    with pytest.raises(SystemExit) as exit_info:
        publish_comparison.main([str(tmp_path / "study"), str(tmp_path / "out"), "--records",
                                 str(tmp_path / "typo")])  # fmt: skip
    assert exit_info.value.code == 2
    assert f"{tmp_path / 'typo'} holds no runs/ folder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before writing anything
