"""Publish one comparison (``saln compare --out RUNS``) as a results folder.

    python -m tools.publish_comparison runs/fast_cifar10_study docs/results/fast_cifar10_cpu/study
    python -m tools.publish_comparison runs/variants/prune0.3 \
        docs/results/fast_cifar10_cpu/prune0.3 --records runs/fast_ib03 runs/fast_frontier09

The report (markdown, PNGs, summary.json and .csv; no HTML) is rebuilt from the runs into OUT,
with an env.json naming the code version, torch and machine of every run. Each finished run's
record (config.yaml, env.json, metrics.jsonl, summary.json, and the one batch's selection
where the run drew one) is copied into OUT/runs/<run>, so the published folder holds what its
numbers come from. ``--records FOLDER ...`` copies the runs of those comparison folders
instead: a variant's report, whose folder links to the main study's runs, publishes its own
runs and leaves the study's where they are published already.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from saln.io import write_bytes_atomic, write_json_atomic
from saln.report.build import build_report
from tools.publish_cifar10 import environments

ENV_KEYS = ("git_sha", "git_dirty", "torch", "python", "platform", "device", "cpu_threads", "gpu")
# what a finished run's numbers come from (and the one batch a report draws from the images);
# checkpoints and caches are its working files
RECORD_FILES = (
    "config.yaml", "env.json", "metrics.jsonl", "summary.json", "selection_example.json",
)  # fmt: skip


def publish(runs: list[Path], out: Path, records: list[Path] | None = None) -> dict[str, Any]:
    """``runs[0]``'s report (with the runs of the other folders beside it), environments and
    the records of the runs in the ``records`` folders (by default ``runs[0]``)."""
    report = build_report(runs, out)
    (out / "report.html").unlink(missing_ok=True)  # the markdown and PNGs are the record
    write_json_atomic(out / "env.json", environments(runs[0], ENV_KEYS))
    for folder in records or runs[:1]:
        copy_records(folder / "runs", out / "runs")
    return report


def copy_records(runs: Path, out: Path) -> list[Path]:
    """Copy each finished run's record files from ``runs`` into ``out/<run>`` (atomically,
    file by file; an unfinished run is skipped) and return the folders written."""
    copied = []
    for run in sorted(p for p in runs.iterdir() if p.is_dir()):
        if not (run / "summary.json").exists():
            continue
        for name in RECORD_FILES:
            if (run / name).exists():
                write_bytes_atomic(out / run.name / name, (run / name).read_bytes())
        copied.append(out / run.name)
    return copied


def folder_and_out_parser(description: str, what: str) -> argparse.ArgumentParser:
    """A publishing tool's parser: the folder of runs, and where the results go."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", type=Path, help=what)
    parser.add_argument("out", type=Path, help="where the published results go")
    return parser


def folder_and_out(description: str, what: str) -> argparse.Namespace:
    return folder_and_out_parser(description, what).parse_args()


def main(argv: list[str] | None = None) -> None:
    parser = folder_and_out_parser(__doc__ or "", "a folder `saln compare --out` wrote")
    parser.add_argument(
        "--records", type=Path, nargs="+", default=None, metavar="FOLDER",
        help="copy the run records of these comparison folders (default: RUNS)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    for folder in [args.runs, *(args.records or [])]:
        if not (folder / "runs").is_dir():
            parser.error(f"{folder} holds no runs/ folder: name one `saln compare --out` wrote")
    print(f"wrote {publish([args.runs], args.out, args.records)['report']}")


if __name__ == "__main__":
    main()
