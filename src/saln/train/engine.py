"""The training loop: one readable function per level (fit -> epoch -> step)."""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from saln import distributed
from saln.config import Config, ConfigError, channels_last
from saln.errors import InvalidInput, UserError
from saln.io import save_npy_atomic
from saln.models import EpochAware
from saln.runs import RunStore
from saln.runs.environment import environment
from saln.runs.records import TIME_PHASES, EpochRecord, RunSummary
from saln.sampling import EpochPlan, epoch_seed
from saln.train import checkpoint, diagnostics, sharding
from saln.train.callbacks import Callback, ProgressBar, TensorBoardLogger
from saln.train.components import eval_batches, resolve_device, scoped_torch_state
from saln.train.placement import StepRows, row_choice, train_rows
from saln.train.schedules import EpochProgress
from saln.train.setup import RunContext, build_run
from saln.train.step import evaluate_batches
from saln.train.summary import run_summary
from saln.train.timing import PhaseTimer
from saln.train.tracking import EpochAccumulator, SelectionTracker, selection_summary

PROGRESS_EVERY = 25  # steps between progress-bar updates (each costs one host sync on GPU)


class TrainingDiverged(UserError, RuntimeError):
    """The loss became NaN/inf; the last good checkpoint is kept."""


def fit(
    config: Config,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: list[Callback] | None = None,
) -> RunSummary:
    """Train one method as configured, recording everything under ``out``; returns the summary.

    Under torchrun (a process group is initialised) every rank calls this; rank 0 alone writes,
    holding the folder for the whole run: a second writer fails at once.
    """
    sharding.check_same_config(config)
    store = RunStore(out, writer=distributed.rank() == 0)
    with ExitStack() as held:
        held.enter_context(scoped_torch_state(resolve_device(config.train.device)))

        def claim() -> str:
            held.enter_context(store.writing())
            try:
                return store.prepare(config, resume=resume, overwrite=overwrite)
            except BaseException:
                store.discard()  # a folder made only to be refused is not left behind
                raise

        state = distributed.on_rank0(claim)
        if state == "complete":
            return store.require_summary()
        return _train(config, store, state, callbacks)


def _train(
    config: Config, store: RunStore, state: str, callbacks: list[Callback] | None
) -> RunSummary:
    """Build the run, restore it when ``state`` is "resume", train its epochs and finish it."""
    rank = distributed.rank()
    try:
        ctx = build_run(config, rank, distributed.world_size())
    except BaseException:
        store.discard()
        raise
    data = {"train": ctx.bundle.train.fingerprint(), "test": ctx.bundle.test.fingerprint()}
    split = ctx.split.to_json()
    if state == "resume":
        store.check_data(data, split)  # before anything is written
    else:
        store.start(config)
    try:
        return _record_and_train(ctx, store, state, data, split, callbacks)
    except BaseException:
        store.put_back()  # a run --overwrite set aside, if the new one never checkpointed
        raise


def _record_and_train(
    ctx: RunContext,
    store: RunStore,
    state: str,
    data: dict[str, Any],
    split: dict[str, Any],
    callbacks: list[Callback] | None,
) -> RunSummary:
    store.write_json("env.json", {**environment(ctx.device), "cuda_graphs": ctx.cuda_graphs})
    store.record_data(data, split)
    hooks = _default_callbacks(ctx, store) + list(callbacks or [])
    tracker = SelectionTracker(ctx.bundle.train.labels, len(ctx.bundle.classes))
    history, best = _restore(ctx, store, tracker) if state == "resume" else ([], (-1.0, -1))
    for hook in hooks:
        hook.on_fit_start(
            {"method": ctx.method.name, "epochs": ctx.epochs, "resumed_at": len(history)}
        )
    try:
        for epoch in range(len(history), ctx.epochs):
            started = time.perf_counter()
            record, timer = run_epoch(ctx, epoch, tracker, hooks, store)
            with timer.phase("checkpoint"):
                improved = record.val_acc > best[0]
                best = (record.val_acc, epoch) if improved else best
                if store.writer:
                    model_state = checkpoint.cpu_state(distributed.unwrap(ctx.model))
                    if improved:
                        checkpoint.save_best(store.path, model_state)
                    checkpoint.save(
                        store.path,
                        _checkpoint_state(ctx, model_state, tracker, [*history, record], best),
                    )
            record = replace(
                record,
                **_phase_times(timer),
                epoch_wall_s=time.perf_counter() - started,
            )
            history.append(record)
            store.append_metrics(record)
            store.settle()  # an epoch is checkpointed: the run --overwrite replaced goes
            for hook in hooks:
                hook.on_epoch_end(epoch, record.to_dict())
        summary = _finish(ctx, store, history, best, tracker)
    except BaseException as err:
        for hook in hooks:
            hook.on_exception(err)
        raise
    for hook in hooks:
        hook.on_fit_end(summary.to_dict())
    return summary


