"""Run configuration: frozen dataclasses <- YAML <- CLI overrides. Unknown keys are errors.

Defaults follow the paper: SGD (momentum 0.9, lr 0.001), cross-entropy, 25 epochs, filter ratio
0.8, batch size 64. Every unit is in the field's comment.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, get_type_hints

import yaml


class ConfigError(ValueError):
    """A config key or value that cannot be used; the message names it and what is valid."""


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"  # cifar10 | pets | digits | imagefolder:PATH
    data_root: str = "data"  # where torchvision datasets live
    download: bool = False  # fetch a missing dataset or pretrained weights
    split_seed: int = 0  # the train/val/holdout split; the same for every method and seed
    val_fraction: float = 0.1  # share of the training split held out for validation
    reference_fraction: float = 0.1  # share held out for the RHO-LOSS/JEST reference model
    image_size: int = 32  # learner input, pixels (square)
    loader: str = "auto"  # auto | resident | dataloader
    workers: int = 2  # DataLoader worker processes (dataloader path)


@dataclass(frozen=True)
class ModelConfig:
    learner: str = "small_cnn"  # see saln.models.LEARNERS
    pretrained: bool = False  # start from ImageNet weights
    weights: str | None = None  # local state dict instead of downloaded weights


@dataclass(frozen=True)
class FeatureConfig:
    encoder: str = "efficientnet_lite0"  # reference features for saln (see ENCODERS)
    pretrained: bool = True
    weights: str | None = None
    image_size: int = 64  # encoder input, pixels
    batch_size: int = 256  # images per extraction forward
    cache_dir: str = ".cache/saln"
    solver: str = "auto"  # exact | lanczos | auto
    # Replay CUDA Lanczos solves from a CUDA graph: auto = wherever the solver may be Lanczos.
    cuda_graph: bool | str = "auto"


@dataclass(frozen=True)
class OptimConfig:
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.001  # learning rate
    momentum: float = 0.9  # SGD momentum (adamw: beta1)
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant | cosine | step (x0.1 at 50% and 75% of epochs)
    nesterov: bool = False


@dataclass(frozen=True)
class ReferenceConfig:
    learner: str | None = None  # reference-model architecture; None: the learner's
    epochs: int = 10  # epochs of plain training on the holdout


@dataclass(frozen=True)
class TrainConfig:
    method: str = "saln"  # see saln.train.METHODS
    filter_ratio: float = 0.8  # fraction of each loaded batch that is dropped
    epochs: int = 25
    batch_size: int = 64  # loaded (super-)batch, the paper's convention
    learner_batch_size: int | None = None  # if set: rows trained per step (JEST's convention)
    eval_batch_size: int = 512
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    channels_last: bool = True  # on CUDA
    compile: bool = False  # torch.compile the learner
    # Replay whole train steps from CUDA graphs: auto = on for one CUDA process with eager SGD.
    cuda_graphs: bool | str = "auto"
    deterministic: bool = False  # torch.use_deterministic_algorithms
    jest_chunks: int = 16
    selection_mode: str = "local"  # distributed model-aware selection: local | global
    check_every: int = 50  # steps between non-finite-loss checks on CUDA (every step on CPU)
    tensorboard: bool = False  # also log to runs/<id>/tensorboard
    progress: bool = True  # progress bar


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _suggest(name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _coerce(path: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against the field's type hint, converting ints to floats where allowed."""
    allowed = getattr(hint, "__args__", (hint,))
    if value is None and type(None) in allowed:
        return None
    for kind in allowed:
        if kind is bool and isinstance(value, bool):
            return value
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind is str and isinstance(value, str):
            return value
    names = " or ".join("null" if k is type(None) else k.__name__ for k in allowed)
    raise ConfigError(f"{path} must be {names}, got {value!r}")


def from_dict(data: dict[str, Any] | None, base: Config | None = None) -> Config:
    """Merge a nested mapping into ``base`` (defaults if None); unknown keys are errors."""
    base = base or Config()
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(data).__name__}")
    sections = get_type_hints(Config)
    updates = {}
    for section, values in data.items():
        if section not in sections:
            raise ConfigError(
                f"unknown config section {section!r}{_suggest(section, list(sections))} "
                f"(sections: {', '.join(sections)})"
            )
        if not isinstance(values, dict):
            raise ConfigError(f"config section {section!r} must be a mapping")
        current = getattr(base, section)
        hints = get_type_hints(type(current))
        for key in values:
            if key not in hints:
                raise ConfigError(
                    f"unknown config key '{section}.{key}'{_suggest(key, list(hints))} "
                    f"(valid: {', '.join(hints)})"
                )
        coerced = {k: _coerce(f"{section}.{k}", v, hints[k]) for k, v in values.items()}
        updates[section] = replace(current, **coerced)
    return replace(base, **updates)


