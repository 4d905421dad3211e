"""Publish an InfoBatch study (the comparisons ``tools/infobatch_study.sh`` trains) as one table.

    python -m tools.infobatch_study runs/c10 docs/results/infobatch_cifar10_full_cpu

ROOT holds four comparisons: ``infobatch`` (standard, infobatch and standard_matched@infobatch),
``matched_ratio`` (uniform and saln at the filter ratio that matches InfoBatch's measured
examples), ``prune0.3`` and ``prune0.7`` (infobatch at those prune ratios, each with its own
standard_matched@infobatch where it was trained). Each variant is
set against standard (test accuracy, Welch over seeds) and against its budget-matched control
where it has one, with its examples and its time as shares of standard's: training time (data,
selection, step) and wall time (every epoch's, evaluation and checkpoints included, plus
one-off costs). Writes OUT/study.json and OUT/study.md; the first comparison's full report is
rebuilt into OUT/report. Comparisons still missing are listed, not invented.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from saln.io import write_json_atomic, write_text_atomic
from saln.report.aggregate import RunSet, Stat, compare_to_control, load_runs, stat
from saln.report.build import build_report
from saln.report.render import pm
from saln.runs.records import RunLabel

GOAL_POINTS, GOAL_TIME = 0.3, 0.65  # the goal: within 0.3 points of standard at <= 0.65x time
MATCHED = str(RunLabel("standard_matched", budget_of="infobatch"))
# (comparison folder, method's label in it, its budget-matched control or None)
ROWS = [
    ("infobatch", "standard", None),
    ("infobatch", "infobatch", MATCHED),
    ("infobatch", MATCHED, None),
    ("prune0.3", "infobatch", MATCHED),
    ("prune0.3", MATCHED, None),
    ("prune0.7", "infobatch", MATCHED),
    ("prune0.7", MATCHED, None),
    ("matched_ratio", "uniform", None),
    ("matched_ratio", "saln", None),
]


def label(method: str, train: dict[str, Any]) -> str:
    """The row's name, with the settings that tell its variant apart."""
    if method == "infobatch":
        return f"infobatch (prune {train['prune_ratio']}, delta {train['infobatch_delta']})"
    if method in ("uniform", "saln"):
        return f"{method} at filter ratio {train['filter_ratio']}"
    if method == MATCHED:
        return f"{method} (prune {train['prune_ratio']})"
    return method


def wall_seconds(run: Any) -> float:
    """Everything a run cost: every epoch's wall time, and its one-off costs."""
    return sum(r.epoch_wall_s for r in run.metrics) + run.summary.one_off_s


def per_seed_ratio(runs: list[Any], base: list[Any], value: Any) -> dict[str, Any] | None:
    """Per seed, this method's value over standard's; None where standard recorded none (runs
    older than the epoch wall-time record)."""
    by_seed = {r.seed: value(r) for r in base}
    ratios = tuple(value(r) / by_seed[r.seed] for r in runs if by_seed.get(r.seed))
    return Stat(ratios).to_json() if ratios else None


def row(runs: RunSet, method: str, standard: list[Any], control: str | None) -> dict[str, Any]:
    group = runs.of(method)
    versus = compare_to_control(group, standard)
    out = {
        "seeds": [r.seed for r in group],
        "filter_ratio": group[0].config["train"]["filter_ratio"],
        "test_acc": stat(group, "test_acc_best").to_json(),
        "vs_standard": versus.to_json(),
        "examples_share": per_seed_ratio(group, standard, lambda r: r.summary.examples_trained),
        "train_time_share": per_seed_ratio(group, standard, lambda r: r.summary.train_time_s),
        "wall_time_share": per_seed_ratio(group, standard, wall_seconds),
        "wall_time_s": Stat(tuple(wall_seconds(r) for r in group)).to_json(),
    }
    if control and runs.of(control):
        out["vs_budget_control"] = {"control": control, **compare_to_control(
            group, runs.of(control)).to_json()}  # fmt: skip
    out["goal_missed_by"] = goal_misses(out)
    out["meets_goal"] = not out["goal_missed_by"]
    return out


