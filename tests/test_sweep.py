"""The filter-ratio sweep: one comparison per ratio, its table read back from the runs
themselves, nothing retrained on a rerun, and bad input refused before any training."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from saln import config as cfg
from saln.experiments.sweep import run_sweep
from saln.report.build import build_report
from tests.test_report import tiny_config


def run_means(folder: Path, method: str) -> tuple[float, float]:
    """Mean test accuracy (best-val model) and examples of a method's runs, read directly."""
    summaries = [
        json.loads(p.read_text()) for p in sorted(folder.glob(f"runs/{method}-seed*/summary.json"))
    ]
    assert summaries, f"no runs of {method} in {folder}"
    return (
        float(np.mean([s["test_acc_best"] for s in summaries])),
        float(np.mean([s["examples_trained"] for s in summaries])),
    )


def test_a_sweep_runs_each_ratio_once_and_its_table_matches_the_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, out = cfg.load(tiny_config(tmp_path)), tmp_path / "sweep"
    methods = ["standard", "standard_matched", "uniform", "saln"]
    result = run_sweep(config, [0.5, 0.9], methods, [0, 1], out)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["full", "ratio-0.5", "ratio-0.9"]
    assert not list((out / "full" / "runs").glob("uniform*"))  # standard alone runs once
    rows = {(r["folder"], r["method"]): r for r in result["rows"]}
    assert len(rows) == 7
    for (folder, method), row in rows.items():
        accuracy, examples = run_means(out / folder, method)
        assert row["test_acc_best"]["mean"] == pytest.approx(accuracy)
        assert row["examples_trained"]["mean"] == pytest.approx(examples)
    # The share kept is the asked ratio's, also for standard_matched (which records ratio 0).
    assert rows[("ratio-0.9", "standard_matched")]["kept_share"] == pytest.approx(0.1)
    assert rows[("full", "standard")]["kept_share"] == 1.0
    full, tenth = rows[("full", "standard")], rows[("ratio-0.9", "uniform")]
    assert tenth["examples_trained"]["mean"] < 0.15 * full["examples_trained"]["mean"]
    assert rows[("ratio-0.5", "saln")]["vs_uniform"]["p"] is not None  # two seeds: a verdict
    ratio_report = json.loads((out / "ratio-0.9" / "summary.json").read_text())
    assert "standard" in ratio_report["methods"] and ratio_report["target_basis"] == "standard"
    table = (out / "sweep.md").read_text()
    assert table.count("| 0.9 | 10% |") == 3 and "sweep.png" in table
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "sweep.json").read_text())["folders"]["ratio-0.9"] == 0.9
    with pytest.raises(ValueError, match="is a filter-ratio sweep: report one ratio"):
        build_report([out], tmp_path / "report")

    from tools.publish_sweep import publish

    import saln.experiments.compare
    import saln.report.build

    # The figures were drawn above: what follows checks tables and what trains again.
    monkeypatch.setattr(saln.report.build, "draw", lambda runs, out, target: ({}, []))
    published = publish(out, tmp_path / "published").parent
    assert published.joinpath("sweep.md").read_text() == table  # rebuilt from what it publishes
    env = json.loads((published / "ratio-0.9" / "env.json").read_text())
    recorded = sorted(run for runs in env["git_sha"].values() for run in runs)
    assert recorded == sorted(p.name for p in (out / "ratio-0.9" / "runs").iterdir())
    assert not (published / "full" / "report.html").exists()

    monkeypatch.setattr(
        saln.experiments.compare, "fit", lambda *a, **k: pytest.fail("retrained a complete run")
    )
    again = run_sweep(config, [0.5, 0.9], methods, [0, 1], out)
    assert again["rows"] == result["rows"]


@pytest.mark.parametrize(
    ("ratios", "methods", "message"),
    [
        ([0.5, 0.5], ["uniform"], "each filter ratio once"),
        ([], ["uniform"], "at least one"),
        ([0.5, 1.0], ["uniform"], r"filter_ratio=1.0 must be in \[0, 1\)"),
        ([0.5], ["uniform", "spectra"], "unknown method 'spectra'"),
        ([0.5], [], "at least one method"),
        ([0.5], ["uniform"], "--nproc .* at least 1; got 0"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(
    tmp_path: Path, ratios: list[float], methods: list[str], message: str
) -> None:
    nproc = 0 if "nproc" in message else 1
    with pytest.raises(ValueError, match=message):
        run_sweep(
            cfg.load(tiny_config(tmp_path)), ratios, methods, [0], tmp_path / "sweep", nproc=nproc
        )
    assert not (tmp_path / "sweep").exists()


def test_a_missing_comparison_summary_and_a_repeated_ratio_are_named(tmp_path: Path) -> None:
    from saln.report.sweep import write_sweep

    (tmp_path / "ratio-0.5").mkdir()
    with pytest.raises(ValueError, match=r"ratio-0.5/summary.json is missing .*rerun the sweep"):
        write_sweep(tmp_path, [(tmp_path / "ratio-0.5", 0.5)])
    config = str(tiny_config(tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "saln", "sweep", "--config", config, "--ratios", "0.8,0.8"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "0.8 given more than once" in done.stderr


def test_a_sweep_of_one_seed_draws_its_picture_without_error_bars(tmp_path: Path) -> None:
    config = cfg.load(tiny_config(tmp_path), {"train.epochs": 1})
    result = run_sweep(config, [0.8], ["standard", "uniform"], [0], tmp_path / "sweep")
    assert all(r["test_acc_best"]["std"] is None for r in result["rows"])  # one seed: no spread
    assert (tmp_path / "sweep" / "sweep.png").read_bytes()[:4] == b"\x89PNG"
