"""Everything a run needs, built once from its config: data, split, selection, learner."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from saln import distributed
from saln.config import Config, ConfigError, graphed_selection, graphed_steps
from saln.data import (
    DataError,
    DatasetBundle,
    Split,
    build_dataset,
    build_pipeline,
    stratified_split,
)
from saln.data.loaders import Pipeline
from saln.features import FeatureStore
from saln.features.extract import ExtractionSettings, FeatureExtraction
from saln.models import DataInitialised, WeightsError, build_encoder
from saln.sampling import SelectiveBatchSampler
from saln.selection import Selector, keep_count
from saln.selection.schedule import SelectionSchedule
from saln.train.assembly import SelectionInputs, assemble_selection
from saln.train.components import build_optimizer, init_from_data, new_learner, resolve_device
from saln.train.epochwise import Planner
from saln.train.lookahead import Lookahead
from saln.train.methods import METHODS, Method
from saln.train.names import check_names
from saln.train.proxy import ProxyModel, build_proxy
from saln.train.proxy_pass import Replay, cached_first_pass, first_pass
from saln.train.reference import reference_losses
from saln.train.schedules import LearningRates
from saln.train.step import (
    ScoreFn,
    StepFn,
    WeightedStepFn,
    eager_scorer,
    eager_step,
    eager_weighted_step,
)


@dataclass(kw_only=True)
class RunContext:
    """Everything one run trains with, built by :func:`build_run`."""

    config: Config
    device: torch.device
    bundle: DatasetBundle
    split: Split
    method: Method
    selector: Selector | None
    loaded_batch: int  # rows loaded per step
    keep: int  # rows trained per step
    schedule: SelectionSchedule  # the filter ratio of each epoch
    epochs: int
    sampler: SelectiveBatchSampler
    train_data: Pipeline  # the training source (train/val/holdout rows)
    test_data: Pipeline
    model: nn.Module
    optimizer: torch.optim.Optimizer
    rates: LearningRates  # the lr of each step, by the run's progress
    lookahead: Lookahead | None  # optim.lookahead's EMA of the weights
    proxy: ProxyModel | None = None  # method proxy's scoring model
    replay: Replay | None = None  # the proxy's first pass: kept positions by (epoch, step)
    step: StepFn  # the train step: eager, or replayed from CUDA graphs
    weighted_step: WeightedStepFn  # the step with per-row loss weights (epoch-level methods)
    score: ScoreFn  # the model-aware methods' scoring pass: eager, or replayed likewise
    planner: Planner  # the epoch-level method's plan (a no-op for the others)
    features: FeatureStore | None = None
    ref_losses: torch.Tensor | None = None  # by global index, on device
    one_off: dict[str, float] = field(default_factory=dict)  # seconds, paid once per run
    rank: int = 0
    world_size: int = 1
    feature_cache_hit: bool = False
    cuda_graphs: dict[str, bool] = field(default_factory=dict)  # what replays from graphs

    def keep_at(self, epoch: int) -> int:
        """Rows trained per full step in ``epoch``: every loaded row outside the schedule's
        selecting window."""
        if self.schedule.is_default:
            return self.keep
        return keep_count(self.loaded_batch, self.schedule.ratio(epoch))

    @property
    def convention(self) -> str:
        return "paper" if self.config.train.learner_batch_size is None else "fixed_learner_batch"


def batch_shape(config: Config, method: Method) -> tuple[int, int]:
    """(rows loaded per step, rows trained per step) under the configured batch convention."""
    t = config.train
    ratio = method.filter_ratio(config)
    if t.learner_batch_size is not None:  # JEST's convention: fixed trained rows, more loaded
        return math.ceil(t.learner_batch_size / (1 - ratio) - 1e-9), t.learner_batch_size
    try:
        return t.batch_size, keep_count(t.batch_size, ratio)
    except ValueError as err:
        raise ConfigError(
            f"train.batch_size={t.batch_size} with train.filter_ratio={ratio}: {err}"
        ) from None


BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def check_rows_per_step(config: Config, method: Method, keep: int, model: nn.Module) -> None:
    """One trained row per step fails (or trains on junk statistics) in any BatchNorm layer."""
    if keep >= 2 or not any(isinstance(m, BATCH_NORMS) for m in model.modules()):
        return
    t = config.train
    if t.learner_batch_size is not None:
        name, setting, fix = "train.learner_batch_size", f"={t.learner_batch_size}", 2
    else:
        ratio = method.filter_ratio(config)
        name, setting = "train.batch_size", f"={t.batch_size} with filter ratio {ratio}"
        fix = math.ceil(2 / (1 - ratio) - 1e-9)
    raise ConfigError(
        f"each step trains {keep} row ({name}{setting}), and the learner {config.model.learner} "
        f"has BatchNorm layers, whose batch statistics need at least 2 rows: use {name} >= {fix}"
    )


def check_batch_fits(config: Config, loaded: int, train_rows: int, world_size: int) -> None:
    """Each rank's step loads ``loaded`` rows: more than the training split holds would train
    one short batch and report a kept batch size that never trained."""
    per_rank = train_rows // world_size
    if loaded > per_rank:
        t = config.train
        name = "train.batch_size" if t.learner_batch_size is None else "train.learner_batch_size"
        shared = f" ({per_rank} for each of {world_size} processes)" if world_size > 1 else ""
        raise ConfigError(
            f"each step loads {loaded} rows but the training split has {train_rows} rows"
            f"{shared}: lower {name}"
        )


def load_features(
    config: Config,
    bundle: DatasetBundle,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
    needed_by: str = "feature extraction",
) -> FeatureStore:
    """The reference features ``config.features`` describes, from the cache or extracted now."""
    f, d = config.features, config.data
    settings = ExtractionSettings(
        f.image_size, f.batch_size, device, Path(f.cache_dir), d.loader, d.workers,
        config.train.progress, rank, world_size,
    )  # fmt: skip
    try:
        encoder = build_encoder(
            f.encoder, pretrained=f.pretrained, weights=f.weights, download=d.download,
            image_size=f.image_size,
        )  # fmt: skip
        return FeatureExtraction(bundle.train, encoder, settings).run()
    except WeightsError as err:
        raise ConfigError(
            f"{needed_by} needs reference features from encoder {f.encoder!r}, which cannot "
            f"be built: {err}"
        ) from None


def check_cuda_graphs(config: Config, device: torch.device, world_size: int) -> None:
    """Refuse CUDA graphs asked for explicitly where they cannot run (``auto`` turns off)."""
    if config.train.cuda_graphs is True and (device.type != "cuda" or world_size > 1):
        raise ConfigError(
            "train.cuda_graphs needs one process on a CUDA device (it captures steps that "
            "DDP's gradient hooks would enter); set train.cuda_graphs=auto or false"
        )
    if config.features.cuda_graph is True and device.type != "cuda":
        raise ConfigError(
            f"features.cuda_graph replays a CUDA solve, and this run is on {device.type}: "
            "set train.device=cuda or features.cuda_graph=auto or false"
        )


def train_step_for(
    config: Config, model: nn.Module, optimizer: torch.optim.Optimizer, graphed: bool
) -> StepFn:
    """The eager train step, or when ``graphed`` the same step replayed from CUDA graphs
    (:func:`saln.config.graphed_steps` has vouched for the device)."""
    if not graphed:
        return eager_step(model, optimizer, config.train.amp, config.optim.label_smoothing)
    from saln.train.graphs import GraphedStep

    return GraphedStep(model, optimizer, config.train.amp, config.optim.label_smoothing)


def weighted_step_for(
    config: Config, model: nn.Module, optimizer: torch.optim.Optimizer, graphed: bool
) -> WeightedStepFn:
    """The step with per-row loss weights (epoch-level methods), graphed along with the steps:
    the weights are one more captured input."""
    if not graphed:
        smoothing = config.optim.label_smoothing
        return eager_weighted_step(model, optimizer, config.train.amp, smoothing)
    from saln.train.graphs import GraphedWeightedStep

    return GraphedWeightedStep(model, optimizer, config.train.amp, config.optim.label_smoothing)


def scorer_for(config: Config, model: nn.Module, graphed: bool) -> ScoreFn:
    """The scoring pass over the loaded rows, graphed along with the steps (no DDP then, so
    the model is the learner itself)."""
    if not graphed:
        return eager_scorer(distributed.unwrap(model), config.train.amp)
    from saln.train.graphs import GraphedScorer

    return GraphedScorer(model, config.train.amp)


def share_kept(kept: np.ndarray, device: torch.device) -> np.ndarray:
    """Every rank's kept-row mask, merged (coverage under torchrun), on the training device
    so that NCCL can carry it."""
    merged = distributed.all_reduce(torch.from_numpy(kept).to(device, torch.int32))
    return (merged > 0).cpu().numpy()


def check_split(bundle: DatasetBundle, split: Split, config: Config) -> None:
    """A dataset a classifier can be trained and judged on: two classes or more, and a val
    split with rows in it (it picks the best epoch's model and the target accuracy)."""
    if len(bundle.classes) < 2:
        raise DataError(
            f"{bundle.name} has {len(bundle.classes)} class ({', '.join(bundle.classes)}): a "
            "classifier needs at least two; add another class folder"
        )
    if len(split.val) == 0:
        fewest = int(np.bincount(bundle.train.labels).min())
        raise ConfigError(
            f"data.val_fraction={config.data.val_fraction} leaves no val images (the smallest "
            f"class has {fewest} training images): use more images per class (saln subset "
            "--per-class train=50 or more) or raise data.val_fraction"
        )


def build_run(config: Config, rank: int = 0, world_size: int = 1) -> RunContext:
    t = config.train
    check_names(config)  # a misspelt name fails before any work or any file is touched
    device = resolve_device(t.device)
    method = METHODS.build(t.method)
    check_cuda_graphs(config, device, world_size)  # before any data or model work
    schedule = method.schedule(config)
    method.check_coverage(config)
    if t.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    selector = method.build_selector(config)
    loaded, keep = batch_shape(config, method)
    bundle = build_dataset(config.data.dataset, config.data.data_root, config.data.download)
    split = stratified_split(
        bundle.train.labels,
        config.data.val_fraction,
        config.data.reference_fraction,
        config.data.split_seed,
    )
    check_split(bundle, split, config)
    check_batch_fits(config, loaded, len(split.train), world_size)
    torch.manual_seed(t.seed)  # the same initial learner for every method of a seed
    model = new_learner(config, len(bundle.classes), device)
    check_rows_per_step(config, method, keep, model)
    epochs = method.epochs(config, len(split.train))
    optimizer, rates = build_optimizer(model, config, keep)
    data = config.data
    decoded = Path(config.features.cache_dir)  # decoded images, beside features and references
    train_data = build_pipeline(
        data.loader, bundle.train, data.image_size, device, data.workers, decoded,
        augment=data.augment, seed=t.seed,
    )  # fmt: skip
    test_data = build_pipeline(
        data.loader, bundle.test, data.image_size, device, data.workers, decoded
    )
    one_off: dict[str, float] = {}
    if isinstance(model, DataInitialised):
        one_off["learner_init_s"] = init_from_data(model, train_data, split.train)
    every = config.optim.lookahead
    lookahead = Lookahead(model, every) if every else None  # after the init: it averages that
    proxy = None
    if method.scored_by == "proxy":
        proxy = build_proxy(config, len(bundle.classes), device, keep)
        one_off["proxy_init_s"] = proxy.init_from_data(train_data, split.train)
    features = None
    if selector is not None and "features" in selector.needs:
        start = time.perf_counter()
        needed_by = f"method {method.name!r}"
        features = load_features(config, bundle, device, rank, world_size, needed_by)
        # A cache hit still reports what the extraction cost when it ran: it is paid once
        # per dataset and encoder, and belongs in the method's total time.
        seconds = features.meta.get("extraction_seconds", time.perf_counter() - start)
        one_off["feature_extraction_s"] = float(seconds)
    ref_losses = None
    if selector is not None and "ref_losses" in selector.needs:
        if len(split.reference) == 0:
            raise ConfigError(
                f"method {method.name!r} needs a reference model trained on a holdout: "
                "set data.reference_fraction > 0"
            )
        # Rank 0 trains and caches the reference model; the others then read the cache.
        distributed.on_rank0(lambda: reference_losses(config, bundle, split, train_data, device)[1])
        table, costs = reference_losses(config, bundle, split, train_data, device)
        ref_losses = table.to(device)
        one_off.update(costs)
    inputs = SelectionInputs(
        indices=split.train,
        batch_size=loaded,
        filter_ratio=method.filter_ratio(config),
        seed=t.seed,
        epochs=epochs,
        dataset_size=len(bundle.train),
        device=device,
        features=features,
        labels=bundle.train.labels,
        keep=keep,
        ratio_at=None if schedule.is_default else schedule.ratio,
        coverage=t.coverage,
        share=partial(share_kept, device=device) if world_size > 1 else None,
        rank=rank,
        world_size=world_size,
        selection_device=device,
        prune_ratio=t.prune_ratio,
        delta=t.infobatch_delta,
    )
    parts = assemble_selection(method, selector, inputs)
    if t.compile:
        model = torch.compile(model)  # type: ignore[assignment]
    model = distributed.wrap(model, device)
    graphed = graphed_steps(config, device.type, world_size)
    step = train_step_for(config, model, optimizer, graphed)
    score = proxy.score if proxy is not None else scorer_for(config, model, graphed)
    ctx = RunContext(
        config=config,
        device=device,
        bundle=bundle,
        split=split,
        method=method,
        selector=selector,
        loaded_batch=loaded,
        keep=keep,
        schedule=schedule,
        epochs=epochs,
        sampler=parts.sampler,
        train_data=train_data,
        test_data=test_data,
        model=model,
        optimizer=optimizer,
        rates=rates,
        lookahead=lookahead,
        proxy=proxy,
        step=step,
        weighted_step=weighted_step_for(config, model, optimizer, graphed),
        score=score,
        planner=parts.planner,
        features=features,
        ref_losses=ref_losses,
        one_off=one_off,
        rank=rank,
        world_size=world_size,
        feature_cache_hit=features is not None and not features.fresh,
        cuda_graphs={
            "train_steps": graphed,
            "lanczos_solves": features is not None
            and device.type == "cuda"
            and graphed_selection(config.features),
        },
    )
    if proxy is not None and config.selection.proxy_pass == "first":
        ctx.replay = replayed_pass(ctx, proxy)
    return ctx


def replayed_pass(ctx: RunContext, proxy: ProxyModel) -> Replay:
    """The proxy's first pass over the run's schedule (cached), its time a one-off cost."""
    selector = ctx.selector
    assert selector is not None

    def run() -> Replay:
        return first_pass(proxy, ctx.sampler, ctx.train_data, selector, ctx.keep_at,
                          ctx.loaded_batch, ctx.epochs, ctx.config.train.seed)  # fmt: skip

    data = ctx.bundle.train.fingerprint()
    replay, seconds = cached_first_pass(ctx.config, data, ctx.rank, ctx.world_size, run)
    ctx.one_off["proxy_pass_s"] = seconds
    return replay
