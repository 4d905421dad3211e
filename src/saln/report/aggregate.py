"""Pure aggregation of stored runs into the comparison's numbers.

Means and sample standard deviations over seeds; speed-ups as per-seed ratios of training time
(same seed, same split, same initial learner), averaged; time and examples to a target val
accuracy; a verdict against the uniform control from a two-sided Welch t-test over seeds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saln.config import ConfigError, from_dict, unshared_settings
from saln.errors import InvalidInput
from saln.report.frontier import Point, frontier_verdict
from saln.report.significance import VERDICT_ALPHA, Stat, welch_p_value
from saln.runs.records import EpochRecord, RunLabel, RunSummary, budget_epochs
from saln.runs.store import RunStore, config_differences

# Settings that must agree for runs to be comparable: same data, same split.
SPLIT_KEYS = (
    ("data", "dataset"),
    ("data", "split_seed"),
    ("data", "val_fraction"),
    ("data", "reference_fraction"),
    ("data", "image_size"),
)


@dataclass
class Run:
    path: Path
    config: dict[str, Any]
    summary: RunSummary
    metrics: list[EpochRecord]

    @property
    def method(self) -> str:
        return self.summary.method

    @property
    def seed(self) -> int:
        return self.summary.seed


METHOD_ORDER = [
    "standard",
    "standard_matched",
    "infobatch",
    "uniform",
    "saln",
    "spectral",
    "spectral_strata",
    "class_stratified",
    "loss",
    "rho_loss",
    "jest",
    "proxy",
]


def in_method_order(methods: set[str]) -> list[str]:
    """References first, then the control, SALN and the model-aware methods; others by name.
    A variant (``uniform+coverage``, ``standard_matched@infobatch``) follows its method."""

    def rank(method: str) -> tuple[int, str]:
        base = RunLabel.parse(method).method
        return (METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER), method)

    return sorted(methods, key=rank)


@dataclass
class RunSet:
    runs: list[Run]
    incomplete: list[Path] = field(default_factory=list)

    def methods(self) -> list[str]:
        return in_method_order({r.method for r in self.runs})

    def of(self, method: str) -> list[Run]:
        return sorted((r for r in self.runs if r.method == method), key=lambda r: r.seed)


def expand_run_dirs(paths: list[Path]) -> list[Path]:
    """A run dir, a comparison dir (with runs/), or a folder of run dirs."""
    found: list[Path] = []
    for path in paths:
        path = Path(path)
        if (path / "sweep.json").exists():
            one = next(iter(sorted(path.glob("ratio-*"))), path / "ratio-0.8")
            raise InvalidInput(
                f"{path} is a filter-ratio sweep: report one ratio with `saln report {one}`, "
                "or rebuild its table by running the same `saln sweep` again (complete runs "
                "are not retrained)"
            )
        if (path / "config.yaml").exists() or (path / "metrics.jsonl").exists():
            found.append(path)
        elif (path / "runs").is_dir():
            found.extend(sorted(p for p in (path / "runs").iterdir() if p.is_dir()))
        elif path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.is_dir()))
        else:
            raise InvalidInput(
                f"{path} does not exist or is not a run directory or a folder of runs"
            )
    unique = {p.resolve(): p for p in reversed(found)}  # one run named twice counts once
    return [p for p in found if unique.get(p.resolve()) is p]


def load_runs(paths: list[Path]) -> RunSet:
    """Complete runs, plus the incomplete ones named; refuses runs of different data or splits."""
    runs, incomplete = [], []
    for path in expand_run_dirs(paths):
        store = RunStore(path)
        summary = store.summary()
        if summary is not None and not store.exists():
            raise InvalidInput(
                f"{path} holds a finished run (summary.json) without its config.yaml, so what it "
                "ran cannot be compared: restore config.yaml, or rerun it with --overwrite"
            )
        if summary is None:
            incomplete.append(path)
            continue
        config = store.config_dict()
        runs.append(Run(path, config, summary, store.metrics()))
    if not runs:
        raise InvalidInput(
            f"no complete runs among {', '.join(map(str, paths))}"
            + (f" (incomplete: {', '.join(map(str, incomplete))})" if incomplete else "")
        )
    check_comparable(runs)
    check_one_setting_per_method(runs)
    return RunSet(runs, incomplete)


# What may differ between the seeds of one method: the seed, and a budget-matched run's budget
# (each seed matches the examples of its own run of the other method).
SEED = frozenset({("train", "seed"), ("train", "budget_examples")})


def check_one_setting_per_method(runs: list[Run]) -> None:
    """A method's runs may differ only in their seed: averaging two filter ratios, or one seed
    twice, would print a mean and a spread that no setting has."""
    seen: dict[tuple[str, int], Path] = {}
    first_of: dict[str, tuple[Run, dict[str, Any]]] = {}
    for run in runs:
        twin = seen.setdefault((run.method, run.seed), run.path)
        if twin != run.path:
            raise InvalidInput(
                f"two runs of {run.method} seed {run.seed} ({twin} and {run.path}): report one"
            )
        setting = resolved(run.config)
        first, first_setting = first_of.setdefault(run.method, (run, setting))
        diffs = config_differences(first_setting, setting, ignore=SEED)
        if diffs:
            raise InvalidInput(
                f"runs of {run.method} differ in more than their seed ({first.path} and "
                f"{run.path}: {'; '.join(diffs[:3])}); report one setting per method, e.g. "
                "one comparison folder at a time"
            )


def resolved(config: dict[str, Any]) -> dict[str, Any]:
    """A stored config with the keys added since it was written read as their defaults."""
    try:
        return from_dict(config, stored=True).to_dict()
    except ConfigError:  # written by a version with keys this one no longer has: compare as is
        return config


def split_digest(run: Run) -> str:
    path = run.path / "split.json"
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12] if path.exists() else "missing"


def check_comparable(runs: list[Run]) -> None:
    first = runs[0]
    for run in runs[1:]:
        diffs = [
            f"{s}.{k}: {first.config[s][k]!r} vs {run.config[s][k]!r}"
            for s, k in SPLIT_KEYS
            if first.config[s][k] != run.config[s][k]
        ]
        if split_digest(run) != split_digest(first):
            diffs.append("split.json differs")
        if diffs:
            raise InvalidInput(
                f"runs {first.path} and {run.path} are not comparable ({'; '.join(diffs)}); "
                "report runs of one dataset and split at a time"
            )


def stat(runs: list[Run], key: str) -> Stat:
    return Stat(tuple(r.summary.value(key) for r in runs))


def one_off_seconds(run: Run) -> float:
    return run.summary.one_off_s


def speedup(runs: list[Run], baseline: list[Run]) -> Stat:
    """Per seed: baseline training time / this method's, for the seeds both have."""
    base = {r.seed: r.summary.train_time_s for r in baseline}
    return Stat(tuple(base[r.seed] / r.summary.train_time_s for r in runs if r.seed in base))


