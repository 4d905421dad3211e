"""Publish one comparison (``saln compare --out RUNS``) as a results folder.

    python -m tools.publish_comparison runs/fast_cifar10_study docs/results/fast_cifar10_cpu/study

The report (markdown, PNGs, summary.json and .csv; no HTML) is rebuilt from the runs into OUT,
with an env.json naming the code version, torch and machine of every run.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from saln.io import write_json_atomic
from saln.report.build import build_report
from tools.publish_cifar10 import environments

ENV_KEYS = ("git_sha", "git_dirty", "torch", "python", "platform", "device", "cpu_threads", "gpu")


def publish(runs: list[Path], out: Path) -> dict[str, Any]:
    """``runs[0]``'s report (with the runs of the other folders beside it) and environments."""
    report = build_report(runs, out)
    (out / "report.html").unlink(missing_ok=True)  # the markdown and PNGs are the record
    write_json_atomic(out / "env.json", environments(runs[0], ENV_KEYS))
    return report


def folder_and_out(description: str, what: str) -> argparse.Namespace:
    """A publishing tool's arguments: the folder of runs, and where the results go."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", type=Path, help=what)
    parser.add_argument("out", type=Path, help="where the published results go")
    return parser.parse_args()


def main() -> None:
    args = folder_and_out(__doc__ or "", "a folder `saln compare --out` wrote")
    print(f"wrote {publish([args.runs], args.out)['report']}")


if __name__ == "__main__":
    main()
