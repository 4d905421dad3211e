"""The training loop: one readable function per level (fit -> epoch -> step)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from saln.config import Config, ConfigError
from saln.io import save_npy_atomic
from saln.report.store import RunStore, environment
from saln.sampling import epoch_seed
from saln.selection import BatchView, tail_keep
from saln.train import checkpoint, diagnostics, distributed
from saln.train.callbacks import Callback, ProgressBar, TensorBoardLogger
from saln.train.setup import RunContext, build_run, eval_batches
from saln.train.step import evaluate_batches
from saln.train.summary import run_summary
from saln.train.timing import PhaseTimer
from saln.train.tracking import EpochAccumulator, SelectionTracker, selection_summary

PROGRESS_EVERY = 25  # steps between progress-bar updates (each costs one host sync on GPU)


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf; the last good checkpoint is kept."""


def fit(
    config: Config,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: list[Callback] | None = None,
) -> dict[str, Any]:
    """Train one method as configured, recording everything under ``out``; returns the summary.

    Under torchrun (a process group is initialised) every rank calls this; rank 0 alone writes.
    """
    distributed.check_same_config(config)
    rank = distributed.rank()
    store = RunStore(out, writer=rank == 0)
    state = distributed.on_rank0(lambda: store.prepare(config, resume=resume, overwrite=overwrite))
    if state == "complete":
        return store.summary() or {}
    try:
        ctx = build_run(config, rank, distributed.world_size())
    except BaseException:
        store.discard()
        raise
    if state == "fresh":
        store.start(config)
    store.write_json("env.json", {**environment(ctx.device), "cuda_graphs": ctx.cuda_graphs})
    ctx.split.save(store.file("split.json"))
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
            row, timer = run_epoch(ctx, epoch, tracker, hooks, store)
            with timer.phase("checkpoint"):
                improved = row["val_acc"] > best[0]
                best = (row["val_acc"], epoch) if improved else best
                if store.writer:
                    model_state = checkpoint.cpu_state(distributed.unwrap(ctx.model))
                    if improved:
                        checkpoint.save_best(store.path, model_state)
                    checkpoint.save(
                        store.path,
                        _checkpoint_state(ctx, model_state, tracker, [*history, row], best),
                    )
            row.update(
                {f"time_{k}": v for k, v in timer.totals().items()},
                epoch_wall_s=time.perf_counter() - started,
            )
            history.append(row)
            store.append_metrics(row)
            for hook in hooks:
                hook.on_epoch_end(epoch, row)
        summary = _finish(ctx, store, history, best, tracker)
    except BaseException as err:
        for hook in hooks:
            hook.on_exception(err)
        raise
    for hook in hooks:
        hook.on_fit_end(summary)
    return summary


def run_epoch(
    ctx: RunContext, epoch: int, tracker: SelectionTracker, hooks: list[Callback], store: RunStore
) -> tuple[dict[str, Any], PhaseTimer]:
    seed, timer = ctx.config.train.seed, PhaseTimer(ctx.device)
    torch.manual_seed(epoch_seed(seed, epoch, 4))
    ctx.sampler.set_epoch(epoch)
    with timer.phase("selection"):
        plan = ctx.sampler.plan_epoch()
    for hook in hooks:
        hook.on_epoch_start(epoch, len(plan))
    # On the device, so JEST's noise is drawn where its scores are (no copy, no sync per step).
    gen = torch.Generator(device=ctx.device).manual_seed(epoch_seed(seed, epoch, 3))
    acc, last_epoch = EpochAccumulator(ctx.device, len(plan)), epoch == ctx.epochs - 1
    tracker.start_epoch()
    ctx.model.train()
    batches = iter(ctx.train_data.batches(plan, train=True, seed=epoch_seed(seed, epoch, 2)))
    check_every = 1 if ctx.device.type == "cpu" else ctx.config.train.check_every
    show_progress, epoch_start = ctx.config.train.progress and ctx.rank == 0, time.perf_counter()
    channels_last = ctx.device.type == "cuda" and ctx.config.train.channels_last
    for step in range(len(plan)):
        with timer.phase("data"):
            images, labels, indices = next(batches)
        loaded = len(ctx.sampler.last_super_batches[step])  # before any selection
        scale, counted, kept = 1.0, True, None  # kept: positions in the loaded batch (None: all)
        if ctx.model_aware:
            with timer.phase("selection"):
                example_to = store if last_epoch and step == 0 else None
                positions, scale = select_rows(
                    ctx, images, labels, indices, gen, epoch, step, example_to
                )
            if len(positions) == 0:  # global mode gave this rank no rows: a zero-weight step
                positions, scale, counted = positions.new_zeros(1), 0.0, False
            images, labels, kept = images[positions], labels[positions], positions
        if channels_last:  # match the learner's memory format, or every conv converts its input
            images = images.contiguous(memory_format=torch.channels_last)
        with timer.phase("step"):
            loss_sum, correct = ctx.step(images, labels, scale)
            if counted:
                acc.add(loss_sum, correct, len(labels), step)
                tracker.record(indices, kept)
        trained = len(labels) if counted else 0
        for hook in hooks:
            hook.on_batch_selected(epoch, step, loaded, trained)
            hook.on_train_batch_end(epoch, step, trained)
        if show_progress and (step + 1) % PROGRESS_EVERY == 0:
            running = acc.running(time.perf_counter() - epoch_start)
            for hook in hooks:
                hook.on_progress(epoch, step, running)
        if (step + 1) % check_every == 0:
            _raise_if_diverged(acc, epoch, store)
    _raise_if_diverged(acc, epoch, store)
    ctx.scheduler.step()
    if last_epoch and not ctx.model_aware and ctx.sampler.last_super_batches:
        with timer.phase("checkpoint"):  # records, like the checkpoint itself
            example = diagnostics.example_from_sampler(ctx.sampler, plan[0])
            store.write_json("selection_example.json", example)
            record = diagnostics.spectral_record(ctx.sampler)
            if record:
                store.write_json("spectral.json", record)
    with timer.phase("eval"):
        val_loss, val_acc = evaluate(ctx, ctx.split.val)
    train_loss, train_acc, rows = acc.totals()
    times = timer.totals()
    trained_time = times.get("data", 0) + times.get("selection", 0) + times.get("step", 0)
    row = {
        "epoch": epoch + 1,
        "train_loss": train_loss,
        "train_acc": train_acc,
        "val_loss": val_loss,
        "val_acc": val_acc,
        "examples": rows,
        "steps": acc.steps,
        "lr": ctx.optimizer.param_groups[0]["lr"],
        "train_rows_per_s": rows / max(trained_time, 1e-9),
        **tracker.end_epoch(),
        **diagnostics.spectral_epoch_stats(ctx.sampler),
    }
    for hook in hooks:
        hook.on_eval_end(epoch, {"val_loss": val_loss, "val_acc": val_acc})
    return row, timer


