"""Publish a filter-ratio sweep (``saln sweep``) as a results folder.

    python -m tools.publish_sweep runs/cifar10_cpu_sweep docs/results/cifar10_cpu/ratio_sweep

Each ratio's report (markdown, PNGs, summary.json and .csv; no HTML) is rebuilt from its runs
into OUT/<folder> with an env.json naming the code version, torch and machine of every run and
the runs' records (``tools.publish_comparison``), and
the sweep's table, JSON and picture are rebuilt from those published summaries into OUT.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from saln.report.sweep import FULL_DIR, write_sweep
from tools.publish_comparison import folder_and_out
from tools.publish_comparison import publish as publish_comparison


def publish(sweep: Path, out: Path) -> Path:
    try:
        folders: dict[str, float] = json.loads((sweep / "sweep.json").read_text())["folders"]
    except (OSError, json.JSONDecodeError, KeyError) as err:
        sys.exit(f"{sweep} holds no readable sweep.json ({err}): run `saln sweep` there first")
    full = [sweep / FULL_DIR] if FULL_DIR in folders else []
    for name in folders:
        publish_comparison([sweep / name, *full] if name != FULL_DIR else full, out / name)
    return Path(
        write_sweep(out, [(out / name, ratio) for name, ratio in folders.items()])["report"]
    )


def main() -> None:
    args = folder_and_out(__doc__ or "", "a folder `saln sweep --out` wrote")
    print(f"wrote {publish(args.runs, args.out)}")


if __name__ == "__main__":
    main()