def _phase_times(timer: PhaseTimer) -> dict[str, Any]:
    totals = timer.totals()
    return {f"time_{phase}": totals.get(phase, 0.0) for phase in TIME_PHASES}


def run_epoch(
    ctx: RunContext, epoch: int, tracker: SelectionTracker, hooks: list[Callback], store: RunStore
) -> tuple[EpochRecord, PhaseTimer]:
    """Train one epoch as planned; the record's checkpoint time and wall time come later."""
    seed, timer = ctx.config.train.seed, PhaseTimer(ctx.device)
    torch.manual_seed(epoch_seed(seed, epoch, 4))
    ctx.sampler.set_epoch(epoch)
    with timer.phase("selection"):
        ctx.planner.before_epoch(epoch)
        plan = ctx.sampler.plan_epoch()
    progress = EpochProgress(epoch, ctx.epochs, [len(rows) for rows in plan.rows])
    if isinstance(learner := distributed.unwrap(ctx.model), EpochAware):
        learner.start_epoch(epoch)
    for hook in hooks:
        hook.on_epoch_start(epoch, len(plan))
    # On the device, so JEST's noise is drawn where its scores are (no copy, no sync per step).
    gen = torch.Generator(device=ctx.device).manual_seed(epoch_seed(seed, epoch, 3))
    choose_rows = row_choice(ctx, epoch)
    acc = EpochAccumulator(ctx.device, len(plan))
    tracker.start_epoch()
    ctx.model.train()
    epoch_data = ctx.train_data.batches(
        plan.rows, train=True, seed=epoch_seed(seed, epoch, 2), epoch=epoch
    )
    batches = iter(epoch_data)
    check_every = 1 if ctx.device.type == "cpu" else ctx.config.train.check_every
    show_progress, epoch_start = ctx.config.train.progress and ctx.rank == 0, time.perf_counter()
    to_channels_last = channels_last(ctx.config, ctx.device.type)
    first: tuple[torch.Tensor, StepRows] | None = None  # the epoch's first step, for the report
    for step in range(len(plan)):
        with timer.phase("data"):
            batch = next(batches)
        with timer.phase("selection"):
            if ctx.proxy is not None:
                ctx.proxy.progress = progress.now()
            rows = choose_rows(ctx, batch, gen, epoch, step)
        images, labels, indices = batch
        if rows.positions is not None:
            images, labels = images[rows.positions], labels[rows.positions]
        first = first or (indices, rows)
        if to_channels_last:  # match the learner's memory format, or every conv converts its input
            images = images.contiguous(memory_format=torch.channels_last)
        with timer.phase("step"):
            ctx.rates.set(progress.now(), rows=len(labels))
            loss_sum, correct = train_rows(ctx, images, labels, indices, rows)
            progress.advance()
            if ctx.lookahead is not None:
                ctx.lookahead.after_step(progress.now().fraction)
            if rows.counted:
                acc.add(loss_sum, correct, len(labels), step)
                tracker.record(indices, rows.positions)
        trained = len(labels) if rows.counted else 0
        for hook in hooks:
            hook.on_batch_selected(epoch, step, len(plan.super_batches[step]), trained)
            hook.on_train_batch_end(epoch, step, trained)
        if show_progress and (step + 1) % PROGRESS_EVERY == 0:
            running = acc.running(time.perf_counter() - epoch_start)
            for hook in hooks:
                hook.on_progress(epoch, step, running)
        if (step + 1) % check_every == 0:
            _raise_if_diverged(acc, epoch, store)
    _raise_if_diverged(acc, epoch, store)
    if ctx.lookahead is not None and epoch == ctx.epochs - 1:
        ctx.lookahead.finish()  # the run ends on the average
    if epoch == ctx.epochs - 1 and first is not None:
        with timer.phase("checkpoint"):  # records, like the checkpoint itself
            _write_selection_records(store, plan, *first)
    with timer.phase("eval"):
        val_loss, val_acc = evaluate(ctx, ctx.split.val)
    planned = ctx.planner.end_epoch()
    train_loss, train_acc, trained_rows = acc.totals()
    times = timer.totals()
    trained_time = times.get("data", 0) + times.get("selection", 0) + times.get("step", 0)
    record = EpochRecord(
        epoch=epoch + 1,
        train_loss=train_loss,
        train_acc=train_acc,
        val_loss=val_loss,
        val_acc=val_acc,
        examples=trained_rows,
        steps=acc.steps,
        lr=ctx.optimizer.param_groups[0]["lr"],
        train_rows_per_s=trained_rows / max(trained_time, 1e-9),
        filter_ratio=None if ctx.schedule.is_default else ctx.schedule.ratio(epoch),
        **tracker.end_epoch(),
        **diagnostics.spectral_epoch_stats(plan),
        **planned,
        **_phase_times(timer),
    )
    for hook in hooks:
        hook.on_eval_end(epoch, {"val_loss": val_loss, "val_acc": val_acc})
    return record, timer


