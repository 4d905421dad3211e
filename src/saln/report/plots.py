"""Training curves and comparison plots (matplotlib, PNG)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Literal

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from saln.report.aggregate import Run, RunSet, in_method_order, one_off_seconds
from saln.runs.records import SMALL_GAP, RunLabel

# One colour per method, kept when methods are added (a published picture keeps its colours).
# matplotlib's ten-colour cycle, one per method, and black beyond it
COLOURED = ["standard", "standard_matched", "uniform", "saln", "loss", "rho_loss", "jest",
            "infobatch", "spectral", "spectral_strata"]  # fmt: skip
COLOURS = {method: f"C{i}" for i, method in enumerate(COLOURED)} | {"class_stratified": "black"}


def subplots(
    *grid: int,
    figsize: tuple[float, float],
    layout: Literal["constrained", "compressed", "tight"] | None = None,
    **kwargs: Any,
) -> tuple[Figure, Any]:
    """A figure and its axes, without pyplot: no global figure registry and no backend to
    choose, so drawing a report changes nothing in the caller's matplotlib."""
    fig = Figure(figsize=figsize, layout=layout)
    return fig, fig.subplots(*grid, **kwargs)


def label_accuracy(ax: Axes, xlabel: str, title: str) -> None:
    """Label a plot of test accuracy against ``xlabel``."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy of the best-val model (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)


def save(fig: Figure, path: Path) -> Path:
    """Write the PNG atomically (render to memory, then one atomic write)."""
    from saln.io import write_bytes_atomic

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return write_bytes_atomic(path, buffer.getvalue())


def _series(runs: list[Run], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    length = min(len(r.metrics) for r in runs)
    values = np.array(
        [[getattr(record, key) for record in r.metrics[:length]] for r in runs], dtype=float
    )
    return np.arange(1, length + 1), values.mean(0), values.std(0)


def curves(runs: RunSet, path: Path) -> Path:
    """Accuracy and loss per epoch, train (rows trained) and val, one column per method."""
    methods = runs.methods()
    fig, axes = subplots(
        2, len(methods), figsize=(3.2 * len(methods), 5.6), squeeze=False, sharey="row"
    )
    for col, method in enumerate(methods):
        group = runs.of(method)
        for row, metric in enumerate(("acc", "loss")):
            ax = axes[row][col]
            for split, style in (("train", "--"), ("val", "-")):
                x, mean, std = _series(group, f"{split}_{metric}")
                ax.plot(x, mean, style, color=COLOURS.get(method), label=split)
                ax.fill_between(x, mean - std, mean + std, color=COLOURS.get(method), alpha=0.15)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
        axes[0][col].set_title(method)
    axes[0][0].set_ylabel("accuracy")
    axes[1][0].set_ylabel("loss")
    axes[0][0].legend()
    fig.suptitle("Train (on the rows trained) and validation curves; band = std over seeds")
    return save(fig, path)


def accuracy_vs_cost(runs: RunSet, path: Path, target: float) -> Path:
    """Val accuracy against training time (with one-off costs) and against examples trained."""
    fig, (by_time, by_examples) = subplots(1, 2, figsize=(11, 4.2))
    for method in runs.methods():
        for i, run in enumerate(runs.of(method)):
            seconds = one_off_seconds(run) + np.cumsum(
                [record.train_time for record in run.metrics]
            )
            examples = np.cumsum([record.examples for record in run.metrics])
            acc = [record.val_acc for record in run.metrics]
            label = method if i == 0 else None
            by_time.plot(
                seconds, acc, "-o", ms=3, color=COLOURS.get(method), label=label, alpha=0.85
            )
            by_examples.plot(
                examples, acc, "-o", ms=3, color=COLOURS.get(method), label=label, alpha=0.85
            )
    for ax, xlabel in (
        (by_time, "training time incl. one-off costs (s)"),
        (by_examples, "examples trained"),
    ):
        ax.axhline(target, color="grey", ls=":", lw=1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("val accuracy")
        ax.grid(alpha=0.3)
    by_time.legend(fontsize=8)
    fig.suptitle(f"Validation accuracy against cost (dotted: target {target:.3f})")
    return save(fig, path)


def frontier(runs: RunSet, path: Path, frontier: dict[str, list[str]]) -> Path:
    """Test accuracy against total time: standard's frontier (its full run and its shorter
    runs ``frontier["points"]``) as a line with its seed band, each method as a point with
    error bars over seeds."""
    fig, ax = subplots(1, 1, figsize=(7, 4.6))

    def spread(method: str) -> tuple[float, float, float, float]:
        group = runs.of(method)
        seconds = [r.summary.total_time_s for r in group]
        accuracy = [100 * r.summary.test_acc_best for r in group]
        return (float(np.mean(seconds)), float(np.std(seconds)),
                float(np.mean(accuracy)), float(np.std(accuracy)))  # fmt: skip

    line = sorted(spread(m) for m in frontier["points"])
    x, _, y, band = (np.array(v) for v in zip(*line, strict=True))
    ax.plot(x, y, "-o", color="black", label="standard's frontier")
    ax.fill_between(x, y - band, y + band, color="black", alpha=0.12)
    for method in frontier["methods"]:
        mx, sx, my, sy = spread(method)
        ax.errorbar(mx, my, xerr=sx, yerr=sy, fmt="o", capsize=3, label=method,
                    color=COLOURS.get(RunLabel.parse(method).method))  # fmt: skip
    title = "Each method against standard trained for as long (mean ± std over seeds)"
    label_accuracy(ax, "total time, one-off costs included (s)", title)
    return save(fig, path)


def spectral(
    gaps: list[float],
    kept: list[float],
    dropped: list[float],
    path: Path,
    top_mass: list[float] | None = None,
) -> Path:
    """SALN diagnostics: relative gap (l3 - l2) / l2 per batch; |Fiedler| of kept vs dropped;
    where recorded, the share of each batch's Fiedler vector on its largest entry."""
    panels = 2 if top_mass is None else 3
    fig, axes = subplots(1, panels, figsize=(5 * panels, 3.8))
    left, right = axes[0], axes[1]
    positive = np.clip(np.asarray(gaps), 1e-6, None)
    left.hist(
        positive,
        bins=np.logspace(-6, max(0.0, np.log10(positive.max()) + 0.1), 40),
        color="C3",
        histtype="stepfilled",  # one polygon, not 40 bars: the report draws in half the time
    )
    left.set_xscale("log")
    left.axvline(SMALL_GAP, color="k", ls=":", lw=1)
    left.set_xlabel("relative spectral gap (l3 - l2) / l2")
    left.set_ylabel("batches")
    share = np.mean(np.asarray(gaps) < SMALL_GAP)
    left.set_title(f"{share:.0%} of batches below {SMALL_GAP:g} (Fiedler vector not unique)")
    bins = np.linspace(0, max(max(kept, default=1), max(dropped, default=1)), 40)
    for values, label, colour in ((dropped, "dropped", "grey"), (kept, "kept", "C2")):
        right.hist(values, bins=bins, alpha=0.6, label=label, color=colour, density=True,
                   histtype="stepfilled")  # fmt: skip
    right.set_xlabel("|Fiedler entry| x sqrt(n)")
    right.set_ylabel("density")
    right.legend()
    if top_mass is not None:
        localisation(axes[2], np.asarray(top_mass))
    fig.suptitle("SALN spectral diagnostics (final epoch)")
    return save(fig, path)


