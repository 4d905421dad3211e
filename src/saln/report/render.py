"""Report rendering: markdown, a self-contained HTML page (plots embedded), CSV."""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from saln.report.aggregate import TARGET_BASES

Cell = Callable[[dict[str, Any]], str]


def pm(stat: dict[str, Any] | None, scale: float = 1.0, digits: int = 2) -> str:
    """'mean ± std', or just the mean where there is no spread (one seed)."""
    if (
        not stat
        or stat.get("mean") is None
        or (isinstance(stat["mean"], float) and math.isnan(stat["mean"]))
    ):
        return "n/a"
    mean = stat["mean"] * scale
    if stat.get("std") is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {stat['std'] * scale:.{digits}f}"


def control_cell(row: dict[str, Any], field: str, versus: str = "vs_uniform") -> str:
    """The difference from a control (in points) or its p-value; n/a where none applies."""
    info = row.get(versus)
    if not info or info[field] is None:
        return "n/a"
    if field == "difference":
        return f"{info[field] * 100:+.2f}"
    return "< 0.001" if info[field] < 0.001 else f"{info[field]:.3f}"


def target_cell(row: dict[str, Any], field: str, digits: int) -> str:
    info = row["to_target"]
    if info[field] is None:
        return f"not reached ({info['reached']} seeds)"
    return pm(info[field], digits=digits)


# (title, [(column, cell)]) -- one definition drives markdown, HTML and CSV alike.
TABLES: list[tuple[str, list[tuple[str, Cell]]]] = [
    (
        "Accuracy, loss and time (the paper's tables; accuracy in %)",
        [
            ("train acc", lambda r: pm(r["final_train_acc"], 100)),
            ("val acc", lambda r: pm(r["final_val_acc"], 100)),
            ("train loss", lambda r: pm(r["final_train_loss"], digits=3)),
            ("val loss", lambda r: pm(r["final_val_loss"], digits=3)),
            ("test acc (last)", lambda r: pm(r["test_acc_last"], 100)),
            ("test acc (best val)", lambda r: pm(r["test_acc_best"], 100)),
            ("training time s", lambda r: pm(r["train_time_s"], digits=1)),
        ],
    ),
    (
        "Cost and speed-up",
        [
            (
                "speed-up vs standard",
                lambda r: pm(r["speedup_vs_standard"]) if r["speedup_vs_standard"] else "n/a",
            ),
            (
                "speed-up vs uniform",
                lambda r: pm(r["speedup_vs_uniform"]) if r["speedup_vs_uniform"] else "n/a",
            ),
            ("examples trained", lambda r: pm(r["examples_trained"], digits=0)),
            ("steps", lambda r: pm(r["steps"], digits=0)),
            ("feature extraction s", lambda r: pm(r["feature_extraction_s"], digits=1)),
            ("reference model s", lambda r: pm(r["reference_training_s"], digits=1)),
            ("selection / step", lambda r: pm(r["selection_share_of_step"])),
            ("total time s", lambda r: pm(r["total_time_s"], digits=1)),
        ],
    ),
    (
        "Time to the target val accuracy (training time + one-off costs)",
        [
            ("seconds", lambda r: target_cell(r, "seconds", 1)),
            ("examples", lambda r: target_cell(r, "examples", 0)),
        ],
    ),
    (
        "Against the uniform control at the same filter ratio (test acc of the best-val model; "
        "verdict at p < 0.05, two-sided Welch t-test over seeds)",
        [
            ("filter ratio", lambda r: f"{r['filter_ratio']}"),
            ("difference (points)", lambda r: control_cell(r, "difference")),
            ("p", lambda r: control_cell(r, "p")),
            ("verdict", lambda r: r["verdict_vs_uniform"]),
        ],
    ),
    (
        "Against the budget-matched control: standard training, its schedule fully decayed, on "
        "the method's examples (test acc of the best-val model; verdict at p < 0.05, two-sided "
        "Welch t-test over seeds)",
        [
            ("control", lambda r: r.get("budget_control") or "n/a"),
            ("difference (points)", lambda r: control_cell(r, "difference", "vs_budget_control")),
            ("p", lambda r: control_cell(r, "p", "vs_budget_control")),
            ("verdict", lambda r: r.get("verdict_vs_budget", "n/a")),
        ],
    ),
    (
        "Against standard's compute frontier: standard for 0.4-1.0 of its epochs, each decayed, "
        "interpolated at the method's total time (test acc of the best-val model; verdict at "
        "p < 0.05, two-sided Welch t-test over seeds)",
        [
            ("difference (points)", lambda r: control_cell(r, "difference", "vs_frontier")),
            ("p", lambda r: control_cell(r, "p", "vs_frontier")),
            ("verdict", lambda r: (r.get("vs_frontier") or {}).get("verdict", "n/a")),
        ],
    ),
    (
        "Selection diagnostics",
        [
            (
                "share of train set ever trained",
                lambda r: pm(r["share_ever_trained"], 100, 1) + "%",
            ),
            ("max epochs one sample was kept", lambda r: pm(r["max_epochs_kept"], digits=0)),
            (
                "epochs kept, top 1% of samples",
                lambda r: pm(r["top1pct_mean_epochs_kept"], digits=1),
            ),
            (
                "class entropy trained / split (nats)",
                lambda r: (
                    f"{pm(r['class_entropy_trained'], digits=3)} / "
                    f"{r['class_entropy_split']['mean']:.3f}"
                ),
            ),
        ],
    ),
]