def to_target(run: Run, target: float) -> tuple[float, int] | None:
    """(seconds, examples) until val accuracy first reaches ``target``: cumulative training time
    (data + selection + step) plus the run's one-off costs; None if never reached."""
    seconds, examples = one_off_seconds(run), 0
    for record in run.metrics:
        seconds += record.train_time
        examples += record.examples
        if record.val_acc >= target:
            return seconds, examples
    return None


def target_stats(runs: list[Run], target: float) -> dict[str, Any]:
    reached = [to_target(r, target) for r in runs]
    hits = [x for x in reached if x is not None]
    if len(hits) < len(runs):
        return {"reached": f"{len(hits)}/{len(runs)}", "seconds": None, "examples": None}
    return {
        "reached": f"{len(hits)}/{len(runs)}",
        "seconds": Stat(tuple(h[0] for h in hits)).to_json(),
        "examples": Stat(tuple(float(h[1]) for h in hits)).to_json(),
        "seconds_per_seed": [h[0] for h in hits],
    }


@dataclass(frozen=True)
class ControlComparison:
    """A method against the uniform control on one summary key, over seeds."""

    difference: float  # method mean - control mean, in the key's unit
    p_value: float | None  # two-sided Welch t-test; None without >= 2 seeds on both sides
    verdict: str

    def to_json(self) -> dict[str, Any]:
        return {"difference": self.difference, "p": self.p_value, "verdict": self.verdict}


