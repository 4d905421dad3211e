"""Reports from stored runs: hand-checked numbers, refusals, compare end to end, a real browser."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import tarfile
from dataclasses import MISSING, fields
from html import escape
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from saln import config as cfg
from saln.experiments.compare import DEFAULT_METHODS, run_comparison
from saln.report.build import build_report
from saln.report.render import TABLES, shown_tables
from saln.runs.records import EpochRecord, RunLabel, RunSummary

REPO = Path(__file__).resolve().parents[1]

# method -> seed -> (train_time_s per epoch, val_acc per epoch, test_acc_best, one-off seconds)
SYNTHETIC: dict[str, dict[int, tuple[float, list[float], float, float]]] = {
    "standard": {
        0: (10.0, [0.50, 0.80, 0.90], 0.88, 0.0),
        1: (12.0, [0.55, 0.85, 0.92], 0.90, 0.0),
    },
    "uniform": {0: (2.0, [0.40, 0.70, 0.80], 0.78, 0.0), 1: (3.0, [0.45, 0.72, 0.82], 0.80, 0.0)},
    "saln": {0: (2.5, [0.30, 0.60, 0.85], 0.70, 4.0), 1: (2.0, [0.35, 0.65, 0.86], 0.71, 4.0)},
}


def write_run(root: Path, method: str, seed: int, split: dict[str, Any]) -> Path:
    per_epoch, val, test_best, one_off = SYNTHETIC[method][seed]
    run = root / "runs" / f"{method}-seed{seed}"
    run.mkdir(parents=True)
    label = RunLabel.parse(method)
    settings = {"train.method": method, "train.seed": seed, "train.epochs": 3}
    if label.fraction is not None:  # a point of standard's frontier
        settings.update({"train.method": label.method, "train.budget_of": label.budget_of,
                         "train.budget_fraction": label.fraction})  # fmt: skip
    config = cfg.load(None, settings)
    (run / "config.yaml").write_text(config.to_yaml())
    (run / "split.json").write_text(json.dumps(split))
    records = [
        EpochRecord(
            epoch=epoch + 1,
            train_acc=acc + 0.05,
            val_acc=acc,
            train_loss=1 - acc,
            val_loss=1.1 - acc,
            time_data=per_epoch * 0.2,
            time_selection=per_epoch * 0.1,
            time_step=per_epoch * 0.7,
            examples=100 if method == "standard" else 20,
            steps=10,
        )
        for epoch, acc in enumerate(val)
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r.to_dict()) + "\n" for r in records))
    summary = RunSummary(
        method=method,
        seed=seed,
        final_train_acc=val[-1] + 0.05,
        final_val_acc=val[-1],
        best_val_acc=max(val),
        final_train_loss=1 - val[-1],
        final_val_loss=1.1 - val[-1],
        test_acc_last=test_best - 0.01,
        test_acc_best=test_best,
        train_time_s=3 * per_epoch,
        total_time_s=3 * per_epoch + one_off,
        examples_trained=3 * records[0].examples,
        steps=30,
        selection_share_of_step=0.1 / 0.7,
        share_ever_trained=1.0 if method == "standard" else 0.5,
        max_epochs_kept=3,
        top1pct_mean_epochs_kept=3.0,
        class_entropy_trained=2.0,
        class_entropy_split=2.3,
        one_off={"feature_extraction_s": one_off} if one_off else {},
        filter_ratio=0.0 if method == "standard" else 0.8,
        convention="paper",
    )
    (run / "summary.json").write_text(json.dumps(summary.to_dict()))
    torch.save({"fc.weight": torch.randn(10, 8), "fc.bias": torch.zeros(10)}, run / "best_model.pt")
    if method in ("saln", "uniform"):
        (run / "selection_example.json").write_text(
            json.dumps({"indices": list(range(20)), "kept_positions": [1, 5, 7, 9]})
        )
    if method == "saln":
        (run / "spectral.json").write_text(
            json.dumps(
                {
                    "gaps": [0.01, 0.0005, 0.2],
                    "abs_fiedler_kept": [2.0, 3.0],
                    "abs_fiedler_dropped": [0.1, 0.2, 0.3],
                }
            )
        )
    return run


@pytest.fixture
def synthetic(tmp_path: Path) -> Path:
    split = {
        "train": list(range(0, 100)),
        "val": list(range(100, 120)),
        "reference": [],
        "seed": 0,
        "val_fraction": 0.1,
        "reference_fraction": 0.1,
    }
    for method, seeds in SYNTHETIC.items():
        for seed in seeds:
            write_run(tmp_path, method, seed, split)
    return tmp_path


def test_numbers_match_a_hand_computation(synthetic: Path) -> None:
    report = build_report([synthetic], synthetic / "report", target=0.84)
    m = report["methods"]
    assert m["standard"]["test_acc_best"]["mean"] == pytest.approx(0.89)
    assert m["standard"]["test_acc_best"]["std"] == pytest.approx(math.sqrt(2) * 0.01)
    # speed-up: per seed standard time / method time, then the mean: (10/2 + 12/3) / 2
    assert m["uniform"]["speedup_vs_standard"]["mean"] == pytest.approx((5 + 4) / 2)
    assert m["saln"]["speedup_vs_uniform"]["mean"] == pytest.approx((2 / 2.5 + 3 / 2) / 2)
    # time to 0.84: standard seed 0 at epoch 3 (30 s), seed 1 at epoch 2 (24 s)
    assert m["standard"]["to_target"]["seconds"]["mean"] == pytest.approx(27.0)
    assert m["standard"]["to_target"]["examples"]["mean"] == pytest.approx(250.0)
    # saln reaches 0.85/0.86 at epoch 3: 3 * 2.5 + 4 one-off, and 3 * 2 + 4
    assert m["saln"]["to_target"]["seconds"]["mean"] == pytest.approx((11.5 + 10.0) / 2)
    assert m["uniform"]["to_target"] == {"reached": "0/2", "seconds": None, "examples": None}
    # saln 0.70/0.71 vs uniform 0.78/0.80: the gap dwarfs the spread
    assert m["saln"]["verdict_vs_uniform"] == "worse"
    assert m["standard"]["verdict_vs_uniform"] == "better"
    assert m["uniform"]["verdict_vs_uniform"] == "control"


def _runs(values: tuple[float, ...]) -> list[Any]:
    from saln.report.aggregate import Run

    return [Run(Path(f"s{i}"), {}, scored(i, v), []) for i, v in enumerate(values)]


def scored(seed: int, test_acc: float) -> RunSummary:
    """A summary whose only meaningful value is its test accuracy."""
    zeros = {f.name: 0 for f in fields(RunSummary) if f.default is MISSING}
    return RunSummary(**{**zeros, "method": "m", "seed": seed, "test_acc_best": test_acc})


def test_the_verdict_is_a_welch_t_test_on_the_seeds() -> None:
    from scipy import stats

    from saln.report.aggregate import compare_to_control

    control = (0.9537, 0.9778, 0.9574)
    # 2.4 standard errors above the control with 3 seeds each, as standard was on digits: a
    # "2 standard errors" rule called it better, the t-test does not (Welch's df ~ 2.5)
    close = compare_to_control(_runs((0.9778, 0.9852, 0.9815)), _runs(control))
    reference = stats.ttest_ind((0.9778, 0.9852, 0.9815), control, equal_var=False)
    assert close.p_value == pytest.approx(reference.pvalue, rel=1e-9)
    assert 0.05 < close.p_value < 0.2 and close.verdict == "indistinguishable"
    far = compare_to_control(_runs((0.44, 0.46, 0.43)), _runs(control))
    assert far.p_value < 0.001 and far.verdict == "worse"
    assert far.difference == pytest.approx(0.4433333 - 0.9629667, abs=1e-6)
    # seeds that all agree: an exact difference, or none at all
    assert compare_to_control(_runs((0.5, 0.5)), _runs((0.4, 0.4))).verdict == "better"
    assert compare_to_control(_runs((0.5, 0.5)), _runs((0.5, 0.5))).p_value == 1.0
    one_seed = compare_to_control(_runs((0.9,)), _runs(control))
    assert one_seed.p_value is None and one_seed.verdict == "no verdict (needs >= 2 seeds)"


def test_default_target_is_standard_best_minus_one_point(synthetic: Path) -> None:
    from saln.report.render import preamble

    report = build_report([synthetic], synthetic / "report")
    assert report["target_val_acc"] == pytest.approx((0.90 + 0.92) / 2 - 0.01)
    assert "(standard's best val accuracy minus one point)" in preamble(report)
    assert "(set with --target)" in preamble(build_report([synthetic], synthetic / "t", 0.5))


def test_without_standard_the_target_says_it_comes_from_every_run(synthetic: Path) -> None:
    from saln.report.render import preamble

    for seed in (0, 1):
        shutil.rmtree(synthetic / "runs" / f"standard-seed{seed}")
    report = build_report([synthetic], synthetic / "report")
    bests = [
        json.loads(path.read_text())["best_val_acc"]
        for path in (synthetic / "runs").glob("*/summary.json")
    ]
    assert report["target_val_acc"] == pytest.approx(sum(bests) / len(bests) - 0.01)
    assert "(no standard run: the mean best val accuracy of all runs minus one point)" in (
        preamble(report)
    )


def test_a_comparison_with_uneven_seeds_lists_each_methods_seeds(synthetic: Path) -> None:
    from saln.report.render import preamble

    even = preamble(build_report([synthetic], synthetic / "a"))
    assert "Mean ± sample std over seeds 0, 1." in even
    shutil.rmtree(synthetic / "runs" / "saln-seed1")
    text = preamble(build_report([synthetic], synthetic / "b"))
    assert "Seeds differ between methods (standard 0, 1; uniform 0, 1; saln 0)" in text


@pytest.mark.figures
def test_report_files_have_every_table_row_and_plot(synthetic: Path) -> None:
    out = synthetic / "report"
    build_report([synthetic], out, target=0.84)
    md = (out / "report.md").read_text()
    for title in (
        "Accuracy, loss and time",
        "Cost and speed-up",
        "Time to the target",
        "Against the uniform control",
        "Selection diagnostics",
    ):
        section = md.split(f"## {title}")[1].split("## ")[0]
        assert all(f"| {m} |" in section for m in SYNTHETIC), title
    assert "not reached (0/2 seeds)" in md
    assert "89.00 ± 1.41" in md  # standard's test acc (best val), in %
    # saln 70.5 against uniform 79.0: Welch's t = -7.60 on 1.47 degrees of freedom
    assert "| -8.50 | 0.037 | worse |" in md
    images = [
        "curves.png",
        "accuracy_vs_cost.png",
        "selection_grid.png",
        "fc_weights.png",
        "spectral.png",
    ]
    for name in images:
        assert (out / name).stat().st_size > 5000, name
        assert f"]({name})" in md
    page = (out / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(images)
    rows = (out / "summary.csv").read_text().splitlines()
    assert rows[0].startswith("method,seeds,") and len(rows) == 4
    header, saln_row = rows[0].split(","), next(r for r in rows if r.startswith("saln,")).split(",")
    assert float(saln_row[header.index("p_vs_uniform")]) == pytest.approx(0.0372, abs=1e-4)
    assert (
        json.loads((out / "summary.json").read_text())["methods"]["saln"]["verdict_vs_uniform"]
        == "worse"
    )


def test_runs_of_different_splits_or_datasets_are_refused(synthetic: Path) -> None:
    run = synthetic / "runs" / "saln-seed1"
    (run / "split.json").write_text(json.dumps({"train": [1]}))
    with pytest.raises(ValueError, match=r"not comparable .*split.json differs"):
        build_report([synthetic], synthetic / "report")
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["data"]["dataset"] = "cifar10"
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match=r"data.dataset: 'digits' vs 'cifar10'"):
        build_report([synthetic], synthetic / "report")


def test_a_method_run_at_two_settings_or_a_seed_given_twice_is_refused(synthetic: Path) -> None:
    import shutil

    build_report([synthetic], synthetic / "report")  # one setting per method: fine
    run = synthetic / "runs" / "saln-seed1"
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["train"]["filter_ratio"] = 0.5
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(
        ValueError,
        match=r"runs of saln differ in more than their seed .*"
        r"train.filter_ratio: 0.8 -> 0.5.*one setting per method",
    ):
        build_report([synthetic], synthetic / "report")
    del config["train"]["selection_mode"]  # a key written before it existed: its default
    config["train"]["filter_ratio"] = 0.8
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    build_report([synthetic], synthetic / "report")
    shutil.copytree(synthetic / "runs" / "uniform-seed0", synthetic / "more" / "uniform-seed0")
    with pytest.raises(ValueError, match=r"two runs of uniform seed 0 .*: report one"):
        build_report([synthetic, synthetic / "more"], synthetic / "report")


def test_a_selector_at_another_setting_than_the_control_gets_no_verdict(synthetic: Path) -> None:
    for run in (synthetic / "runs").glob("saln-seed*"):
        config = yaml.safe_load((run / "config.yaml").read_text())
        config["train"]["filter_ratio"] = 0.5
        (run / "config.yaml").write_text(yaml.safe_dump(config))
    methods = build_report([synthetic], synthetic / "report")["methods"]
    assert methods["saln"]["verdict_vs_uniform"] == (
        "not comparable (train.filter_ratio: 0.8 -> 0.5)"
    )
    assert methods["saln"]["vs_uniform"] is None
    assert methods["standard"]["verdict_vs_uniform"] == "better"  # references: as they are


def test_a_setting_the_control_does_not_read_leaves_the_verdict(synthetic: Path) -> None:
    """Neither saln nor uniform reads the proxy's settings: runs that differ only there are
    still set against each other (they once got "not comparable")."""
    for run in (synthetic / "runs").glob("saln-seed*"):
        config = yaml.safe_load((run / "config.yaml").read_text())
        config["selection"]["proxy_resolution"] = 16
        (run / "config.yaml").write_text(yaml.safe_dump(config))
    methods = build_report([synthetic], synthetic / "report")["methods"]
    assert methods["saln"]["vs_uniform"] is not None
    assert not methods["saln"]["verdict_vs_uniform"].startswith("not comparable")


def test_incomplete_runs_are_named_and_left_out(synthetic: Path) -> None:
    (synthetic / "runs" / "saln-seed1" / "summary.json").unlink()
    (synthetic / "runs" / "empty").mkdir()
    report = build_report([synthetic], synthetic / "report")
    assert report["methods"]["saln"]["seeds"] == [0]
    assert any("saln-seed1" in n and "empty" in n for n in report["notes"])
    assert "incomplete runs left out" in (synthetic / "report" / "report.md").read_text()


def test_damaged_records_are_named(synthetic: Path) -> None:
    run = synthetic / "runs" / "saln-seed1"
    rows = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join([rows[0][:9], *rows[1:]]) + "\n")
    with pytest.raises(ValueError, match=r"saln-seed1/metrics.jsonl line 1 is not valid JSON"):
        build_report([synthetic], synthetic / "report")
    (run / "summary.json").write_text("{")
    with pytest.raises(ValueError, match=r"saln-seed1/summary.json is not valid JSON .*overwrite"):
        build_report([synthetic], synthetic / "report")


def test_nothing_to_report(tmp_path: Path) -> None:
    (tmp_path / "runs" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="no complete runs"):
        build_report([tmp_path], tmp_path / "out")


def test_unwritable_out_dir(synthetic: Path) -> None:
    blocker = synthetic / "file"
    blocker.write_text("x")
    with pytest.raises(
        ValueError, match=r"out dir .* cannot be made: .* is a file, not a folder.*with --out$"
    ):
        build_report([synthetic], blocker / "report")


def test_unknown_method_lists_the_registered_ones(tmp_path: Path) -> None:
    listed = "unknown method 'spectra'; valid names: class_stratified, infobatch, jest"
    with pytest.raises(ValueError, match=listed):
        run_comparison(cfg.Config(), ["standard", "spectra"], [0], tmp_path)


@pytest.mark.parametrize("target", [95.0, 0.0, -0.1])
def test_a_target_that_is_not_a_fraction_fails_before_anything_runs(
    synthetic: Path, tmp_path: Path, target: float
) -> None:
    with pytest.raises(ValueError, match=r"fraction in \(0, 1\].*0.95 for 95%"):
        build_report([synthetic], tmp_path / "report", target)
    with pytest.raises(ValueError, match="fraction in"):
        run_comparison(cfg.Config(), ["uniform"], [0], tmp_path / "compare", target=target)
    assert not (tmp_path / "compare").exists() and not (tmp_path / "report").exists()


@pytest.mark.parametrize("nproc", [0, -2])
def test_nproc_below_one_is_refused_before_training(tmp_path: Path, nproc: int) -> None:
    with pytest.raises(ValueError, match=f"--nproc .* at least 1; got {nproc}"):
        run_comparison(cfg.Config(), ["uniform"], [0], tmp_path / "compare", nproc=nproc)
    assert not (tmp_path / "compare").exists()


def tiny_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "data": {"image_size": 16, "val_fraction": 0.15, "reference_fraction": 0.15},
                "features": {
                    "encoder": "pixels",
                    "image_size": 8,
                    "cache_dir": str(tmp_path / "cache"),
                },
                "optim": {"lr": 0.05},
                "train": {"epochs": 1, "batch_size": 50, "progress": False},
                "reference": {"epochs": 1},
            }
        )
    )
    return path


@pytest.mark.figures
def test_compare_end_to_end_then_resume_reruns_nothing_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import saln.experiments.compare
    import saln.report.build

    config, out = cfg.load(tiny_config(tmp_path)), tmp_path / "cmp"
    report = run_comparison(config, list(DEFAULT_METHODS), [0], out)
    assert set(report["methods"]) == set(DEFAULT_METHODS)
    assert (out / "report.html").exists() and (out / "selection_grid.png").exists()
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/summary.json")}
    # What follows is about what trains again: the figures, drawn above, are not redrawn.
    monkeypatch.setattr(saln.report.build, "draw", lambda runs, out, target: ({}, []))
    trained: list[str] = []
    original = saln.experiments.compare.fit
    monkeypatch.setattr(
        saln.experiments.compare,
        "fit",
        lambda c, p, **k: (trained.append(Path(p).name), original(c, p, **k))[1],
    )
    run_comparison(config, list(DEFAULT_METHODS), [0], out)
    assert trained == []
    assert stamps == {p: p.stat().st_mtime_ns for p in out.glob("runs/*/summary.json")}
    (out / "runs" / "jest-seed0" / "summary.json").unlink()  # as if killed before finishing
    run_comparison(config, list(DEFAULT_METHODS), [0], out)
    assert trained == ["jest-seed0"]
    only_saln = run_comparison(config, ["saln"], [0], out)  # complete: nothing trains
    assert trained == ["jest-seed0"] and set(only_saln["methods"]) == {"saln"}
    note = next(n for n in only_saln["notes"] if "left out" in n)
    assert "uniform-seed0" in note and "saln-seed0" not in note and "saln report" in note


def test_cli_report_rebuilds_without_training(
    synthetic: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from saln.cli import main

    assert main(["report", str(synthetic), "--out", str(synthetic / "r")]) == 0
    assert "standard" in capsys.readouterr().out and (synthetic / "r" / "report.md").exists()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Appended to a copy of the page: once it has loaded, record how many images decoded.
COUNT_DECODED = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  document.body.dataset.decoded = images.filter(i => i.complete && i.naturalWidth > 0).length;
});
</script>"""