def shown_tables(report: dict[str, Any]) -> list[tuple[str, list[tuple[str, Cell]]]]:
    """The tables with something to show: one whose every cell is n/a (the frontier's, in a
    comparison that trained none) is left out."""
    return [
        (title, columns)
        for title, columns in TABLES
        if any(cell != "n/a" for row in rows(report, columns) for cell in row[1:])
    ]


def rows(report: dict[str, Any], columns: list[tuple[str, Cell]]) -> list[list[str]]:
    return [
        [method] + [cell(row) for _, cell in columns] for method, row in report["methods"].items()
    ]


def preamble(report: dict[str, Any]) -> str:
    by_method = {m: tuple(row["seeds"]) for m, row in report["methods"].items()}
    seeds = sorted({s for run in by_method.values() for s in run})
    if len(set(by_method.values())) > 1:  # an unfinished comparison: say which seeds are in
        listed = "; ".join(f"{m} {', '.join(map(str, run))}" for m, run in by_method.items())
        spread = (
            f"Seeds differ between methods ({listed}): mean ± sample std over each method's "
            "own seeds; a method with one seed has no spread and no verdict."
        )
    elif len(seeds) > 1:
        spread = "Mean ± sample std over seeds " + ", ".join(map(str, seeds)) + "."
    else:
        spread = f"One seed ({seeds[0]}): no spread, so no verdicts; use --seeds 0,1,2."
    basis = TARGET_BASES[report["target_basis"]]
    return (
        f"Target val accuracy: {report['target_val_acc'] * 100:.2f}% ({basis}). "
        f"{spread} Times are training time (data wait + selection + step) in seconds; one-off "
        "costs (feature extraction, reference model) are listed apart and included in total time "
        "and time-to-target."
    )


def headline(report: dict[str, Any]) -> str:
    """One sentence: the method that reached the target first and whether that is a real
    saving (against the budget-matched control), or that none beat standard."""
    facts = report.get("headline") or {}
    if not facts.get("method"):
        if facts.get("standard_seconds") is None:
            return "Standard training did not reach the target on every seed: no speed-up to state."
        return no_method_faster(facts)
    said = (
        f"**{facts['method']}** reached the target first: {facts['seconds']:.1f} s against "
        f"standard's {facts['standard_seconds']:.1f} s ({facts['speedup']:.2f}x faster, one-off "
        f"costs and selection included; {beyond_noise(facts)})."
    )
    versus = facts.get("vs_budget_control")
    if versus is None:
        said += f" No budget-matched control here: add standard_matched@{facts['method']}."
    else:
        p = "no p (needs >= 2 seeds)" if versus["p"] is None else f"p = {versus['p']:.3f}"
        said += (
            f" Against {facts['budget_control']} (standard training on its examples): "
            f"{versus['difference'] * 100:+.2f} points of test accuracy, {p}: {versus['verdict']}."
        )
    return said + frontier_clause(facts.get("vs_frontier"))