def load(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Defaults <- YAML file <- overrides (``{"train.lr": 0.01}`` style dotted keys)."""
    config = Config()
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"config file {file} does not exist")
        try:
            data = yaml.safe_load(file.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {file} is not valid YAML: {err}") from None
        config = from_dict(data, config)
    return from_dict(nest(overrides or {}), config)


def nest(dotted: dict[str, Any]) -> dict[str, dict[str, Any]]:
    nested: dict[str, dict[str, Any]] = {}
    for key, value in dotted.items():
        section, dot, name = key.partition(".")
        if not dot:
            raise ConfigError(f"override {key!r} must be section.key, e.g. train.lr")
        nested.setdefault(section, {})[name] = value
    return nested


def parse_override(text: str) -> tuple[str, Any]:
    """``section.key=value`` with the value read as YAML (numbers, booleans, null)."""
    key, eq, raw = text.partition("=")
    if not eq:
        raise ConfigError(f"--set {text!r} must look like section.key=value")
    return key.strip(), yaml.safe_load(raw)


def _positive(path: str, value: float | int) -> None:
    if not value > 0 or (isinstance(value, float) and not math.isfinite(value)):
        raise ConfigError(f"{path} must be positive, got {value}")


def validate(config: Config) -> None:
    """Value checks that need no registry lookups (those happen when the run is built)."""
    t, d, o, f = config.train, config.data, config.optim, config.features
    if not 0.0 <= t.filter_ratio < 1.0:
        raise ConfigError(f"train.filter_ratio={t.filter_ratio} must be in [0, 1)")
    for path, value in (
        ("train.epochs", t.epochs),
        ("train.batch_size", t.batch_size),
        ("train.eval_batch_size", t.eval_batch_size),
        ("optim.lr", o.lr),
        ("data.image_size", d.image_size),
        ("features.image_size", config.features.image_size),
        ("reference.epochs", config.reference.epochs),
        ("train.check_every", t.check_every),
    ):
        _positive(path, value)
    for path, count in (("train.seed", t.seed), ("data.split_seed", d.split_seed)):
        if count < 0:
            raise ConfigError(f"{path} must be >= 0, got {count}")
    if d.workers < 0:
        raise ConfigError(f"data.workers must be >= 0 (0: the main process), got {d.workers}")
    if t.learner_batch_size is not None:
        _positive("train.learner_batch_size", t.learner_batch_size)
    if o.weight_decay < 0 or not 0 <= o.momentum < 1:
        raise ConfigError("optim.weight_decay must be >= 0 and optim.momentum in [0, 1)")
    for path, choice, choices in (
        ("optim.optimizer", o.optimizer, ("sgd", "adamw")),
        ("optim.schedule", o.schedule, ("constant", "cosine", "step")),
        ("train.selection_mode", t.selection_mode, ("local", "global")),
    ):
        if choice not in choices:
            raise ConfigError(f"{path}={choice!r} is not one of {', '.join(choices)}")
    if not 0 <= d.val_fraction < 1 or not 0 <= d.reference_fraction < 1:
        raise ConfigError("data.val_fraction and data.reference_fraction must be in [0, 1)")
    for graph_key, switch in (
        ("features.cuda_graph", f.cuda_graph),
        ("train.cuda_graphs", t.cuda_graphs),
    ):
        if isinstance(switch, str) and switch != "auto":
            raise ConfigError(f"{graph_key}={switch!r} must be true, false or auto")
    if f.cuda_graph is True and f.solver == "exact":
        raise ConfigError(
            "features.cuda_graph replays the Lanczos solve: set features.solver=lanczos or "
            "auto, or features.cuda_graph=false"
        )
    if t.cuda_graphs is True and (t.compile or o.optimizer != "sgd"):
        raise ConfigError(
            "train.cuda_graphs captures eager SGD steps: set train.compile=false and "
            "optim.optimizer=sgd, or train.cuda_graphs=false"
        )


def graphed_selection(features: FeatureConfig) -> bool:
    """``features.cuda_graph`` resolved. It only ever applies to Lanczos solves of CUDA inputs,
    so ``auto`` is on unless the solver is always exact."""
    return features.cuda_graph is True or (
        features.cuda_graph == "auto" and features.solver != "exact"
    )


def graphed_steps(config: Config, device_type: str, world_size: int) -> bool:
    """``train.cuda_graphs`` resolved: ``auto`` is on where graphs can replay the step (one
    CUDA process, eager SGD; DDP's gradient hooks and torch.compile cannot be captured here)."""
    t = config.train
    if t.cuda_graphs != "auto":
        return bool(t.cuda_graphs)
    return (
        device_type == "cuda"
        and world_size == 1
        and not t.compile
        and config.optim.optimizer == "sgd"
    )