def compare_to_control(
    runs: list[Run], control: list[Run], key: str = "test_acc_best"
) -> ControlComparison:
    a, b = stat(runs, key), stat(control, key)
    difference = a.mean - b.mean
    if len(a.values) < 2 or len(b.values) < 2:
        return ControlComparison(difference, None, "no verdict (needs >= 2 seeds)")
    p = welch_p_value(a, b)
    if p >= VERDICT_ALPHA:
        return ControlComparison(difference, p, "indistinguishable")
    return ControlComparison(difference, p, "better" if difference > 0 else "worse")


def setting_differences(group: list[Run], control: list[Run]) -> list[str]:
    """How a selecting method's setting differs from the control's beyond method and seed, in
    the settings both methods read (a verdict compares equals only). The references
    (standard, standard_matched: filter ratio 0) are set against the control as they are."""
    if not group[0].summary.filter_ratio:
        return []
    ours, theirs = resolved(group[0].config), resolved(control[0].config)
    unshared = unshared_settings({ours["train"]["method"], theirs["train"]["method"]})
    return config_differences(theirs, ours, ignore=SEED | unshared | {("train", "method")})


def budget_control(method: str, runs: RunSet) -> str | None:
    """The control a method's saving is judged by: standard training with its schedule fully
    decayed over the method's examples. ``standard_matched@METHOD`` where the comparison has
    it, else ``standard_matched`` at the method's filter ratio (the same examples in either
    batch convention), else the frontier point that is the same run (``frontier_twin``); None
    for the standard runs themselves, or where none was run."""
    label = RunLabel.parse(method)
    if label.is_reference or label.method == "standard_matched":
        return None
    named = str(RunLabel("standard_matched", budget_of=method))
    if runs.of(named):
        return named
    ratio, matched = runs.of(method)[0].summary.filter_ratio, runs.of("standard_matched")
    if ratio and matched and matched[0].config["train"]["filter_ratio"] == ratio:
        return "standard_matched"
    return frontier_twin(method, runs)


def frontier_twin(method: str, runs: RunSet) -> str | None:
    """The frontier point ``standard_matched@F`` that is ``standard_matched@METHOD`` under
    another name: on every seed of the method it trained the whole epochs the matched run
    would train (``budget_epochs`` of the method's examples)."""
    group = runs.of(method)
    for name in runs.methods():
        if RunLabel.parse(name).fraction is None:
            continue
        point = {run.seed: run.summary for run in runs.of(name)}
        if all(r.seed in point and trains_budget_of(point[r.seed], r.summary) for r in group):
            return name
    return None


def trains_budget_of(point: RunSummary, run: RunSummary) -> bool:
    """Whether a frontier run trained the epochs a run matched to ``run``'s examples would."""
    if not point.epochs or not point.examples_trained:
        return False
    rows_per_epoch = point.examples_trained / point.epochs
    return budget_epochs(run.examples_trained, rows_per_epoch) == point.epochs


def budget_verdict(method: str, runs: RunSet) -> dict[str, Any]:
    """The row's ``budget_control``, ``vs_budget_control`` and ``verdict_vs_budget``."""
    control = budget_control(method, runs)
    if control is None:
        reasons = {"standard": "reference", "standard_matched": "control"}
        reason = reasons.get(RunLabel.parse(method).method, "no budget-matched run")
        return {"budget_control": None, "vs_budget_control": None, "verdict_vs_budget": reason}
    versus = compare_to_control(runs.of(method), runs.of(control))
    return {
        "budget_control": control,
        "vs_budget_control": versus.to_json(),
        "verdict_vs_budget": versus.verdict,
    }


