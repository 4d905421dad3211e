"""Publish the GPU CIFAR-10 comparison: the committed runs archive -> docs/results/cifar10/.

    python -m tools.publish_cifar10 [--archive benchmarks/results/cifar10_gpu_runs.tar.xz]

Each convention's report (markdown, PNGs, summary.json and .csv) is rebuilt from the archived
runs into OUT/paper and OUT/fixed_batch, with an env.json naming every code version, torch and
GPU the runs came from. Refuses (exit 2, naming the missing runs) unless every method has every
seed in both conventions; ``--partial`` publishes what there is. The archive is unpacked into
``--runs`` (emptied first; default runs/cifar10_gpu, git-ignored), so summary.json names runs by
a path that does not change between publications and ``saln report`` can read them afterwards.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tarfile
from itertools import pairwise
from pathlib import Path
from typing import Any

from saln.experiments.compare import DEFAULT_METHODS, run_dir
from saln.io import write_json_atomic
from saln.report.build import build_report

ROOT = Path(__file__).resolve().parents[1]
CONVENTIONS = {"cifar10_paper": "paper", "cifar10_fixed_batch": "fixed_batch"}
# cuda_graphs: what each run replayed ("null" in runs older than 08d4d70, whose scoring forward
# ran eagerly), so a table that mixes timing regimes says which runs
ENV_KEYS = ("git_sha", "torch", "torchvision", "python", "gpu", "cuda", "settings", "cuda_graphs")


def missing_runs(root: Path, methods: list[str], seeds: list[int]) -> list[str]:
    return [
        f"{convention}/{method}-seed{seed}"
        for convention in CONVENTIONS
        for method in methods
        for seed in seeds
        if not (run_dir(root / convention, method, seed) / "summary.json").exists()
    ]


def environments(folder: Path, keys: tuple[str, ...] = ENV_KEYS) -> dict[str, Any]:
    """What the runs of one folder ran on: each of ``keys`` with the runs that had each value."""
    seen: dict[str, dict[str, list[str]]] = {}
    for env_file in sorted(folder.glob("runs/*/env.json")):
        env = json.loads(env_file.read_text())
        argv = env.get("argv", [])
        env["settings"] = [value for flag, value in pairwise(argv) if flag == "--set"]
        for key in keys:
            value = env.get(key)
            value = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
            seen.setdefault(key, {}).setdefault(value, []).append(env_file.parent.name)
    return seen


def publish(root: Path, out: Path) -> list[Path]:
    written = []
    for convention, name in CONVENTIONS.items():
        folder = root / convention
        if not (folder / "runs").is_dir():
            continue
        target = out / name
        build_report([folder], target)
        (target / "report.html").unlink(missing_ok=True)  # the markdown and PNGs are the record
        write_json_atomic(target / "env.json", environments(folder))
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--archive", type=Path, default=ROOT / "benchmarks/results/cifar10_gpu_runs.tar.xz"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs/results/cifar10")
    parser.add_argument("--runs", type=Path, default=Path("runs/cifar10_gpu"), help="unpack here")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    parser.add_argument("--partial", action="store_true", help="publish an incomplete protocol")
    args = parser.parse_args(argv)
    if not args.archive.is_file():
        sys.exit(f"no runs archive at {args.archive}: run gpu_session.sh compare, then ingest")
    with tarfile.open(args.archive) as archive:
        ours = {name.split("/")[0] for name in archive.getnames()}
        present = {path.name for path in args.runs.iterdir()} if args.runs.is_dir() else set()
        others = sorted(present - ours)
        if others:  # emptied first: only ever a folder an earlier publication unpacked into
            sys.exit(
                f"--runs {args.runs} holds other files ({', '.join(others[:3])}): name another"
            )
        shutil.rmtree(args.runs, ignore_errors=True)  # no run of an older archive left behind
        archive.extractall(args.runs, filter="data")
    seeds = [int(s) for s in args.seeds.split(",")]
    missing = missing_runs(args.runs, args.methods.split(","), seeds)
    if missing and not args.partial:
        print(f"{len(missing)} runs missing: {', '.join(missing)}", file=sys.stderr)
        print("train them (gpu_session.sh compare) or pass --partial", file=sys.stderr)
        sys.exit(2)
    for folder in publish(args.runs, args.out):
        print(f"wrote {folder}/report.md")


if __name__ == "__main__":
    main()