@pytest.mark.slow
@pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="needs Debian's chromium (apt-get install chromium); .ci/run installs it",
)
@pytest.mark.figures
def test_html_report_renders_in_headless_chromium(synthetic: Path, tmp_path: Path) -> None:
    assert CHROMIUM is not None, "CI must run this test: .ci/run installs chromium"
    report = build_report([synthetic], synthetic / "report", target=0.84)
    tables = shown_tables(report)
    assert len(tables) == len(TABLES) - 1  # no frontier trained: its table is left out
    html = (synthetic / "report" / "report.html").read_text()
    page = tmp_path / "page.html"
    page.write_text(html.replace("</body>", COUNT_DECODED + "</body>"))
    base = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=10000",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run(
        [*base, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    images = html.count("<img")
    assert dom.stdout.count("<table") == len(tables) and images == 5
    assert f'data-decoded="{images}"' in dom.stdout  # every embedded picture decoded
    for title, _ in tables:  # every table a person reads, under its heading
        assert f"<h2>{escape(title, quote=False)}</h2><table>" in dom.stdout, title
    console_errors = [
        line for line in dom.stderr.splitlines() if "CONSOLE" in line and "ERROR" in line
    ]
    assert not console_errors, console_errors
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*base, f"--screenshot={shot}", "--window-size=1300,2000", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.stat().st_size > 20_000
    shot.unlink()


def test_a_missing_path_is_named_and_nothing_is_created(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ValueError, match="nope does not exist"):
        build_report([missing], missing)
    assert not missing.exists()


def test_the_environment_says_whether_the_code_differs_from_its_commit(tmp_path: Path) -> None:
    from saln.runs.environment import git_dirty, git_sha

    assert git_sha(tmp_path) is None and git_dirty(tmp_path) is None  # not a checkout
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "code.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "code.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "c"], check=True)
    assert git_sha(tmp_path) is not None and len(str(git_sha(tmp_path))) == 40
    assert git_dirty(tmp_path) is False
    (tmp_path / "scratch.txt").write_text("untracked files are not the code that ran\n")
    assert git_dirty(tmp_path) is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_dirty(tmp_path) is True