def _write_selection_records(
    store: RunStore, plan: EpochPlan, indices: torch.Tensor, rows: StepRows
) -> None:
    """The final epoch's first batch and what was kept of it, and SALN's spectral record."""
    if rows.scores is not None and rows.positions is not None:
        example = diagnostics.example_from_step(indices, rows.positions, rows.scores)
    else:
        example = diagnostics.example_from_plan(plan)
    store.write_json("selection_example.json", example)
    record = diagnostics.spectral_record(plan)
    if record:
        store.write_json("spectral.json", record)


def evaluate(ctx: RunContext, indices: np.ndarray, test: bool = False) -> tuple[float, float]:
    """Mean loss and accuracy over ``indices``, each rank scoring its shard."""
    shard = indices[ctx.rank :: ctx.world_size]
    data = ctx.test_data if test else ctx.train_data
    sums = torch.zeros(3, dtype=torch.float64, device=ctx.device)
    if len(shard):
        batches = eval_batches(data, shard, ctx.config.train.eval_batch_size)
        loss, acc, _ = evaluate_batches(
            distributed.unwrap(ctx.model), batches, ctx.config.train.amp, ctx.config.eval.tta
        )
        sums += torch.tensor(
            [loss * len(shard), acc * len(shard), len(shard)],
            device=ctx.device,
            dtype=torch.float64,
        )
    loss_sum, correct, rows = distributed.all_reduce(sums).tolist()
    return loss_sum / rows, correct / rows


def _raise_if_diverged(acc: EpochAccumulator, epoch: int, store: RunStore) -> None:
    step = acc.bad_step()
    if step is not None:
        kept = (
            f"the checkpoint of epoch {epoch} is kept"
            if epoch
            else "no epoch completed, so no checkpoint"
        )
        raise TrainingDiverged(
            f"the training loss became NaN/inf at epoch {epoch + 1}, step {step + 1}; {kept} in "
            f"{store.path}. Lower optim.lr or check the data"
        )


