"""``saln sweep``: one comparison per filter ratio, then the sweep's table and picture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from saln import config as cfg
from saln.errors import InvalidInput
from saln.experiments.compare import check_nproc, check_schedule, train_grid
from saln.io import check_writable
from saln.report.build import build_report
from saln.report.sweep import FULL_DIR, RATIO_FREE, ratio_dir, write_sweep
from saln.runs.lock import writing
from saln.train import METHODS


def run_sweep(
    base: cfg.Config,
    ratios: list[float],
    methods: list[str],
    seeds: list[int],
    out: str | Path,
    nproc: int = 1,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train every method x seed of ``base`` at every filter ratio (complete runs are skipped,
    unfinished ones resumed), then write the sweep's table and picture; returns what
    sweep.json holds."""
    if not ratios or len(set(ratios)) != len(ratios):
        raise InvalidInput(f"give each filter ratio once, at least one; got {ratios}")
    if not methods:
        raise InvalidInput("name at least one method to sweep")
    for method in methods:
        METHODS.get(method)  # an unknown name fails here, before any training
    check_schedule(base, methods)
    check_nproc(nproc)
    # every ratio is validated before the first run starts
    at_ratio = {r: cfg.from_dict({"train": {"filter_ratio": r}}, base) for r in ratios}
    out = check_writable(Path(out), "out dir", "--out")
    with writing(out, "a sweep"):
        return _sweep(base, at_ratio, methods, seeds, out, nproc, overwrite)


def _sweep(
    base: cfg.Config,
    at_ratio: dict[float, cfg.Config],
    methods: list[str],
    seeds: list[int],
    out: Path,
    nproc: int,
    overwrite: bool,
) -> dict[str, Any]:
    varying = [m for m in methods if m not in RATIO_FREE]
    fixed = [m for m in methods if m in RATIO_FREE]
    folders = [(ratio_dir(out, r), r) for r in at_ratio] if varying else []
    full = train_grid(base, fixed, seeds, out / FULL_DIR, nproc, overwrite)
    if full:
        build_report(full, out / FULL_DIR)
    for folder, ratio in folders:  # each ratio's report also sets it against full training
        runs = train_grid(at_ratio[ratio], varying, seeds, folder, nproc, overwrite)
        build_report(runs + full, folder)
    return write_sweep(out, folders + ([(out / FULL_DIR, 0.0)] if full else []))