def frontier_clause(versus: dict[str, Any] | None) -> str:
    """Where a method stands against standard's frontier at its own total time."""
    if not versus or versus.get("difference") is None:
        return ""
    p = "no p (needs >= 2 seeds)" if versus["p"] is None else f"p = {versus['p']:.3f}"
    return (
        f" Against standard's frontier at its total time: {versus['difference'] * 100:+.2f} "
        f"points, {p}: {versus['verdict']}."
    )


def beyond_noise(test: dict[str, Any]) -> str:
    if test["every_seed_pair"]:
        return "faster on every seed pair"
    return "no p (needs >= 2 seeds)" if test["p"] is None else f"Welch p = {test['p']:.3f}"


def no_method_faster(facts: dict[str, Any]) -> str:
    said = "No method was faster than standard to the target beyond noise"
    closest = facts.get("closest")
    if not closest:
        return f"{said}: none reached it on every seed."
    return (
        f"{said}. Closest: {closest['method']}, {closest['seconds']:.1f} s against standard's "
        f"{facts['standard_seconds']:.1f} s ({beyond_noise(closest)})."
        + frontier_clause(closest.get("vs_frontier"))
    )


def markdown(report: dict[str, Any], images: dict[str, Path], notes: list[str]) -> str:
    out = [
        f"# saln comparison: {report['dataset']}",
        "",
        headline(report),
        "",
        preamble(report),
        "",
    ]
    for title, columns in shown_tables(report):
        out += [
            f"## {title}",
            "",
            "| method | " + " | ".join(c for c, _ in columns) + " |",
            "|---" * (len(columns) + 1) + "|",
        ]
        out += ["| " + " | ".join(r) + " |" for r in rows(report, columns)]
        out.append("")
    for title, path in images.items():
        out += [f"## {title}", "", f"![{title}]({path.name})", ""]
    out += [f"- {note}" for note in notes]
    return "\n".join(out) + "\n"


def page(report: dict[str, Any], images: dict[str, Path], notes: list[str]) -> str:
    parts = [
        f"<h1>saln comparison: {html.escape(report['dataset'])}</h1>",
        f"<p>{html.escape(headline(report)).replace('**', '')}</p>",
        f"<p>{html.escape(preamble(report))}</p>",
    ]
    for title, columns in shown_tables(report):
        head = "".join(f"<th>{html.escape(c)}</th>" for c in ["method"] + [c for c, _ in columns])
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>"
            for r in rows(report, columns)
        )
        parts.append(
            f"<h2>{html.escape(title)}</h2><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        )
    for title, path in images.items():
        data = base64.b64encode(path.read_bytes()).decode()
        parts.append(
            f"<h2>{html.escape(title)}</h2>"
            f'<img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
        )
    if notes:
        parts.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1300px}"
        "table{border-collapse:collapse;margin-bottom:1em}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>saln report</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n"
    )


def csv_text(report: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    keys = [
        k
        for k, v in next(iter(report["methods"].values())).items()
        if isinstance(v, dict) and "mean" in v
    ]
    writer.writerow(
        [
            "method",
            "seeds",
            *[f"{k}_{s}" for k in keys for s in ("mean", "std")],
            "difference_vs_uniform",
            "p_vs_uniform",
            "verdict_vs_uniform",
            "to_target_reached",
        ]
    )
    for method, row in report["methods"].items():
        values = [v for k in keys for v in (row[k]["mean"], row[k]["std"])]
        writer.writerow(
            [
                method,
                " ".join(map(str, row["seeds"])),
                *values,
                *((row["vs_uniform"] or {}).get(k) for k in ("difference", "p")),
                row["verdict_vs_uniform"],
                row["to_target"]["reached"],
            ]
        )
    return buffer.getvalue()
