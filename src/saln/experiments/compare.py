"""``saln compare``: train every method x seed with the same split and settings, then report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from saln import config as cfg
from saln.errors import InvalidInput
from saln.experiments.launch import launch_torchrun
from saln.io import check_writable
from saln.report import aggregate
from saln.report.build import build_report
from saln.runs import RunStore
from saln.runs.lock import writing
from saln.runs.records import RunLabel
from saln.train import METHODS, fit
from saln.train.methods import for_grid

# The paper's methods, its controls, InfoBatch and the proxy model, in the order reports show
# them; the repaired spectral selectors and class_stratified are asked for by name.
DEFAULT_METHODS = (
    "standard", "standard_matched", "infobatch", "uniform", "saln", "loss", "rho_loss", "jest",
    "proxy",
)  # fmt: skip


STANDARD_MATCHED = "standard_matched"
FRONTIER = (0.4, 0.6, 0.8)  # standard's 1.0 is its own run


def run_dir(out: Path, method: str, seed: int) -> Path:
    return out / "runs" / f"{method}-seed{seed}"


def run_comparison(
    base: cfg.Config,
    methods: list[str],
    seeds: list[int],
    out: str | Path,
    target: float | None = None,
    nproc: int = 1,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train every method x seed of ``base`` with the same split and settings (complete runs
    are skipped, unfinished ones resumed), then build the report. A run made with another
    config is refused, or retrained with ``overwrite``. One comparison writes to ``out`` at a
    time."""
    check_methods(methods)
    for seed in seeds:  # a bad seed fails here, before any folder is made
        cfg.from_dict({"train": {"seed": seed}}, base)
    check_schedule(base, methods)
    aggregate.check_target(target)  # before the training, not after it
    check_nproc(nproc)
    out = check_writable(Path(out), "out dir", "--out")
    with writing(out, "a comparison"):
        paths = train_grid(base, methods, seeds, out, nproc, overwrite)
        return build_report(paths, out, target, others_left_out(out, paths))


def train_grid(
    base: cfg.Config,
    methods: list[str],
    seeds: list[int],
    out: Path,
    nproc: int,
    overwrite: bool = False,
) -> list[Path]:
    """Train every method x seed of ``base`` into ``out/runs`` (complete runs are skipped,
    unfinished ones resumed) and return their directories. A budget-matched method
    (``standard_matched@M``) trains after M, with the examples M's run of that seed trained."""
    for seed in seeds:
        # budgets after the methods whose examples they take
        for method in sorted(methods, key=lambda m: RunLabel.parse(m).budget_of is not None):
            config = cfg.from_dict({"train": run_settings(method, seed, out)}, base)
            config = for_grid(config, METHODS.build(config.train.method))
            train_one(config, run_dir(out, method, seed), nproc, overwrite)
    return [run_dir(out, m, s) for s in seeds for m in methods]


def run_settings(method: str, seed: int, out: Path) -> dict[str, Any]:
    """The train settings of one run of a grid; a budget comes from the matched run's summary."""
    label = RunLabel.parse(method)
    if label.budget_of is None:
        return {"method": label.method, "seed": seed}
    if label.fraction is not None:
        return {"method": label.method, "seed": seed, "budget_fraction": label.fraction,
                "budget_of": label.budget_of}  # fmt: skip
    matched = RunStore(run_dir(out, label.budget_of, seed)).require_summary()
    return {
        "method": label.method,
        "seed": seed,
        "budget_examples": matched.examples_trained,
        "budget_of": label.budget_of,
    }


def check_methods(methods: list[str]) -> None:
    """Every name registered; ``standard_matched@M`` only beside M, whose budget it takes."""
    for method in methods:
        label = RunLabel.parse(method)
        name, budget_of = label.method, label.budget_of
        METHODS.get(name)  # an unknown name fails here, listing the valid ones
        if budget_of is None:
            continue
        if not METHODS.get(name)().matched_epochs:
            raise InvalidInput(f"{method}: only standard_matched takes another method's budget")
        if label.fraction is not None:
            check_fraction(label.fraction, method)
            continue
        METHODS.get(budget_of)
        if budget_of not in methods:
            raise InvalidInput(
                f"{method} trains on the examples {budget_of} trained: add {budget_of} to --methods"
            )


def check_fraction(fraction: float, named: str) -> None:
    if not 0.0 < fraction <= 1.0:
        raise InvalidInput(
            f"{named}: a frontier point trains standard for a share F of its epochs, F in "
            f"(0, 1]; got {fraction:g}"
        )


def with_frontier(methods: list[str], fractions: list[float]) -> list[str]:
    """``methods`` and, when standard is among them, ``standard_matched@F`` for each F not
    there yet: standard's compute frontier beside its full run."""
    for fraction in fractions:
        check_fraction(fraction, "--frontier")
    if "standard" not in methods:
        return methods
    points = [f"{STANDARD_MATCHED}@{f:g}" for f in fractions if f < 1.0]
    return methods + [p for p in points if p not in methods]


def check_schedule(base: cfg.Config, methods: list[str]) -> None:
    """A selection schedule (and coverage) is checked for every method it applies to, before
    any training; one that applies to none of them is refused rather than ignored."""
    built = (METHODS.build(RunLabel.parse(n).method) for n in methods)
    scheduled = [m for m in built if m.selector]
    for method in scheduled:
        method.schedule(base)
        method.check_coverage(base)
    if not scheduled and for_grid(base, METHODS.build("standard")) != base:
        raise cfg.ConfigError(
            "train.select_from/select_until/ratio_ramp/coverage steer a selector, and none of "
            f"--methods {','.join(methods)} has one: add a selecting method or drop them"
        )


def check_nproc(nproc: int) -> None:
    if nproc < 1:
        raise InvalidInput(f"--nproc is the number of processes per run, at least 1; got {nproc}")


def others_left_out(out: Path, paths: list[Path]) -> list[str]:
    """A note naming the complete runs in ``out`` that this comparison did not ask for: a call
    that adds methods to a folder reports only its own, which would otherwise read as if the
    folder had no control."""
    asked = set(paths)
    runs = sorted((out / "runs").glob("*"))
    others = [p.name for p in runs if p not in asked and RunStore(p).is_complete()]
    if not others:
        return []
    return [
        f"runs in {out} that this comparison left out: {', '.join(others)} "
        f"(`saln report {out}` reports every run there)"
    ]


def train_one(config: cfg.Config, path: Path, nproc: int, overwrite: bool = False) -> None:
    """Train one run unless it is complete with this config; a run with another config is
    refused, naming what differs, or with ``overwrite`` trained again."""
    store = RunStore(path)
    replace = store.exists() and bool(store.differences(config))
    if replace and not overwrite:
        store.check_config(config)  # raises, naming the settings that differ
    if store.is_complete() and not replace:
        print(f"skip {path.name}: complete")
        return
    if nproc > 1:
        launch_torchrun(config, path, nproc, overwrite=replace)
        return
    print(f"train {path.name}")
    fit(config, path, resume=store.exists() and not replace, overwrite=replace)