def test_runs_record_the_commit_of_the_code_loaded_not_a_later_head(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from saln.runs import environment as store

    store.loaded_code.cache_clear()
    monkeypatch.setattr(store, "git_sha", lambda: "a" * 40)
    first = store.environment(torch.device("cpu"))
    monkeypatch.setattr(store, "git_sha", lambda: "b" * 40)  # a commit while the process runs
    assert store.environment(torch.device("cpu"))["git_sha"] == first["git_sha"] == "a" * 40
    store.loaded_code.cache_clear()


@pytest.mark.parametrize("name", ["paper", "fixed_batch"])
def test_the_published_gpu_reports_rebuild_from_their_archived_runs(
    tmp_path: Path, name: str
) -> None:
    """Runs written by earlier versions load as typed records, and the published report comes
    back unchanged (the selection grid aside: it needs the CIFAR-10 images)."""
    archive = REPO / "benchmarks" / "results" / "cifar10_gpu_runs.tar.xz"
    with tarfile.open(archive) as runs:
        runs.extractall(tmp_path / "runs", filter="data")
    out = tmp_path / "report"
    build_report([tmp_path / "runs" / f"cifar10_{name}"], out)
    published = REPO / "docs" / "results" / "cifar10" / name

    def shown(report: Path) -> str:
        lines = report.read_text().splitlines()
        kept = [x for x in lines if "selection grid" not in x and "selection of one batch" not in x]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(kept))

    assert shown(out / "report.md") == shown(published / "report.md")
    rebuilt, before = (json.loads((p / "summary.json").read_text()) for p in (out, published))
    assert rebuilt["methods"].keys() == before["methods"].keys()
    for method, row in rebuilt["methods"].items():
        for key, value in row.items():
            if key == "vs_uniform" and value:  # p from scipy's t-test: the last digits differ
                assert value["p"] == pytest.approx(before["methods"][method][key]["p"], rel=1e-9)
                value = {**value, "p": before["methods"][method][key]["p"]}
            assert value == before["methods"][method][key], (method, key)


