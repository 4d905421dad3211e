"""A filter-ratio sweep's table and picture: test accuracy against the share of each batch
kept, per method, beside full training (the runs are trained by :mod:`saln.experiments.sweep`).

After "does a method beat its random control?" comes "how much can be dropped before it costs
accuracy?". Each ratio is an ordinary comparison folder (``OUT/ratio-0.8``: resumable, with its
own report and verdicts against ``uniform`` at that ratio); ``standard`` trains on everything
whatever the ratio, so it runs once, in ``OUT/full``, and each ratio's report includes it. The
sweep reads their ``summary.json`` files and writes ``sweep.json``, ``sweep.md`` and
``sweep.png`` into ``OUT``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from saln.errors import InvalidInput
from saln.io import write_json_atomic, write_text_atomic
from saln.report import plots
from saln.report.aggregate import in_method_order
from saln.report.render import control_cell, pm

RATIO_FREE = ("standard",)  # methods that train on every row whatever the filter ratio
FULL_DIR = "full"


def ratio_dir(out: Path, ratio: float) -> Path:
    return Path(out) / f"ratio-{ratio:g}"


def sweep_rows(folders: list[tuple[Path, float]]) -> list[dict[str, Any]]:
    """One row per (comparison folder, method), from each folder's summary.json, at the
    folder's filter ratio (standard_matched records 0, yet trains that share of the epochs)."""
    rows = []
    for folder, ratio in folders:
        path = folder / "summary.json"
        try:
            summary = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise InvalidInput(
                f"{path} is missing or unreadable ({err}); rerun the sweep to rebuild it"
            ) from None
        for method, row in summary["methods"].items():
            if method in RATIO_FREE and ratio:
                continue  # a ratio's report shows standard beside it; the table has it once
            rows.append(
                {
                    "folder": folder.name,
                    "method": method,
                    "filter_ratio": ratio,
                    "kept_share": 1.0 - ratio,
                    "convention": row.get("convention"),
                    "seeds": row["seeds"],
                    "test_acc_best": row["test_acc_best"],
                    "train_time_s": row["train_time_s"],
                    "examples_trained": row["examples_trained"],
                    "vs_uniform": row.get("vs_uniform"),
                }
            )
    order = in_method_order({r["method"] for r in rows})
    return sorted(rows, key=lambda r: (-r["kept_share"], order.index(r["method"])))


def write_sweep(out: Path, folders: list[tuple[Path, float]]) -> dict[str, Any]:
    rows = sweep_rows(folders)
    picture = plots.accuracy_vs_kept(rows, out / "sweep.png")
    result = {
        "rows": rows,
        "folders": {folder.name: ratio for folder, ratio in folders},
        "picture": picture.name,
    }
    write_json_atomic(out / "sweep.json", result)
    markdown = sweep_markdown(rows, picture.name)
    write_text_atomic(out / "sweep.md", markdown)
    table = "\n".join(line for line in markdown.splitlines() if line.startswith("|"))
    return {**result, "report": str(out / "sweep.md"), "table": table}


def _versus(row: dict[str, Any]) -> str:
    if row["method"] == "uniform":
        return "control"
    if not row["vs_uniform"]:
        return ""
    difference, p = control_cell(row, "difference"), control_cell(row, "p")
    return f"{difference} (p {p}): {row['vs_uniform']['verdict']}"


def sweep_markdown(rows: list[dict[str, Any]], picture: str) -> str:
    lines = [
        "# Filter-ratio sweep",
        "",
        "Test accuracy of the best-val model (%), mean ± std over seeds; against `uniform` at",
        "the same ratio: the difference in points, the two-sided Welch t-test's p and the",
        "verdict. Each ratio's full report is in its folder.",
        "",
        "| filter ratio | kept | method | seeds | test acc | time s | examples | vs uniform |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [
            f"{row['filter_ratio']:g}",
            f"{row['kept_share']:.0%}",
            row["method"],
            str(len(row["seeds"])),
            pm(row["test_acc_best"], 100),
            pm(row["train_time_s"], digits=1),
            f"{row['examples_trained']['mean']:,.0f}",
            _versus(row),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", f"![accuracy against the share kept]({picture})", ""])