def uniform_control(method: str) -> str:
    """The random control of a method: ``uniform``, with coverage where the method has it."""
    return str(RunLabel("uniform", coverage=RunLabel.parse(method).coverage))


def control_verdict(method: str, comparison: ControlComparison | None) -> str:
    if method == uniform_control(method):
        return "control"
    return comparison.verdict if comparison else "no uniform control"


METRICS = {  # summary key -> column label
    "final_train_acc": "train acc (trained rows)",
    "final_val_acc": "val acc",
    "best_val_acc": "best val acc",
    "final_train_loss": "train loss (trained rows)",
    "final_val_loss": "val loss",
    "test_acc_last": "test acc (last)",
    "test_acc_best": "test acc (best val)",
    "train_time_s": "training time s",
    "total_time_s": "total time s (incl. one-off)",
    "examples_trained": "examples trained",
    "steps": "steps",
    "selection_share_of_step": "selection / step",
    "share_ever_trained": "share of train set ever trained",
    "max_epochs_kept": "max epochs a sample was kept",
    "top1pct_mean_epochs_kept": "epochs kept, top 1% of samples",
    "class_entropy_trained": "class entropy trained (nats)",
    "class_entropy_split": "class entropy of split (nats)",
}


# How the target val accuracy was chosen, as the report's preamble says it.
TARGET_BASES = {
    "set": "set with --target",
    "standard": "standard's best val accuracy minus one point",
    "all runs": "no standard run: the mean best val accuracy of all runs minus one point",
}


def default_target(runs: RunSet, offset: float = 0.01) -> tuple[float, str]:
    """Standard's mean best val accuracy minus ``offset``, else all runs'; and which it was."""
    standard = runs.of("standard")
    base = standard or runs.runs
    return stat(base, "best_val_acc").mean - offset, "standard" if standard else "all runs"


def check_target(target: float | None) -> None:
    """A target is a val accuracy as the runs record it: a fraction, not a percentage."""
    if target is not None and not 0.0 < target <= 1.0:
        raise InvalidInput(
            f"the target val accuracy is a fraction in (0, 1], got {target}: pass 0.95 for 95%"
        )


def aggregate(runs: RunSet, target: float | None = None) -> dict[str, Any]:
    check_target(target)
    target, basis = default_target(runs) if target is None else (target, "set")
    standard = runs.of("standard")
    frontier = standard_frontier(runs)
    table: dict[str, Any] = {}
    for method in runs.methods():
        group = runs.of(method)
        control = runs.of(uniform_control(method))
        row: dict[str, Any] = {key: stat(group, key).to_json() for key in METRICS}
        row["seeds"] = [r.seed for r in group]
        row["one_off_s"] = Stat(tuple(one_off_seconds(r) for r in group)).to_json()
        for part in ("feature_extraction_s", "reference_training_s", "reference_scoring_s"):
            values = tuple(r.summary.one_off.get(part, 0.0) for r in group)
            row[part] = Stat(values).to_json()
        row["speedup_vs_standard"] = speedup(group, standard).to_json() if standard else None
        row["speedup_vs_uniform"] = speedup(group, control).to_json() if control else None
        row["to_target"] = target_stats(group, target)
        judged = bool(control) and method != uniform_control(method)
        mismatch = setting_differences(group, control) if judged else []
        comparison = compare_to_control(group, control) if judged and not mismatch else None
        row["verdict_vs_uniform"] = (
            f"not comparable ({mismatch[0]})" if mismatch else control_verdict(method, comparison)
        )
        row["vs_uniform"] = comparison.to_json() if comparison else None
        row.update(budget_verdict(method, runs))
        row["vs_frontier"] = (
            frontier_verdict(points(group), frontier) if frontier and competes(method) else None
        )
        row["filter_ratio"] = group[0].summary.filter_ratio
        row["convention"] = group[0].summary.convention
        table[method] = row
    return {
        "target_val_acc": target,
        "target_basis": basis,
        "headline": headline(table),
        "methods": table,
        "incomplete": [str(p) for p in runs.incomplete],
        "runs": [str(r.path) for r in runs.runs],
        "dataset": runs.runs[0].config["data"]["dataset"],
    }