def test_the_headline_names_the_method_that_reached_the_target_first(synthetic: Path) -> None:
    """At 0.84, standard reaches it at 30 and 24 s (27 s), saln at 11.5 and 10 s (10.75 s, its
    4 s extraction included), uniform never: saln first, 27 / 10.75 = 2.51x faster."""
    report = build_report([synthetic], synthetic / "report", target=0.84)
    facts = report["headline"]
    assert facts["method"] == "saln"
    assert facts["seconds"] == pytest.approx(10.75) and facts["standard_seconds"] == 27.0
    assert facts["speedup"] == pytest.approx(27 / 10.75)
    first = (synthetic / "report" / "report.md").read_text().splitlines()[2]
    assert first.startswith("**saln** reached the target first: 10.8 s against standard's 27.0 s")
    assert "No budget-matched control here: add standard_matched@saln" in first


def test_the_headline_judges_the_fastest_against_its_budget_matched_control(
    synthetic: Path,
) -> None:
    split = json.loads((synthetic / "runs" / "saln-seed0" / "split.json").read_text())
    # standard training on saln's examples: the same 0.70/0.71 test accuracy, reached later
    SYNTHETIC["standard_matched@saln"] = {
        0: (5.0, [0.30, 0.60, 0.85], 0.70, 0.0),
        1: (5.0, [0.35, 0.65, 0.86], 0.71, 0.0),
    }
    try:
        for seed in (0, 1):
            write_run(synthetic, "standard_matched@saln", seed, split)
    finally:
        del SYNTHETIC["standard_matched@saln"]
    report = build_report([synthetic], synthetic / "report", target=0.84)
    facts = report["headline"]
    assert facts["budget_control"] == "standard_matched@saln"
    assert facts["vs_budget_control"]["verdict"] == "indistinguishable"
    assert facts["vs_budget_control"]["difference"] == pytest.approx(0.0)
    first = (synthetic / "report" / "report.md").read_text().splitlines()[2]
    assert (
        "Against standard_matched@saln (standard training on its examples): +0.00 points" in first
    )


