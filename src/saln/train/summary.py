"""A finished run's summary.json: what it trained, how well, and where the time went."""

from __future__ import annotations

from typing import Any

from saln.train.setup import RunContext

TIME_PHASES = ("data", "selection", "step", "eval", "checkpoint")


def run_summary(
    ctx: RunContext,
    history: list[dict[str, Any]],
    best: tuple[float, int],
    tests: dict[str, float],
    selection: dict[str, Any],
) -> dict[str, Any]:
    """The summary of a run from its per-epoch ``history``, its best validation accuracy and
    epoch, its test results and its selection statistics. Train time counts data wait,
    selection and steps; the total adds one-off costs (feature extraction, reference model)."""
    totals = {k: sum(r.get(f"time_{k}", 0.0) for r in history) for k in TIME_PHASES}
    train_time = totals["data"] + totals["selection"] + totals["step"]
    one_off = ctx.one_off
    last = history[-1]
    return {
        "method": ctx.method.name,
        "seed": ctx.config.train.seed,
        "dataset": ctx.config.data.dataset,
        "split_seed": ctx.config.data.split_seed,
        "convention": ctx.convention,
        "filter_ratio": ctx.config.train.filter_ratio if ctx.selector is not None else 0.0,
        "loaded_batch": ctx.loaded_batch,
        "kept_batch": ctx.keep,
        "epochs": ctx.epochs,
        "device": str(ctx.device),
        "world_size": ctx.world_size,
        "final_train_loss": last["train_loss"],
        "final_train_acc": last["train_acc"],
        "final_val_loss": last["val_loss"],
        "final_val_acc": last["val_acc"],
        "best_val_acc": best[0],
        "best_epoch": best[1] + 1,
        **tests,
        "examples_trained": sum(r["examples"] for r in history),
        "steps": sum(r["steps"] for r in history),
        "time": totals,
        "train_time_s": train_time,
        "wall_time_s": sum(r["epoch_wall_s"] for r in history),
        "one_off": one_off,
        "feature_cache_hit": ctx.feature_cache_hit,
        "total_time_s": train_time + sum(one_off.values()),
        "selection_share_of_step": totals["selection"] / max(totals["step"], 1e-9),
        **selection,
    }
