"""Build a comparison's report from stored runs: summary.json/csv, report.md/html, pictures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from saln.io import check_writable, remove_stale_temporaries, write_json_atomic, write_text_atomic
from saln.report import aggregate, plots, render, visualize
from saln.report.aggregate import RunSet
from saln.runs.records import RunLabel

GRID_METHODS = ("saln", "uniform", "loss", "rho_loss")


def build_report(
    paths: list[Path],
    out: str | Path,
    target: float | None = None,
    extra_notes: list[str] | None = None,
) -> dict[str, Any]:
    aggregate.check_target(target)  # these two before touching out: bad input creates nothing
    runs = aggregate.load_runs(paths)
    out = check_writable(Path(out), "out dir", "--out")
    remove_stale_temporaries(out)  # left by a report write that was killed
    report = aggregate.aggregate(runs, target)
    images, notes = draw(runs, out, report["target_val_acc"])
    if runs.incomplete:
        notes.append("incomplete runs left out: " + ", ".join(str(p) for p in runs.incomplete))
    notes += extra_notes or []
    report["notes"] = notes
    write_json_atomic(out / "summary.json", json.loads(aggregate.dump(report)))
    write_text_atomic(out / "summary.csv", render.csv_text(report))
    write_text_atomic(out / "report.md", render.markdown(report, images, notes))
    write_text_atomic(out / "report.html", render.page(report, images, notes))
    report["report"] = str(out / "report.md")
    return report


def draw(runs: RunSet, out: Path, target: float) -> tuple[dict[str, Path], list[str]]:
    images = {
        "Curves per method": plots.curves(runs, out / "curves.png"),
        "Validation accuracy against time and examples": plots.accuracy_vs_cost(
            runs, out / "accuracy_vs_cost.png", target
        ),
    }
    shares = [m for m in runs.methods() if RunLabel.parse(m).fraction is not None]
    if shares and runs.of("standard"):
        methods = [m for m in runs.methods() if RunLabel.parse(m).competes]
        images["Against standard's compute frontier"] = plots.frontier(
            runs, out / "frontier.png", {"points": ["standard", *shares], "methods": methods}
        )
    notes: list[str] = []
    first_seed = min(r.seed for r in runs.runs)
    examples = {}
    for method in GRID_METHODS:
        for run in runs.of(method):
            example = run.path / "selection_example.json"
            if run.seed == first_seed and example.exists():
                examples[method] = (run, json.loads(example.read_text()))
    if examples:
        try:
            images["The selection of one batch"] = visualize.selection_grid(
                examples, out / "selection_grid.png"
            )
        except (ValueError, OSError) as err:
            notes.append(f"selection grid skipped: the images could not be loaded ({err})")
    finals = {
        m: r for m in runs.methods() for r in runs.of(m)[:1] if (r.path / "best_model.pt").exists()
    }
    if finals:
        images["Final fully connected layer"] = visualize.weights_figure(
            finals, out / "fc_weights.png"
        )
    spectral = [r for r in runs.of("saln") if (r.path / "spectral.json").exists()]
    if spectral:
        records = [json.loads((r.path / "spectral.json").read_text()) for r in spectral]
        joined = {
            k: [v for x in records for v in x[k]]
            for k in ("gaps", "abs_fiedler_kept", "abs_fiedler_dropped")
        }
        recorded = all("top_entry_mass" in x for x in records)  # older runs did not record it
        images["SALN spectral diagnostics"] = plots.spectral(
            joined["gaps"],
            joined["abs_fiedler_kept"],
            joined["abs_fiedler_dropped"],
            out / "spectral.png",
            [v for x in records for v in x["top_entry_mass"]] if recorded else None,
        )
    return images, notes


def print_table(report: dict[str, Any]) -> None:
    _, columns = render.TABLES[0]
    header = ["method"] + [c for c, _ in columns] + ["verdict vs uniform"]
    body = [
        [*r, report["methods"][r[0]]["verdict_vs_uniform"]] for r in render.rows(report, columns)
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body, strict=True)]
    for line in [header, *body]:
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)))
