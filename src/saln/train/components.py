"""The parts of a training run that the learner and the reference model share: the device,
a fresh learner and its optimizer, and index batches cut for training and evaluation."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from saln.config import Config, ConfigError, channels_last
from saln.data.loaders import Pipeline
from saln.models import DataInitialised, build_learner, check_input_size
from saln.sampling import cut_batches
from saln.train.schedules import LearningRates, param_groups


@contextlib.contextmanager
def scoped_torch_state(device: torch.device) -> Iterator[None]:
    """The process-wide torch state a run sets, restored on leaving: the global RNGs it seeds
    (per epoch, for reproducible resumes), cuDNN's autotuner, deterministic algorithms. A
    caller's own settings are theirs; the library changes them only for its run."""
    benchmark = torch.backends.cudnn.benchmark
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            torch.backends.cudnn.benchmark = benchmark
            torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


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


def build_optimizer(
    model: nn.Module, config: Config, rows_per_step: int
) -> tuple[torch.optim.Optimizer, LearningRates]:
    """The optimizer over ``model`` (``rows_per_step``: the rows each step's loss averages,
    which decoupled units need) and its learning rates, set by the run's progress."""
    o = config.optim
    groups = param_groups(model, o, rows_per_step)
    # One fused kernel updates every parameter: at the paper's 12-row steps the per-parameter
    # updates are a visible share of the step.
    fused = all(p.device.type in ("cpu", "cuda") for p in model.parameters()) or None
    optimizer: torch.optim.Optimizer
    if o.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, momentum=o.momentum, nesterov=o.nesterov, fused=fused)
    else:
        optimizer = torch.optim.AdamW(groups, betas=(o.momentum, 0.999), fused=fused)
    return optimizer, LearningRates(optimizer, o, rows_per_step)


def new_learner(
    config: Config, num_classes: int, device: torch.device, arch: str | None = None
) -> nn.Module:
    m = config.model
    # model.widths/depth shape the configured learner only (a reference of another arch: not)
    shape = {
        k: v
        for k, v in (
            ("widths", m.widths),
            ("depth", m.depth),
            ("whiten_bias_epochs", m.whiten_bias_epochs),
        )
        if v is not None
    }
    model = build_learner(
        arch or m.learner,
        num_classes,
        pretrained=m.pretrained if arch is None else False,
        weights=m.weights if arch is None else None,
        download=config.data.download,
        **(shape if arch is None or arch == m.learner else {}),
    )
    name = f"the learner {arch or m.learner}"
    check_input_size(model, config.data.image_size, "data.image_size", name)
    model = model.to(device)
    if device.type == "cuda":
        # A learner sees a handful of shapes (the kept batch, the last one, eval): autotuning
        # each once picks cuDNN's fastest kernels for them. Autotuning may pick differently run
        # to run, so a deterministic run does without it.
        torch.backends.cudnn.benchmark = not config.train.deterministic
    if channels_last(config, device.type):
        model = model.to(memory_format=torch.channels_last)
    return model


# Un-augmented training images a data-dependent init sees (airbench's whitening: 5,000).
INIT_SAMPLE = 5000


def init_from_data(model: DataInitialised, train_data: Pipeline, rows: np.ndarray) -> float:
    """Initialise ``model`` from the first :data:`INIT_SAMPLE` of ``rows``, the rows it
    trains on (never val, test or another split), un-augmented. Returns the seconds it took:
    a one-off cost of the run."""
    start = time.perf_counter()
    first = [int(i) for i in rows[:INIT_SAMPLE]]
    batches = train_data.batches([first], train=False, seed=0)
    model.init_from_data(torch.cat([batch.images for batch in batches]))
    return time.perf_counter() - start


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