def _default_callbacks(ctx: RunContext, store: RunStore) -> list[Callback]:
    hooks: list[Callback] = []
    if ctx.config.train.progress and ctx.rank == 0:
        hooks.append(ProgressBar(ctx.method.name, ctx.epochs))
    if ctx.config.train.tensorboard and ctx.rank == 0:
        hooks.append(TensorBoardLogger(store.file("tensorboard")))
    return hooks


def _checkpoint_state(
    ctx: RunContext,
    model_state: dict[str, torch.Tensor],
    tracker: SelectionTracker,
    history: list[EpochRecord],
    best: tuple[float, int],
) -> dict[str, Any]:
    return {
        "model": model_state,
        "optimizer": ctx.optimizer.state_dict(),
        "lookahead": None if ctx.lookahead is None else ctx.lookahead.state_dict(),
        "proxy": None if ctx.proxy is None else ctx.proxy.state_dict(),
        "history": [r.to_dict() for r in history],
        "best": best,
        "tracker": tracker.state(),
        "planner": ctx.planner.state_dict(),
        "sampler": ctx.sampler.state_dict(),
        "world_size": ctx.world_size,
    }


def _restore(
    ctx: RunContext, store: RunStore, tracker: SelectionTracker
) -> tuple[list[EpochRecord], tuple[float, int]]:
    state = checkpoint.load(store.path)
    if state is None:
        trained = len(store.metrics())
        if trained:  # training again from scratch would record these epochs twice
            raise InvalidInput(
                f"{store.path} recorded {trained} epoch(s) in metrics.jsonl but has no "
                f"{checkpoint.CHECKPOINT} to resume them from: restore it, or start over with "
                "--overwrite"
            )
        return [], (-1.0, -1)
    if state.get("world_size", 1) != ctx.world_size:
        raise ConfigError(
            f"{store.path} was checkpointed with {state.get('world_size', 1)} process(es) and is "
            f"resumed with {ctx.world_size}; each rank trains its own super-batches, so the global "
            "batch is world_size x batch_size and changing it changes the run. Resume with the "
            "same number of processes (--nproc / --nproc_per_node), or start over with --overwrite"
        )
    distributed.unwrap(ctx.model).load_state_dict(state["model"])
    ctx.optimizer.load_state_dict(state["optimizer"])
    if ctx.proxy is not None and state.get("proxy"):
        ctx.proxy.load_state_dict(state["proxy"])
    if ctx.lookahead is not None:
        ctx.lookahead.load_state_dict(state.get("lookahead") or {"steps": 0, "average": {}})
    tracker.load(state["tracker"])
    ctx.planner.load_state_dict(state.get("planner", {}))
    ctx.sampler.load_state_dict(state.get("sampler", {}))
    done = len(state["history"])
    recorded = store.metrics()  # complete rows (with checkpoint time) where the writer got that far
    source = store.file("checkpoint.pt")
    checkpointed = [EpochRecord.from_dict(r, source) for r in state["history"]]
    history = recorded[:done] if len(recorded) >= done else checkpointed
    store.rewrite_metrics(history)
    return history, tuple(state["best"])


def _finish(
    ctx: RunContext,
    store: RunStore,
    history: list[EpochRecord],
    best: tuple[float, int],
    tracker: SelectionTracker,
) -> RunSummary:
    """Test the last and the best-val model (the test split's only use) and write summary.json."""
    everything = np.arange(len(ctx.bundle.test))
    test_loss_last, test_acc_last = evaluate(ctx, everything, test=True)
    distributed.barrier()  # rank 0 has written best_model.pt
    distributed.unwrap(ctx.model).load_state_dict(checkpoint.load_best(store.path))
    test_loss_best, test_acc_best = evaluate(ctx, everything, test=True)
    if store.writer:
        save_npy_atomic(store.file("selection_counts.npy"), tracker.epochs_kept)
    tests = {
        "test_acc_last": test_acc_last,
        "test_loss_last": test_loss_last,
        "test_acc_best": test_acc_best,
        "test_loss_best": test_loss_best,
    }
    summary = run_summary(ctx, history, best, tests, selection_summary(tracker, ctx.split.train))
    store.write_json("summary.json", summary.to_dict())
    return summary