def goal_misses(row: dict[str, Any]) -> list[str]:
    """What keeps a row from the goal: within 0.3 points of standard, at <= 0.65x its wall
    time, and better than its budget-matched standard (Welch, p < 0.05)."""
    misses = []
    if row["vs_standard"]["difference"] < -GOAL_POINTS / 100:
        misses.append(f"{row['vs_standard']['difference'] * 100:+.2f} points")
    wall = row["wall_time_share"]
    if wall is None or wall["mean"] > GOAL_TIME:
        misses.append("wall time unknown" if wall is None else f"{wall['mean']:.2f}x wall time")
    control = row.get("vs_budget_control")
    if control is None:
        misses.append("no budget-matched control")
    elif control["verdict"] != "better":
        misses.append(f"{control['verdict']} vs budget-matched")
    return misses


def same_budget(a: dict[str, Any], b: dict[str, Any], tolerance: float = 0.02) -> bool:
    """Whether two rows trained the same share of standard's examples (a random subset is the
    control of the InfoBatch setting whose examples chose its filter ratio, not of the others)."""
    return abs(a["examples_share"]["mean"] - b["examples_share"]["mean"]) <= tolerance


def study(root: Path) -> dict[str, Any]:
    folders = {name: root / name for name in ("infobatch", "matched_ratio", "prune0.3", "prune0.7")}
    missing = [str(p) for p in folders.values() if not (p / "runs").is_dir()]
    if not (folders["infobatch"] / "runs").is_dir():
        raise SystemExit(f"{folders['infobatch']} has no runs: train the study first")
    standard_runs = load_runs([folders["infobatch"]])
    standard = standard_runs.of("standard")
    rows: dict[str, Any] = {}
    for folder, method, control in ROWS:
        if str(folders[folder]) in missing:
            continue
        try:
            runs = standard_runs if folder == "infobatch" else load_runs([folders[folder]])
        except ValueError:  # nothing complete there yet
            missing.append(str(folders[folder]))
            continue
        if runs.of(method):
            found = row(runs, method, standard, control)
            found["runs"] = runs.of(method)
            rows[label(method, runs.of(method)[0].config["train"])] = found
    groups = {name: found.pop("runs") for name, found in rows.items()}
    uniform = next((n for n in rows if n.startswith("uniform")), None)
    for name, found in rows.items():
        if name.startswith("infobatch") and uniform and same_budget(found, rows[uniform]):
            versus = compare_to_control(groups[name], groups[uniform])
            found["vs_uniform_matched"] = versus.to_json()
        if not name.startswith("infobatch"):
            found["meets_goal"], found["goal_missed_by"] = None, []  # the goal is InfoBatch's
    return {"root": str(root), "rows": rows, "missing": missing}


def verdict(info: dict[str, Any] | None) -> str:
    if not info:
        return "-"
    p = "n/a" if info["p"] is None else ("< 0.001" if info["p"] < 0.001 else f"{info['p']:.3f}")
    return f"{info['difference'] * 100:+.2f}, p {p}: {info['verdict']}"


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| method | seeds | test acc (best val) | vs standard (points, Welch) | examples / "
        "standard | training time / standard | wall time / standard | vs budget-matched "
        "standard | vs uniform at InfoBatch's examples | goal: within 0.3 points, <= 0.65x wall "
        "time, better than budget-matched |",
        "|---" * 10 + "|",
    ]
    for name, r in result["rows"].items():
        reference = name == "standard"
        goal = {None: "-", True: "met", False: "missed: " + "; ".join(r["goal_missed_by"])}[
            r["meets_goal"]
        ]
        lines.append(
            f"| {name} | {len(r['seeds'])} | {pm(r['test_acc'], 100)} | "
            f"{'reference' if reference else verdict(r['vs_standard'])} | "
            f"{pm(r['examples_share'])} | {pm(r['train_time_share'])} | "
            f"{pm(r['wall_time_share'])} | {verdict(r.get('vs_budget_control'))} | "
            f"{verdict(r.get('vs_uniform_matched'))} | {goal} |"
        )
    if result["missing"]:
        lines += ["", "Not trained yet: " + ", ".join(result["missing"]) + "."]
    return "\n".join(lines) + "\n"


def write_study(out: Path, result: dict[str, Any], table: str) -> None:
    """A study's record (study.json) and table (study.md), each written atomically."""
    write_json_atomic(out / "study.json", result)
    write_text_atomic(out / "study.md", table)
    print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="the study's folder of comparisons")
    parser.add_argument("out", type=Path, help="where study.json, study.md and report/ go")
    args = parser.parse_args(argv)
    result = study(args.root)
    args.out.mkdir(parents=True, exist_ok=True)
    build_report([args.root / "infobatch"], args.out / "report")
    write_study(args.out, result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
