"""A finished run's summary: what it trained, how well, and where the time went."""

from __future__ import annotations

from typing import Any

from saln.runs.records import TIME_PHASES, EpochRecord, RunSummary
from saln.train.methods import method_label
from saln.train.setup import RunContext


def run_summary(
    ctx: RunContext,
    history: list[EpochRecord],
    best: tuple[float, int],
    tests: dict[str, Any],
    selection: dict[str, Any],
) -> RunSummary:
    """The summary of a run from its per-epoch ``history``, its best validation accuracy and
    epoch, its test results and its selection statistics. Train time counts data wait,
    selection and steps; the total adds one-off costs (feature extraction, reference model)."""
    totals = {k: sum(getattr(r, f"time_{k}") for r in history) for k in TIME_PHASES}
    train_time = sum(r.train_time for r in history)
    last = history[-1]
    return RunSummary(
        method=method_label(ctx.config),
        seed=ctx.config.train.seed,
        dataset=ctx.config.data.dataset,
        split_seed=ctx.config.data.split_seed,
        convention=ctx.convention,
        filter_ratio=ctx.method.filter_ratio(ctx.config),
        loaded_batch=ctx.loaded_batch,
        kept_batch=ctx.keep,
        epochs=ctx.epochs,
        device=str(ctx.device),
        world_size=ctx.world_size,
        tta=ctx.config.eval.tta,
        final_train_loss=last.train_loss,
        final_train_acc=last.train_acc,
        final_val_loss=last.val_loss,
        final_val_acc=last.val_acc,
        best_val_acc=best[0],
        best_epoch=best[1] + 1,
        examples_trained=sum(r.examples for r in history),
        steps=sum(r.steps for r in history),
        time=totals,
        train_time_s=train_time,
        wall_time_s=sum(r.epoch_wall_s for r in history),
        one_off=ctx.one_off,
        feature_cache_hit=ctx.feature_cache_hit,
        total_time_s=train_time + sum(ctx.one_off.values()),
        selection_share_of_step=totals["selection"] / max(totals["step"], 1e-9),
        selection_flops_per_step=None
        if ctx.proxy is None
        else ctx.proxy.flops_per_step(ctx.loaded_batch, ctx.keep, ctx.config.data.image_size),
        **tests,
        **selection,
    )
