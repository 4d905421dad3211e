"""Publish a repaired-spectral study (the sweeps ``tools/spectral_study.sh`` trains) as one table
per filter ratio, every selector set against the random control.

    python -m tools.spectral_study runs/spectral_c10 docs/results/spectral_cifar10_full_cpu

ROOT holds two sweeps: ``plain`` (standard in ``full/``, then uniform, saln, spectral,
spectral_strata and class_stratified in ``ratio-R/``) and ``coverage`` (the same selectors with
``train.coverage``, labelled METHOD+coverage). For each ratio found, each row is set against
``uniform`` (the question of the study: does any model-free selection beat a random subset?)
and, with coverage, against ``uniform+coverage`` too (does the selector add anything to
coverage?), by a two-sided Welch test over seeds on the test accuracy of the best-val model.
Beside the verdicts: the share of the training set ever trained, the class entropy of the rows
trained, and the final epoch's median Fiedler mass on each batch's top row (the ranking
selectors only). Writes OUT/study.json, OUT/study.md and each ratio's full report in
OUT/ratio-R (markdown, PNGs, summary, env.json); ratios or sweeps not trained yet are listed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from saln.io import write_json_atomic
from saln.report.aggregate import RunSet, Stat, compare_to_control, load_runs, stat
from saln.report.build import build_report
from saln.report.render import pm
from saln.report.sweep import FULL_DIR
from saln.runs.records import RunLabel
from tools.infobatch_study import verdict, write_study
from tools.publish_cifar10 import environments
from tools.publish_comparison import ENV_KEYS

SWEEPS = ("plain", "coverage")
GOAL_RATIO = 0.8  # the goal: a model-free selector better than uniform here, p < 0.05
# The test runs on any data set; the goal is met only by all of CIFAR-10.
GOAL_SCOPE = " (the issue's goal is judged on all of CIFAR-10)"
REFERENCES = ("standard", "uniform")  # rows that are not candidates for the goal


def ratio_folders(root: Path) -> dict[str, list[Path]]:
    """Each ``ratio-R`` name found in either sweep, with the folders that hold it."""
    found: dict[str, list[Path]] = {}
    for sweep in SWEEPS:
        for folder in sorted((root / sweep).glob("ratio-*")):
            if (folder / "runs").is_dir():
                found.setdefault(folder.name, []).append(folder)
    return found


def full_folders(root: Path) -> list[Path]:
    """The sweep's standard runs (``plain/full``), where they were trained."""
    full = root / "plain" / FULL_DIR
    return [full] if (full / "runs").is_dir() else []


def final_top_mass(runs: list[Any]) -> dict[str, Any] | None:
    """Over seeds, each final epoch's median (over batches) Fiedler mass on the top row."""
    values = [r.metrics[-1].top_entry_mass_median for r in runs if r.metrics]
    if not values or any(v is None for v in values):
        return None
    return Stat(tuple(values)).to_json()


def class_shares_trained(runs: list[Any]) -> list[float] | None:
    """Each class's share of every row the method trained, over all epochs and seeds."""
    histograms = [e.class_histogram for r in runs for e in r.metrics if e.class_histogram]
    if not histograms:
        return None
    totals = [sum(column) for column in zip(*histograms, strict=True)]
    return [count / sum(totals) for count in totals]


def row(runs: RunSet, method: str) -> dict[str, Any]:
    group = runs.of(method)
    out: dict[str, Any] = {
        "seeds": [r.seed for r in group],
        "test_acc": stat(group, "test_acc_best").to_json(),
        "share_ever_trained": stat(group, "share_ever_trained").to_json(),
        "class_entropy_trained": stat(group, "class_entropy_trained").to_json(),
        "class_entropy_split": stat(group, "class_entropy_split").to_json(),
        "top_entry_mass": final_top_mass(group),
        "class_shares_trained": class_shares_trained(group),
        "train_time_s": stat(group, "train_time_s").to_json(),
    }
    if method != "uniform" and runs.of("uniform"):
        out["vs_uniform"] = compare_to_control(group, runs.of("uniform")).to_json()
    own = str(RunLabel("uniform", coverage=True))
    if RunLabel.parse(method).coverage and method != own and runs.of(own):
        out["vs_uniform_coverage"] = compare_to_control(group, runs.of(own)).to_json()
    return out


def ratio_table(folders: list[Path], full: list[Path]) -> tuple[dict[str, Any], list[str]]:
    """Each method's row, and the runs still training (named, left out of the rows)."""
    runs = load_runs([*folders, *full])
    rows = {method: row(runs, method) for method in runs.methods()}
    return rows, [f"{p.parents[2].name}/{p.name}" for p in runs.incomplete]