def localisation(ax: Axes, top_mass: np.ndarray) -> None:
    """Histogram of the Fiedler vector's squared mass on its largest entry, one value per batch."""
    ax.hist(top_mass, bins=np.linspace(0, 1, 41).tolist(), color="C4", histtype="stepfilled")
    ax.set_xlabel("share of |Fiedler|^2 on the largest entry")
    ax.set_ylabel("batches")
    median, localised = float(np.median(top_mass)), float(np.mean(top_mass > 0.5))
    ax.set_title(f"median {median:.2f}; one sample holds > half in {localised:.0%} of batches")


def accuracy_vs_kept(rows: list[dict[str, Any]], path: Path) -> Path:
    """Test accuracy (best-val model) against the share of each batch kept, one line per
    method (mean, bars = std over seeds); a method run once (standard) is a dotted level."""
    fig, ax = subplots(figsize=(6.4, 4.2))
    for method in in_method_order({r["method"] for r in rows}):
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["kept_share"])
        kept = [r["kept_share"] for r in mine]
        mean = [100 * r["test_acc_best"]["mean"] for r in mine]
        std = [100 * (r["test_acc_best"]["std"] or 0.0) for r in mine]  # None: one seed
        colour = COLOURS.get(method)
        if len(mine) == 1:
            ax.axhline(mean[0], color=colour, ls=":", lw=1.2, label=f"{method} (all rows)")
        ax.errorbar(
            kept,
            mean,
            yerr=std,
            fmt="-o",
            ms=4,
            capsize=3,
            color=colour,
            label=None if len(mine) == 1 else method,
        )
    xlabel, title = (
        "share of each batch kept (1 - filter ratio)",
        "Filter-ratio sweep (bars: std over seeds)",
    )
    label_accuracy(ax, xlabel, title)
    return save(fig, path)