def select_rows(
    ctx: RunContext,
    images: torch.Tensor,
    labels: torch.Tensor,
    indices: torch.Tensor,
    gen: torch.Generator,
    epoch: int,
    step: int,
    record: RunStore | None,
) -> tuple[torch.Tensor, float]:
    """Model-aware selection: score the loaded rows without grad, keep the selector's choice.
    Returns (positions, loss scale); ``global`` mode under torchrun selects over all ranks."""
    assert ctx.selector is not None
    losses = ctx.score(images, labels)
    ref = None
    if ctx.ref_losses is not None:  # indices are pinned by the loaders on CUDA: no sync
        ref = ctx.ref_losses[indices.to(ctx.device, non_blocking=True)]
    view = BatchView(
        indices=indices, labels=labels, losses=losses, ref_losses=ref, epoch=epoch, step=step
    )
    keep = tail_keep(len(indices), ctx.keep, ctx.loaded_batch)
    if ctx.world_size > 1 and ctx.config.train.selection_mode == "global":
        positions, scale = distributed.global_select(ctx.selector, view, keep, gen)
    else:
        positions, scale = ctx.selector.select(view, keep, generator=gen).positions, 1.0
    positions = positions.to(images.device)
    if record is not None:
        scores = losses - ref if ref is not None else losses
        record.write_json(
            "selection_example.json", diagnostics.example_from_step(indices, positions, scores)
        )
    return positions, scale


def evaluate(ctx: RunContext, indices: np.ndarray, test: bool = False) -> tuple[float, float]:
    """Mean loss and accuracy over ``indices``, each rank scoring its shard."""
    shard = indices[ctx.rank :: ctx.world_size]
    data = ctx.test_data if test else ctx.train_data
    sums = torch.zeros(3, dtype=torch.float64, device=ctx.device)
    if len(shard):
        batches = eval_batches(data, shard, ctx.config.train.eval_batch_size)
        loss, acc, _ = evaluate_batches(
            distributed.unwrap(ctx.model), batches, ctx.config.train.amp
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
    history: list[dict[str, Any]],
    best: tuple[float, int],
) -> dict[str, Any]:
    return {
        "model": model_state,
        "optimizer": ctx.optimizer.state_dict(),
        "scheduler": ctx.scheduler.state_dict(),
        "history": history,
        "best": best,
        "tracker": tracker.state(),
        "world_size": ctx.world_size,
    }


def _restore(
    ctx: RunContext, store: RunStore, tracker: SelectionTracker
) -> tuple[list[dict[str, Any]], tuple[float, int]]:
    state = checkpoint.load(store.path)
    if state is None:
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
    ctx.scheduler.load_state_dict(state["scheduler"])
    tracker.load(state["tracker"])
    done = len(state["history"])
    recorded = store.metrics()  # complete rows (with checkpoint time) where the writer got that far
    history = recorded[:done] if len(recorded) >= done else state["history"]
    store.rewrite_metrics(history)
    return history, tuple(state["best"])


def _finish(
    ctx: RunContext,
    store: RunStore,
    history: list[dict[str, Any]],
    best: tuple[float, int],
    tracker: SelectionTracker,
) -> dict[str, Any]:
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
    store.write_json("summary.json", summary)
    return summary