def faster_than(times: list[float], standard: list[float]) -> dict[str, Any]:
    """Whether times to the target beat standard's beyond noise: a lower mean, and Welch's
    t-test over seeds at p < VERDICT_ALPHA or every seed pair (each of this method's times
    below each of standard's)."""
    ours, theirs = Stat(tuple(times)), Stat(tuple(standard))
    enough = len(times) >= 2 and len(standard) >= 2
    p = welch_p_value(ours, theirs) if enough else None
    every_pair = max(times) < min(standard)
    lower = ours.mean < theirs.mean
    faster = lower and (every_pair or (p is not None and p < VERDICT_ALPHA))
    return {"faster": faster, "p": p, "every_seed_pair": every_pair, "seconds": ours.mean}


FRONTIER_KEY = "test_acc_best"  # the accuracy a frontier verdict compares


def total_time(run: Run) -> float:
    """The cost a frontier verdict charges: one-off costs and selection included."""
    return run.summary.total_time_s


def points(runs: list[Run], cost: Callable[[Run], float] = total_time) -> dict[int, Point]:
    """Each run's (cost, test accuracy), by seed."""
    return {r.seed: (cost(r), r.summary.value(FRONTIER_KEY)) for r in runs}


def standard_frontier(
    runs: RunSet, cost: Callable[[Run], float] = total_time
) -> dict[int, list[Point]]:
    """Standard's frontier per seed: its full run and its ``standard_matched@F`` runs; empty
    when the comparison trained no such point."""
    shares = [m for m in runs.methods() if RunLabel.parse(m).fraction is not None]
    if not shares or not runs.of("standard"):
        return {}
    frontier: dict[int, list[Point]] = {}
    for method in ["standard", *shares]:
        for seed, point in points(runs.of(method), cost).items():
            frontier.setdefault(seed, []).append(point)
    return frontier


def competes(method: str) -> bool:
    return RunLabel.parse(method).competes


def headline(table: dict[str, Any]) -> dict[str, Any]:
    """The answer to "which method reaches my accuracy in less time?": among the methods that
    compete (standard and the controls aside: :attr:`RunLabel.competes`) and reached the target
    on every seed, the fastest whose time to the target beats standard's beyond noise
    (:func:`faster_than`), time counting one-off costs and selection, with its speed-up and its
    verdict against its budget-matched control (:func:`budget_control`) where the comparison
    has one. When none does, the closest is named with its test."""

    def seconds(row: dict[str, Any]) -> list[float] | None:
        reached = row["to_target"]
        return reached.get("seconds_per_seed") if reached["seconds"] is not None else None

    standard = seconds(table["standard"]) if "standard" in table else None
    if standard is None:
        return {"method": None, "standard_seconds": None}
    standard_mean = Stat(tuple(standard)).mean
    tests = {
        m: faster_than(times, standard)
        for m, row in table.items()
        if RunLabel.parse(m).competes and (times := seconds(row)) is not None
    }
    faster = [m for m, test in tests.items() if test["faster"]]
    if not faster:
        closest = min(tests, key=lambda m: tests[m]["seconds"]) if tests else None
        nearest = None
        if closest is not None:
            nearest = {"method": closest, **tests[closest]}
            nearest["vs_frontier"] = table[closest].get("vs_frontier")
        return {"method": None, "standard_seconds": standard_mean, "closest": nearest}
    method = min(faster, key=lambda m: tests[m]["seconds"])
    return {
        "method": method,
        "seconds": tests[method]["seconds"],
        "standard_seconds": standard_mean,
        "speedup": standard_mean / tests[method]["seconds"],
        "p": tests[method]["p"],
        "every_seed_pair": tests[method]["every_seed_pair"],
        "budget_control": table[method]["budget_control"],
        "vs_budget_control": table[method]["vs_budget_control"],
        "vs_frontier": table[method].get("vs_frontier"),
    }


def dump(payload: dict[str, Any]) -> str:
    return json.dumps(payload, indent=2, default=lambda v: None)