def test_the_headline_says_when_no_method_beat_standard(synthetic: Path) -> None:
    for seed in (0, 1):
        shutil.rmtree(synthetic / "runs" / f"saln-seed{seed}")
    report = build_report([synthetic], synthetic / "report", target=0.84)
    assert report["headline"]["method"] is None
    first = (synthetic / "report" / "report.md").read_text().splitlines()[2]
    assert first == (
        "No method was faster than standard to the target beyond noise: none reached it on "
        "every seed."
    )


def test_the_headline_never_crowns_a_control() -> None:
    """Controls reaching the target first (any form of standard_matched, uniform with or without
    coverage) are not a saving: plain standard_matched was once named the winner."""
    from saln.report.aggregate import headline

    controls = ["standard_matched", "standard_matched@loss", "uniform", "uniform+coverage"]
    table = {"standard": row(27.0), **{m: row(5.0) for m in controls}, "loss": row(30.0)}
    assert headline(table)["method"] is None
    assert headline(table)["closest"]["method"] == "loss"
    table["loss"] = row(20.0)
    assert headline(table)["method"] == "loss"


def row(*seconds: float) -> dict[str, Any]:
    """A method's report row as the headline reads it: its times to the target, per seed."""
    times = seconds if len(seconds) > 1 else (seconds[0] - 0.1, seconds[0] + 0.1)
    return {
        "to_target": {"seconds": {"mean": sum(times) / len(times)},
                      "seconds_per_seed": list(times)},
        "budget_control": None,
        "vs_budget_control": None,
    }  # fmt: skip