def goal(rows: dict[str, Any]) -> dict[str, Any]:
    """Which model-free selectors beat uniform at p < 0.05; else the closest one."""
    candidates = {m: r["vs_uniform"] for m, r in rows.items() if m not in REFERENCES and
                  r.get("vs_uniform")}  # fmt: skip
    winners = [m for m, v in candidates.items() if v["verdict"] == "better"]
    best = max(candidates, key=lambda m: candidates[m]["difference"], default=None)
    return {"met": bool(winners), "better_than_uniform": winners, "closest": best}


def study(root: Path, folders: dict[str, list[Path]]) -> dict[str, Any]:
    full = full_folders(root)
    ratios: dict[str, Any] = {}
    for name, where in folders.items():
        rows, unfinished = ratio_table(where, full)
        ratios[name] = {
            "filter_ratio": float(name.removeprefix("ratio-")),
            "rows": rows,
            "unfinished": unfinished,
        }
        if ratios[name]["filter_ratio"] == GOAL_RATIO:
            ratios[name]["goal"] = goal(rows)
    missing = [f"{sweep}/{name}" for name in folders for sweep in SWEEPS
               if not (root / sweep / name / "runs").is_dir()]  # fmt: skip
    return {"root": str(root), "ratios": ratios, "missing": missing}


def goal_sentence(found: dict[str, Any], rows: dict[str, Any]) -> str:
    if found["met"]:
        winners = (f"{m} ({verdict(rows[m]['vs_uniform'])})" for m in found["better_than_uniform"])
        return (
            f"**Goal test passed on these runs**{GOAL_SCOPE}: better than uniform at p < 0.05: "
            + ", ".join(winners)
        )
    closest = found["closest"]
    tail = f"; the closest, {closest}: {verdict(rows[closest]['vs_uniform'])}" if closest else ""
    return (
        f"**Goal test failed on these runs**{GOAL_SCOPE}: no model-free selector is better "
        f"than uniform at p < 0.05{tail}."
    )


def markdown(result: dict[str, Any]) -> str:
    lines: list[str] = []
    for name, ratio in result["ratios"].items():
        lines += [
            f"## Filter ratio {ratio['filter_ratio']:g} ({name})",
            "",
            "| method | seeds | test acc (best val) | vs uniform (points, Welch) | vs "
            "uniform+coverage | share ever trained | class entropy trained (split) | Fiedler "
            "mass on top row | training time s |",
            "|---" * 9 + "|",
        ]
        for method, r in ratio["rows"].items():
            lines.append(
                f"| {method} | {len(r['seeds'])} | {pm(r['test_acc'], 100)} | "
                f"{verdict(r.get('vs_uniform'))} | {verdict(r.get('vs_uniform_coverage'))} | "
                f"{pm(r['share_ever_trained'], digits=3)} | "
                f"{pm(r['class_entropy_trained'], digits=3)} "
                f"({pm(r['class_entropy_split'], digits=3)}) | "
                f"{pm(r['top_entry_mass'], digits=3)} | {pm(r['train_time_s'], digits=0)} |"
            )
        if "goal" in ratio:
            lines += ["", goal_sentence(ratio["goal"], ratio["rows"])]
        if ratio["unfinished"]:
            lines += ["", "Still training, left out: " + ", ".join(ratio["unfinished"]) + "."]
        lines.append("")
    if result["missing"]:
        lines.append("Not trained yet: " + ", ".join(result["missing"]) + ".")
    return "\n".join(lines).rstrip() + "\n"


def publish_reports(full: list[Path], folders: dict[str, list[Path]], out: Path) -> None:
    for name, where in folders.items():
        build_report([*where, *full], out / name)
        (out / name / "report.html").unlink(missing_ok=True)  # the markdown and PNGs are the record
        env = {folder.parent.name: environments(folder, ENV_KEYS) for folder in where}
        write_json_atomic(out / name / "env.json", env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="the study's folder: plain/ and coverage/ sweeps")
    parser.add_argument("out", type=Path, help="where study.json, study.md and ratio-R/ go")
    args = parser.parse_args(argv)
    folders = ratio_folders(args.root)
    if not folders:
        sys.exit(f"{args.root} has no trained ratio-* folders: run tools/spectral_study.sh first")
    result = study(args.root, folders)
    args.out.mkdir(parents=True, exist_ok=True)
    publish_reports(full_folders(args.root), folders, args.out)
    write_study(args.out, result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
