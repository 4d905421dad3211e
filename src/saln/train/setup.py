"""Everything a run needs, built once from its config: data, split, selection, learner."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from saln.config import Config, ConfigError, graphed_selection, graphed_steps
from saln.data import DatasetBundle, Split, build_dataset, build_pipeline, stratified_split
from saln.data.loaders import Pipeline
from saln.features import FeatureStore, extract_features
from saln.models import WeightsError, build_learner, check_input_size
from saln.sampling import SelectiveBatchSampler, cut_batches
from saln.selection import Selector, is_model_free, keep_count
from saln.train import distributed
from saln.train.methods import METHODS, Method
from saln.train.step import ScoreFn, StepFn, eager_scorer, eager_step


@dataclass
class RunContext:
    config: Config
    device: torch.device
    bundle: DatasetBundle
    split: Split
    method: Method
    selector: Selector | None
    loaded_batch: int  # rows loaded per step
    keep: int  # rows trained per step
    epochs: int
    sampler: SelectiveBatchSampler
    train_data: Pipeline  # the training source (train/val/holdout rows)
    test_data: Pipeline
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    step: StepFn  # the train step: eager, or replayed from CUDA graphs
    score: ScoreFn  # the model-aware methods' scoring pass: eager, or replayed likewise
    features: FeatureStore | None = None
    ref_losses: torch.Tensor | None = None  # by global index, on device
    one_off: dict[str, float] = field(default_factory=dict)  # seconds, paid once per run
    rank: int = 0
    world_size: int = 1
    feature_cache_hit: bool = False
    cuda_graphs: dict[str, bool] = field(default_factory=dict)  # what replays from graphs

    @property
    def model_aware(self) -> bool:
        return self.selector is not None and not is_model_free(self.selector)

    @property
    def convention(self) -> str:
        return "paper" if self.config.train.learner_batch_size is None else "fixed_learner_batch"


def resolve_device(name: str, flag: str = "train.device") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"{flag}={name!r} is not a device; use auto, cpu, cuda or cuda:N"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{flag}={name!r} but CUDA is not available here; use cpu or auto")
    return device


def batch_shape(config: Config, method: Method) -> tuple[int, int]:
    """(rows loaded per step, rows trained per step) under the configured batch convention."""
    t = config.train
    ratio = t.filter_ratio if method.selector is not None else 0.0
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
        ratio = t.filter_ratio if method.selector is not None else 0.0
        name, setting = "train.batch_size", f"={t.batch_size} with filter ratio {ratio}"
        fix = math.ceil(2 / (1 - ratio) - 1e-9)
    raise ConfigError(
        f"each step trains {keep} row ({name}{setting}), and the learner {config.model.learner} "
        f"has BatchNorm layers, whose batch statistics need at least 2 rows: use {name} >= {fix}"
    )


def build_optimizer(
    model: nn.Module, config: Config, epochs: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    o = config.optim
    # One fused kernel updates every parameter: at the paper's 12-row steps the per-parameter
    # updates are a visible share of the step.
    fused = all(p.device.type in ("cpu", "cuda") for p in model.parameters()) or None
    optimizer: torch.optim.Optimizer
    if o.optimizer == "sgd":
        optimizer = torch.optim.SGD(
            model.parameters(),
            lr=o.lr,
            momentum=o.momentum,
            weight_decay=o.weight_decay,
            nesterov=o.nesterov,
            fused=fused,
        )
    else:
        optimizer = torch.optim.AdamW(
            model.parameters(),
            lr=o.lr,
            betas=(o.momentum, 0.999),
            weight_decay=o.weight_decay,
            fused=fused,
        )
    schedules: dict[str, Any] = {
        "constant": lambda: torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0),
        "cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs),
        "step": lambda: torch.optim.lr_scheduler.MultiStepLR(
            optimizer, [max(1, epochs // 2), max(1, 3 * epochs // 4)], gamma=0.1
        ),
    }
    return optimizer, schedules[o.schedule]()


def new_learner(
    config: Config, num_classes: int, device: torch.device, arch: str | None = None
) -> nn.Module:
    m = config.model
    model = build_learner(
        arch or m.learner,
        num_classes,
        pretrained=m.pretrained if arch is None else False,
        weights=m.weights if arch is None else None,
        download=config.data.download,
    )
    name = f"the learner {arch or m.learner}"
    check_input_size(model, config.data.image_size, "data.image_size", name)
    model = model.to(device)
    if device.type == "cuda":
        # A learner sees a handful of shapes (the kept batch, the last one, eval): autotuning
        # each once picks cuDNN's fastest kernels for them. Autotuning may pick differently run
        # to run, so a deterministic run does without it.
        torch.backends.cudnn.benchmark = not config.train.deterministic
        if config.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
    return model


def chunks(indices: np.ndarray, size: int) -> list[list[int]]:
    return [indices[i : i + size].tolist() for i in range(0, len(indices), size)]


def training_chunks(indices: np.ndarray, size: int) -> list[list[int]]:
    """``chunks`` to train on, cut as the sampler cuts them (a one-row tail is left out)."""
    return [batch.tolist() for batch in cut_batches(indices, size)]


def eval_batches(
    data: Pipeline, indices: np.ndarray, size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for batch in data.batches(chunks(indices, size), train=False, seed=0):
        yield batch.images, batch.labels


def load_features(
    config: Config,
    bundle: DatasetBundle,
    device: torch.device,
    method: Method,
    rank: int = 0,
    world_size: int = 1,
) -> FeatureStore:
    f = config.features
    try:
        return extract_features(
            bundle.train,
            f.encoder,
            image_size=f.image_size,
            batch_size=f.batch_size,
            device=device,
            cache_dir=f.cache_dir,
            pretrained=f.pretrained,
            weights=f.weights,
            download=config.data.download,
            loader=config.data.loader,
            workers=config.data.workers,
            progress=config.train.progress,
            rank=rank,
            world_size=world_size,
        )
    except WeightsError as err:
        raise ConfigError(
            f"method {method.name!r} needs reference features from encoder "
            f"{f.encoder!r}, which cannot be built: {err}"
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
        return eager_step(model, optimizer, config.train.amp)
    from saln.train.graphs import GraphedStep

    return GraphedStep(model, optimizer, config.train.amp)


def scorer_for(config: Config, model: nn.Module, graphed: bool) -> ScoreFn:
    """The scoring pass over the loaded rows, graphed along with the steps (no DDP then, so
    the model is the learner itself)."""
    if not graphed:
        return eager_scorer(distributed.unwrap(model), config.train.amp)
    from saln.train.graphs import GraphedScorer

    return GraphedScorer(model, config.train.amp)


def build_run(config: Config, rank: int = 0, world_size: int = 1) -> RunContext:
    from saln.train.reference import reference_losses

    t = config.train
    device = resolve_device(t.device)
    check_cuda_graphs(config, device, world_size)  # before any data or model work
    if t.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    method = METHODS.build(t.method)
    selector = method.build_selector(config)
    loaded, keep = batch_shape(config, method)
    bundle = build_dataset(config.data.dataset, config.data.data_root, config.data.download)
    split = stratified_split(
        bundle.train.labels,
        config.data.val_fraction,
        config.data.reference_fraction,
        config.data.split_seed,
    )
    torch.manual_seed(t.seed)  # the same initial learner for every method of a seed
    model = new_learner(config, len(bundle.classes), device)
    check_rows_per_step(config, method, keep, model)
    epochs = method.epochs(config)
    optimizer, scheduler = build_optimizer(model, config, epochs)
    data = config.data
    decoded = Path(config.features.cache_dir)  # decoded images, beside features and references
    train_data = build_pipeline(
        data.loader, bundle.train, data.image_size, device, data.workers, decoded
    )
    test_data = build_pipeline(
        data.loader, bundle.test, data.image_size, device, data.workers, decoded
    )
    one_off: dict[str, float] = {}
    features = None
    if selector is not None and "features" in selector.needs:
        start = time.perf_counter()
        features = load_features(config, bundle, device, method, rank, world_size)
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
    model_free = selector is not None and is_model_free(selector)
    sampler = SelectiveBatchSampler(
        split.train,
        loaded,
        selector if model_free else None,
        features,
        t.filter_ratio if model_free else 0.0,
        seed=t.seed,
        keep=keep if model_free else loaded,
        labels=bundle.train.labels,
        rank=rank,
        world_size=world_size,
        device=device if model_free else "cpu",
    )
    if t.compile:
        model = torch.compile(model)  # type: ignore[assignment]
    model = distributed.wrap(model, device)
    graphed = graphed_steps(config, device.type, world_size)
    step = train_step_for(config, model, optimizer, graphed)
    score = scorer_for(config, model, graphed)
    return RunContext(
        config,
        device,
        bundle,
        split,
        method,
        selector,
        loaded,
        keep,
        epochs,
        sampler,
        train_data,
        test_data,
        model,
        optimizer,
        scheduler,
        step,
        score,
        features,
        ref_losses,
        one_off,
        rank,
        world_size,
        feature_cache_hit=features is not None and not features.fresh,
        cuda_graphs={
            "train_steps": graphed,
            "lanczos_solves": features is not None
            and device.type == "cuda"
            and graphed_selection(config.features),
        },
    )