def test_the_headline_refuses_to_crown_a_method_within_noise() -> None:
    """The digits default once crowned loss at 3.7 +- 0.9 s against standard's 3.9 +- 1.1 s."""
    from scipy import stats

    from saln.report.aggregate import headline
    from saln.report.render import headline as sentence

    standard, loss = (2.9, 3.8, 5.0), (2.9, 3.5, 4.7)
    table = {"standard": row(*standard), "loss": row(*loss)}
    facts = headline(table)
    assert facts["method"] is None
    closest = facts["closest"]
    assert closest["method"] == "loss" and not closest["every_seed_pair"]
    assert closest["p"] == pytest.approx(stats.ttest_ind(loss, standard, equal_var=False).pvalue)
    assert sentence({"headline": facts}).startswith(
        "No method was faster than standard to the target beyond noise. Closest: loss, 3.7 s"
    )
    # beyond noise by Welch (the seed ranges overlap, p < 0.05) or on every seed pair
    table["loss"] = row(2.0, 2.1, 3.0, 2.05, 2.1)
    table["standard"] = row(2.9, 3.0, 3.1, 3.0, 2.95)
    welch = headline(table)
    assert welch["method"] == "loss" and not welch["every_seed_pair"] and welch["p"] < 0.05
    table["loss"] = row(2.0, 2.8)
    table["standard"] = row(2.9, 9.0)
    paired = headline(table)
    assert paired["method"] == "loss" and paired["every_seed_pair"] and paired["p"] > 0.05


def test_run_labels_round_trip() -> None:
    from saln.runs.records import RunLabel

    for name in ("saln", "uniform+coverage", "standard_matched@infobatch", "standard"):
        assert str(RunLabel.parse(name)) == name
    assert RunLabel.parse("standard_matched@jest") == RunLabel("standard_matched", "jest")
    assert RunLabel.parse("uniform+coverage").is_control
    assert not RunLabel.parse("saln+coverage").is_control


def test_each_method_is_judged_against_its_budget_matched_control(synthetic: Path) -> None:
    """standard_matched at the selectors' filter ratio trains their examples: saln's 0.70/0.71
    against its 0.75/0.76 is t = -0.05 / sqrt(2 * 0.00005 / 2) = -7.07 on 2 degrees of freedom,
    p = 2 * (1 - 0.5 * (1 + 7.07 / sqrt(7.07**2 + 2))) = 0.0194: worse."""
    split = json.loads((synthetic / "runs" / "saln-seed0" / "split.json").read_text())
    SYNTHETIC["standard_matched"] = {
        0: (2.0, [0.40, 0.70, 0.80], 0.75, 0.0),
        1: (2.0, [0.40, 0.70, 0.80], 0.76, 0.0),
    }
    try:
        for seed in (0, 1):
            write_run(synthetic, "standard_matched", seed, split)
    finally:
        del SYNTHETIC["standard_matched"]
    methods = build_report([synthetic], synthetic / "report")["methods"]
    assert methods["saln"]["budget_control"] == "standard_matched"
    assert methods["saln"]["vs_budget_control"]["difference"] == pytest.approx(-0.05)
    assert methods["saln"]["vs_budget_control"]["p"] == pytest.approx(0.01942, abs=1e-4)
    assert [methods[m]["verdict_vs_budget"] for m in methods] == [
        "reference", "control", "indistinguishable", "worse"
    ]  # fmt: skip
    lines = (synthetic / "report" / "report.md").read_text().splitlines()
    table = lines.index(next(x for x in lines if x.startswith("## Against the budget-matched")))
    assert lines[table + 2 : table + 8] == [
        "| method | control | difference (points) | p | verdict |",
        "|---|---|---|---|---|",
        "| standard | n/a | n/a | n/a | reference |",
        "| standard_matched | n/a | n/a | n/a | control |",
        f"| uniform | standard_matched | +3.50 | {methods['uniform']['vs_budget_control']['p']:.3f}"
        " | indistinguishable |",
        "| saln | standard_matched | -5.00 | 0.019 | worse |",
    ]


def test_a_frontier_point_that_trains_a_methods_examples_is_its_budget_control() -> None:
    """standard_matched@infobatch trains round(examples / rows an epoch) whole epochs: InfoBatch's
    301,023 examples of 40,000-row epochs are 8, the 0.8 point of a 10-epoch frontier, the
    same run under another name; a method with a seed the point lacks, or whose seeds round to
    different epochs, has no twin."""
    from saln.report.aggregate import Run, RunSet, budget_control, budget_verdict

    def run(method: str, seed: int, examples: int, epochs: int, acc: float) -> Run:
        zeros = {f.name: 0 for f in fields(RunSummary) if f.default is MISSING}
        summary = RunSummary(**{**zeros, "method": method, "seed": seed, "epochs": epochs,
                                "examples_trained": examples, "test_acc_best": acc})  # fmt: skip
        return Run(Path(f"{method}-{seed}"), {}, summary, [])

    runs = RunSet([
        *(run("standard", s, 400_000, 10, 0.85) for s in (0, 1)),
        *(run("standard_matched@0.6", s, 240_000, 6, 0.82) for s in (0, 1)),
        *(run("standard_matched@0.8", s, 320_000, 8, 0.84 + s / 100) for s in (0, 1)),
        run("infobatch", 0, 301_023, 10, 0.83), run("infobatch", 1, 318_000, 10, 0.84),
        run("loss", 0, 301_023, 10, 0.8), run("loss", 2, 301_023, 10, 0.8),
        run("jest", 0, 301_023, 10, 0.8), run("jest", 1, 280_000, 10, 0.8),
    ])  # fmt: skip
    assert budget_control("infobatch", runs) == "standard_matched@0.8"
    verdict = budget_verdict("infobatch", runs)["vs_budget_control"]
    assert verdict["difference"] == pytest.approx(0.835 - 0.845)
    assert budget_control("loss", runs) is None  # seed 2 has no frontier run
    assert budget_control("jest", runs) is None  # 7.53 and 7.0 epochs: no one point
    assert budget_control("standard_matched@0.8", runs) is None


def test_the_report_judges_each_method_against_standards_frontier(synthetic: Path) -> None:
    """Standard's frontier per seed: (12 s, 0.80), (24 s, 0.86) and its full run (30 s, 0.88;
    36 s, 0.90). saln's 11.5 and 10 s are left of it, held to the 0.80 point: 0.70 and 0.71
    are below it; uniform is a control and is not judged."""
    split = json.loads((synthetic / "runs" / "saln-seed0" / "split.json").read_text())
    points = {"standard_matched@0.4": (4.0, 0.80), "standard_matched@0.8": (8.0, 0.86)}
    for method, (per_epoch, accuracy) in points.items():
        SYNTHETIC[method] = {s: (per_epoch, [0.5, 0.7, 0.8], accuracy, 0.0) for s in (0, 1)}
    try:
        for method in points:
            for seed in (0, 1):
                write_run(synthetic, method, seed, split)
    finally:
        for method in points:
            del SYNTHETIC[method]
    report = build_report([synthetic], synthetic / "report", target=0.84)
    saln = report["methods"]["saln"]["vs_frontier"]
    assert saln["frontier_acc"] == pytest.approx([0.80, 0.80]) and saln["verdict"] == "below"
    assert saln["difference"] == pytest.approx(0.705 - 0.80)
    assert report["methods"]["uniform"]["vs_frontier"] is None
    assert (synthetic / "report" / "frontier.png").exists()
    first = (synthetic / "report" / "report.md").read_text().splitlines()[2]
    p = saln["p"]
    assert p < 0.05
    assert first.endswith(f"Against standard's frontier at its total time: -9.50 points, "
                          f"p = {p:.3f}: below.")  # fmt: skip
    # The same frontier on another cost: examples trained (60 for every shorter run here).
    from saln.report import aggregate

    runs = aggregate.load_runs([synthetic])
    by_examples = aggregate.standard_frontier(runs, lambda r: float(r.summary.examples_trained))
    assert sorted(by_examples[0]) == [(60.0, 0.80), (60.0, 0.86), (300.0, 0.88)]
