"""Run configuration: frozen dataclasses <- YAML <- CLI overrides. Unknown keys are errors.

Defaults follow the paper: SGD (momentum 0.9, lr 0.001), cross-entropy, 25 epochs, filter ratio
0.8, batch size 64. Every unit is in the field's comment.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Collection
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from saln.errors import InvalidInput


class ConfigError(InvalidInput):
    """A config key or value that cannot be used; the message names it and what is valid."""


def setting(
    default: Any, help: str, *, registry: str | None = None, read_by: tuple[str, ...] = ()
) -> Any:
    """A config field with its help text and, where its values are names in a registry, which
    one (``registry``); the CLI builds its flags and help from these. ``read_by`` names the
    only methods that read the setting (empty: any method may). A list default is copied for
    each config."""
    metadata = {"help": help, "registry": registry, "read_by": read_by}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


PROXY = ("proxy",)  # the methods that read the proxy's settings


@dataclass(frozen=True)
class DataConfig:
    dataset: str = setting("digits", "the dataset", registry="dataset")
    data_root: str = setting("data", "where torchvision datasets live")
    download: bool = setting(False, "fetch a missing dataset or pretrained weights")
    split_seed: int = setting(0, "seed of the train/val/holdout split, shared by every run")
    val_fraction: float = setting(0.1, "share of the training split held out for validation")
    reference_fraction: float = setting(
        0.1, "share of the training split held out for the RHO-LOSS/JEST reference model"
    )
    image_size: int = setting(32, "learner input, pixels (square)")
    loader: str = setting("auto", "how images reach the learner; auto chooses", registry="loader")
    workers: int = setting(2, "DataLoader worker processes (0: the main process)")
    augment: str = setting(
        "paper",
        "training augmentation: paper (flip, rotation, colour jitter) or flip_translate "
        "(airbench's alternating flip and 2 px reflect-padded translation; resident loader)",
    )

    def check(self) -> None:
        _positive("data.image_size", self.image_size)
        _one_of("data.augment", self.augment, AUGMENTATIONS)
        if self.augment == "flip_translate" and self.loader == "dataloader":
            raise ConfigError(
                "data.augment=flip_translate augments whole batches on the resident loader, "
                "and data.loader is dataloader: set data.loader=resident (or auto)"
            )
        _at_most("data.image_size", self.image_size, MAX_IMAGE_SIZE)
        _seed("data.split_seed", self.split_seed)
        if self.workers < 0:
            raise ConfigError(
                f"data.workers must be >= 0 (0: the main process), got {self.workers}"
            )
        if not 0 < self.val_fraction < 1:
            raise ConfigError(
                f"data.val_fraction={self.val_fraction} must be in (0, 1): the val split picks "
                "the best epoch's model and the target accuracy"
            )
        if not 0 <= self.reference_fraction < 1:
            raise ConfigError(
                f"data.reference_fraction={self.reference_fraction} must be in [0, 1)"
            )


@dataclass(frozen=True)
class ModelConfig:
    learner: str = setting("small_cnn", "learner architecture", registry="learner")
    pretrained: bool = setting(False, "start the learner from ImageNet weights")
    weights: str | None = setting(None, "learner state dict file instead of downloaded weights")
    widths: list[int] | None = setting(  # noqa: RUF009  (a field(), default None)
        None, "airbench: the three conv groups' widths (null: 64, 256, 256, airbench94's)"
    )
    depth: int | None = setting(None, "airbench: convs per group, 2 or 3 (null: 2)")
    whiten_bias_epochs: int | None = setting(
        None, "airbench: epochs the whitening conv's bias trains, then frozen (null: throughout)"
    )

    def check(self) -> None:
        if self.learner != "airbench":
            for key in ("widths", "depth", "whiten_bias_epochs"):
                if getattr(self, key) is not None:
                    raise ConfigError(
                        f"model.{key} shapes the airbench learner, and model.learner is "
                        f"{self.learner!r}: drop model.{key} or set model.learner=airbench"
                    )
        if self.widths is not None and (
            len(self.widths) != 3 or not all(w > 0 for w in self.widths)
        ):
            raise ConfigError(f"model.widths must be three positive ints, got {self.widths}")
        if self.depth is not None and self.depth not in (2, 3):
            raise ConfigError(f"model.depth must be 2 or 3 (convs per group), got {self.depth}")
        if self.whiten_bias_epochs is not None and self.whiten_bias_epochs < 0:
            raise ConfigError(
                f"model.whiten_bias_epochs must be >= 0 (or null), got {self.whiten_bias_epochs}"
            )


@dataclass(frozen=True)
class FeatureConfig:
    encoder: str = setting("efficientnet_lite0", "reference-feature encoder", registry="encoder")
    pretrained: bool = setting(True, "the encoder's ImageNet weights (false: random init)")
    weights: str | None = setting(None, "encoder state dict file instead of downloaded weights")
    image_size: int = setting(64, "encoder input, pixels (square)")
    batch_size: int = setting(256, "images per extraction forward pass")
    cache_dir: str = setting(".cache/saln", "where features and decoded images are kept")
    solver: str = setting("auto", "SALN's eigensolver; auto chooses", registry="solver")
    cuda_graph: bool | str = setting(
        "auto",
        "replay CUDA Lanczos solves from a graph: true, false or auto (where Lanczos may run)",
    )

    def check(self) -> None:
        _positive("features.image_size", self.image_size)
        _at_most("features.image_size", self.image_size, MAX_IMAGE_SIZE)
        _positive("features.batch_size", self.batch_size)
        _graph_switch("features.cuda_graph", self.cuda_graph)
        if self.cuda_graph is True and self.solver == "exact":
            raise ConfigError(
                "features.cuda_graph replays the Lanczos solve: set features.solver=lanczos or "
                "auto, or features.cuda_graph=false"
            )


@dataclass(frozen=True)
class SelectionConfig:
    """Options of the repaired spectral selectors (spectral, spectral_strata)."""

    centre: bool = setting(True, "subtract the batch's mean feature before the cosine")
    graph: str = setting("knn", "dense, or knn: each row's k most similar rows (symmetrised)")
    k: int = setting(10, "neighbours per row of the knn graph")
    laplacian: str = setting(
        "regularized",
        "combinatorial (the paper's D - S), normalized, or regularized (D + mean degree)",
        registry="laplacian",
    )
    strata: int = setting(
        10, "spectral_strata: strata per batch, at least 2", read_by=("spectral_strata",)
    )
    dims: int = setting(
        9,
        "spectral_strata: eigenvectors embedding the rows (1: quantiles of the Fiedler vector)",
        read_by=("spectral_strata",),
    )
    proxy_learner: str = setting(
        "airbench", "proxy: the proxy model's learner", registry="learner", read_by=PROXY
    )
    proxy_widths: list[int] | None = setting(  # noqa: RUF009  (a field(), default None)
        None,
        "proxy: an airbench proxy's widths (null: a quarter of the learner's, airbench's)",
        read_by=PROXY,
    )
    proxy_every: int = setting(
        4, "proxy: the proxy trains on its kept rows every this many steps", read_by=PROXY
    )
    proxy_resolution: int | None = setting(
        None,
        "proxy: score (and train the proxy) at this many pixels a side (null: the learner's)",
        read_by=PROXY,
    )
    proxy_pass: str = setting(
        "online",
        "proxy: online (the proxy trains beside the learner) or first (it runs over the seeded "
        "schedule before training, a one-off cost, and its choices are replayed)",
        read_by=PROXY,
    )

    def check(self) -> None:
        _positive("selection.k", self.k)
        _positive("selection.dims", self.dims)
        _one_of("selection.graph", self.graph, ("dense", "knn"))
        if self.strata < 2:
            raise ConfigError(f"selection.strata={self.strata}: stratifying needs >= 2")
        if self.proxy_every < 1:
            raise ConfigError(
                f"selection.proxy_every={self.proxy_every}: the proxy trains every this many "
                "steps, at least 1 (airbench96_faster: 4)"
            )
        if self.proxy_resolution is not None:
            _positive("selection.proxy_resolution", self.proxy_resolution)
        _one_of("selection.proxy_pass", self.proxy_pass, ("online", "first"))
        widths = self.proxy_widths
        if widths is not None and (len(widths) != 3 or not all(w > 0 for w in widths)):
            raise ConfigError(f"selection.proxy_widths must be three positive ints, got {widths}")
        if widths is not None and self.proxy_learner != "airbench":
            raise ConfigError(
                f"selection.proxy_widths shapes an airbench proxy, and selection.proxy_learner is "
                f"{self.proxy_learner!r}: drop the widths or set selection.proxy_learner=airbench"
            )


@dataclass(frozen=True)
class OptimConfig:
    optimizer: str = setting("sgd", "sgd or adamw")
    lr: float = setting(0.001, "learning rate (optim.decoupled: per 1024 examples)")
    momentum: float = setting(0.9, "SGD momentum (adamw: beta1)")
    weight_decay: float = setting(
        0.0, "L2 weight decay (optim.decoupled: the decay per 1024 examples, as airbench's)"
    )
    schedule: str = setting(
        "constant",
        "LR over the run's progress: constant, cosine or step (x0.1 at half and three quarters "
        "of the epochs), set each epoch; triangle (optim.triangle), set each step",
    )
    triangle: list[float] = setting(  # noqa: RUF009  (a field(), copied per config)
        [0.2, 0.23, 0.07],
        "schedule triangle: the LR factor at the start, where it peaks at 1 (share of the run), "
        "and at the end",
    )
    nesterov: bool = setting(False, "Nesterov momentum (sgd)")
    decoupled: bool = setting(
        False,
        "read lr and weight_decay per 1024 examples trained, corrected for momentum (airbench's "
        "units): the same values suit any batch size",
    )
    bias_lr_scale: float = setting(
        1.0, "normalisation layers' biases train at this multiple of the lr (airbench: 64)"
    )
    lookahead: int | None = setting(
        None,
        "every this many steps, pull the weights to an EMA of themselves with airbench's decay "
        "ramp, and sync to it at the end (null: off)",
    )
    label_smoothing: float = setting(
        0.0, "share of each target spread evenly over the classes in the loss trained on, [0, 1)"
    )

    def check(self) -> None:
        _positive("optim.lr", self.lr)
        _positive("optim.bias_lr_scale", self.bias_lr_scale)
        _finite("optim.weight_decay", self.weight_decay)
        _finite("optim.momentum", self.momentum)
        if self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ConfigError("optim.weight_decay must be >= 0 and optim.momentum in [0, 1)")
        _one_of("optim.optimizer", self.optimizer, ("sgd", "adamw"))
        _one_of("optim.schedule", self.schedule, LR_SCHEDULES)
        self._check_triangle()
        if self.lookahead is not None and self.lookahead < 1:
            raise ConfigError(
                f"optim.lookahead={self.lookahead}: the period is in steps and must be >= 1 "
                "(airbench: 5); null turns lookahead off"
            )
        _finite("optim.label_smoothing", self.label_smoothing)
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(
                f"optim.label_smoothing={self.label_smoothing} must be in [0, 1): the share of "
                "each target spread over the classes (airbench trains with 0.2)"
            )

    def _check_triangle(self) -> None:
        shape = list(self.triangle)
        if len(shape) != 3 or not all(
            isinstance(v, (int, float)) and math.isfinite(v) for v in shape
        ):
            raise ConfigError(
                f"optim.triangle must be three numbers (start factor, peak position, end "
                f"factor), got {self.triangle}"
            )
        start, peak, end = shape
        if start < 0 or end < 0 or not 0 <= peak <= 1:
            raise ConfigError(
                f"optim.triangle={shape}: the factors must be >= 0 and the peak position in "
                "[0, 1] (a share of the run; airbench: 0.2, 0.23, 0.07)"
            )


# The names the training parts register (checked here: config sits below them).
LR_SCHEDULES = ("constant", "cosine", "step", "triangle")
PER_STEP_SCHEDULES = ("triangle",)  # a new lr every step: no CUDA graph can bake it in
AUGMENTATIONS = ("paper", "flip_translate")

TTA_LEVELS = {0: "none", 1: "mirror", 2: "mirror and +-1 px translations"}


@dataclass(frozen=True)
class EvalConfig:
    tta: int = setting(
        0, "test-time augmentation of val and test: 0 none, 1 mirror, 2 mirror and +-1 px shifts"
    )

    def check(self) -> None:
        if self.tta not in TTA_LEVELS:
            levels = ", ".join(f"{k} ({v})" for k, v in TTA_LEVELS.items())
            raise ConfigError(f"eval.tta={self.tta} must be one of {levels}")


@dataclass(frozen=True)
class ReferenceConfig:
    learner: str | None = setting(
        None, "reference-model architecture (null: the learner's)", registry="learner"
    )
    epochs: int = setting(10, "epochs of plain training on the holdout")

    def check(self) -> None:
        _positive("reference.epochs", self.epochs)


@dataclass(frozen=True)
class TrainConfig:
    method: str = setting("saln", "training method", registry="method")
    filter_ratio: float = setting(0.8, "fraction of each loaded batch that is dropped, in [0, 1)")
    epochs: int = setting(25, "training epochs")
    batch_size: int = setting(64, "rows loaded per step (the paper's convention)")
    learner_batch_size: int | None = setting(
        None, "if set: rows trained per step, more loaded (JEST's convention)"
    )
    eval_batch_size: int = setting(512, "rows per evaluation forward pass")
    seed: int = setting(0, "seed of the learner's init, the order and the augmentation")
    device: str = setting("auto", "auto, cpu, cuda or cuda:N")
    amp: bool = setting(True, "bf16 autocast on CUDA (ignored on CPU)")
    channels_last: bool = setting(True, "channels-last memory format on CUDA")
    cpu_channels_last: bool = setting(
        False, "channels-last on CPU too (oneDNN's convolutions run faster in it)"
    )
    compile: bool = setting(False, "torch.compile the learner")
    cuda_graphs: bool | str = setting(
        "auto", "replay whole steps from CUDA graphs: true, false or auto (one CUDA process, SGD)"
    )
    deterministic: bool = setting(False, "torch.use_deterministic_algorithms")
    budget_examples: int | None = setting(
        None,
        "standard_matched: train this many examples (whole epochs, the schedule decayed over "
        "them) instead of (1 - filter_ratio) of the epochs",
    )
    budget_of: str | None = setting(
        None, "standard_matched: the method whose trained examples set budget_examples"
    )
    budget_fraction: float | None = setting(
        None,
        "standard_matched: train this share of the epochs, (0, 1], the schedule decayed over "
        "them (a point of standard's compute frontier)",
    )
    prune_ratio: float = setting(
        0.5, "InfoBatch: chance that a sample below the mean loss is left out of an epoch, [0, 1)"
    )
    infobatch_delta: float = setting(
        0.875, "InfoBatch: share of the epochs after which every sample trains, (0, 1]"
    )
    select_from: float = setting(
        0.0, "share of the epochs trained on every row before a selector starts (warm-up), [0, 1)"
    )
    select_until: float = setting(
        1.0, "share of the epochs after which a selector stops and every row trains, (0, 1]"
    )
    ratio_ramp: str = setting("constant", "filter ratio over the selecting epochs", registry="ramp")
    coverage: bool = setting(
        False,
        "model-free selectors: prefer rows not trained yet in this cycle (each sample about once "
        "per 1 / (1 - filter_ratio) epochs)",
    )
    selection_mode: str = setting(
        "local", "model-aware selection under torchrun: local (per rank) or global"
    )
    check_every: int = setting(
        50, "steps between non-finite-loss checks on CUDA (every step on CPU)"
    )
    tensorboard: bool = setting(False, "also log to <run>/tensorboard")
    progress: bool = setting(True, "show a progress bar")

    def check(self) -> None:
        if not 0.0 <= self.filter_ratio < 1.0:
            raise ConfigError(f"train.filter_ratio={self.filter_ratio} must be in [0, 1)")
        for path, value in (
            ("train.epochs", self.epochs),
            ("train.batch_size", self.batch_size),
            ("train.eval_batch_size", self.eval_batch_size),
            ("train.check_every", self.check_every),
        ):
            _positive(path, value)
        _seed("train.seed", self.seed)
        if self.learner_batch_size is not None:
            _positive("train.learner_batch_size", self.learner_batch_size)
        self._check_budget()
        if not 0.0 <= self.prune_ratio < 1.0:
            raise ConfigError(f"train.prune_ratio={self.prune_ratio} must be in [0, 1)")
        if not 0.0 < self.infobatch_delta <= 1.0:
            raise ConfigError(f"train.infobatch_delta={self.infobatch_delta} must be in (0, 1]")
        _one_of("train.selection_mode", self.selection_mode, ("local", "global"))
        _graph_switch("train.cuda_graphs", self.cuda_graphs)

    def _check_budget(self) -> None:
        if self.budget_fraction is not None and not 0.0 < self.budget_fraction <= 1.0:
            raise ConfigError(
                f"train.budget_fraction={self.budget_fraction} must be in (0, 1]: the share of "
                "standard's epochs a frontier point trains"
            )
        for key in ("budget_examples", "budget_fraction"):
            if getattr(self, key) is not None and self.method != "standard_matched":
                raise ConfigError(
                    f"train.{key} sets the budget of standard_matched, and this run is "
                    f"{self.method!r}: set train.method=standard_matched or drop the budget"
                )
        if self.budget_examples is not None:
            _positive("train.budget_examples", self.budget_examples)
            if self.budget_fraction is not None:
                raise ConfigError(
                    "train.budget_examples and train.budget_fraction both set a budget: keep one"
                )
        if self.budget_of is not None and self.budget_examples is None is self.budget_fraction:
            raise ConfigError(
                "train.budget_of names whose budget train.budget_examples (or the frontier's "
                "train.budget_fraction) holds: set both"
            )


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def unshared_settings(methods: Collection[str]) -> frozenset[tuple[str, str]]:
    """The ``(section, key)`` settings that some of ``methods`` do not read. A method that does
    not read a setting runs the same whatever its value, so a difference in it does not set
    that method's runs apart from the others'."""
    config = Config()
    return frozenset(
        (section.name, key.name)
        for section in fields(config)
        for key in fields(getattr(config, section.name))
        if key.metadata.get("read_by") and not set(methods) <= set(key.metadata["read_by"])
    )


def _suggest(name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _coerce(path: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against the field's type hint, converting ints to floats where allowed."""
    is_list = getattr(hint, "__origin__", None) is list
    allowed = (hint,) if is_list else getattr(hint, "__args__", (hint,))
    if value is None and type(None) in allowed:
        return None
    if float in allowed and isinstance(value, str):
        value = _float_text(value)
    for kind in allowed:
        if getattr(kind, "__origin__", None) is list:
            return _coerce_list(path, value, kind.__args__[0])
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


def _coerce_list(path: str, value: Any, item: Any) -> list[Any]:
    if isinstance(value, str):  # --set model.widths=32,64,64
        value = [v.strip() for v in value.split(",") if v.strip()]
        value = [int(v) if v.lstrip("-").isdigit() else v for v in value]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{path} must be a list of {item.__name__}, got {value!r}")
    return [_coerce(f"{path}[{i}]", v, item) for i, v in enumerate(value)]


FLOAT_TEXT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _float_text(text: str) -> float | str:
    """A number written as text, as YAML 1.1 leaves ``1e-3`` (no dot): its value; else the text."""
    return float(text) if FLOAT_TEXT.fullmatch(text.strip()) else text


# Keys earlier versions wrote that no longer exist, and why. A stored run's config may hold
# them (they are dropped on reading it); a config a user passes is refused, naming the reason.
RETIRED_KEYS = {
    ("train", "jest_chunks"): (
        "it never changed JEST's draws: with a per-sample loss the chunks' joint draw is one "
        "Gumbel top-k (docs/methods.md); remove it"
    ),
}


def drop_retired(data: dict[str, Any], stored: bool) -> dict[str, Any]:
    """``data`` without :data:`RETIRED_KEYS`; unless ``stored``, one of them is an error."""
    for section, key in RETIRED_KEYS:
        values = data.get(section)
        if not isinstance(values, dict) or key not in values:
            continue
        if not stored:
            raise ConfigError(f"{section}.{key} was removed: {RETIRED_KEYS[(section, key)]}")
        data = {**data, section: {k: v for k, v in values.items() if k != key}}
    return data


def from_dict(
    data: dict[str, Any] | None, base: Config | None = None, *, stored: bool = False
) -> Config:
    """Merge a nested mapping into ``base`` (defaults if None); unknown keys are errors.
    ``stored``: ``data`` is a run's recorded config, which may hold :data:`RETIRED_KEYS`."""
    base = base or Config()
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(data).__name__}")
    data = drop_retired(data, stored)
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


def yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error in one line: what is wrong and where (line and column, 1-based)."""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    mark = getattr(err, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (it would keep the last
    value silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


PACKAGED = Path(__file__).resolve().parent / "configs"  # configs that ship with saln


def packaged_configs() -> list[str]:
    return sorted(f.stem for f in PACKAGED.glob("*.yaml"))


def config_file(name: str | Path) -> Path:
    """A YAML file by path, else a packaged config by name (``demo`` or ``demo.yaml``)."""
    file = Path(name)
    if file.is_file():
        return file
    if file.is_dir():
        raise ConfigError(f"config {file} is a folder: pass a YAML file in it, or a packaged name")
    packaged = PACKAGED / f"{file.name.removesuffix('.yaml')}.yaml"
    if file.parent == Path(".") and packaged.is_file():
        return packaged
    raise ConfigError(
        f"config file {file} does not exist; pass a YAML file or a packaged config: "
        f"{', '.join(packaged_configs())}"
    )


def load(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Defaults <- YAML file (a path or a packaged name) <- overrides (``{"train.lr": 0.01}``
    style dotted keys)."""
    config = Config()
    if path is not None:
        file = config_file(path)
        try:
            data = yaml.load(file.read_text(), Loader=UniqueKeyLoader)
        except yaml.YAMLError as err:
            raise ConfigError(
                f"config file {file} is not valid YAML: {yaml_problem(err)}"
            ) from None
        except UnicodeDecodeError:
            raise ConfigError(
                f"config file {file} is not text (it is not UTF-8): pass a YAML file"
            ) from None
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


# Pixels a side: far above any model here, and below what a probe of the input size could hold.
MAX_IMAGE_SIZE = 4096
SEED_LIMIT = 2**63  # torch's generators take a signed 64-bit seed


def _seed(path: str, value: int) -> None:
    if not 0 <= value < SEED_LIMIT:
        raise ConfigError(f"{path} must be in [0, 2**63), got {value}")


def _at_most(path: str, value: int, most: int) -> None:
    if value > most:
        raise ConfigError(f"{path}={value} is larger than saln supports ({most} px a side)")


def _finite(path: str, value: float) -> None:
    if not math.isfinite(value):
        raise ConfigError(f"{path}={value} must be a finite number")


def _one_of(path: str, choice: str, choices: tuple[str, ...]) -> None:
    if choice not in choices:
        raise ConfigError(f"{path}={choice!r} is not one of {', '.join(choices)}")


def _graph_switch(path: str, switch: bool | str) -> None:
    if isinstance(switch, str) and switch != "auto":
        raise ConfigError(f"{path}={switch!r} must be true, false or auto")


def validate(config: Config) -> None:
    """Each section checks its own values (``check``); what spans sections is checked here.
    Registry lookups happen when the run is built."""
    c = config
    sections = (c.data, c.model, c.features, c.selection, c.optim, c.reference, c.train, c.eval)
    for section in sections:
        section.check()
    t, o = config.train, config.optim
    if t.cuda_graphs is True and (t.compile or o.optimizer != "sgd"):
        raise ConfigError(
            "train.cuda_graphs captures eager SGD steps: set train.compile=false and "
            "optim.optimizer=sgd, or train.cuda_graphs=false"
        )
    if t.cuda_graphs is True and o.schedule in PER_STEP_SCHEDULES:
        raise ConfigError(
            f"train.cuda_graphs bakes the lr into each captured step, and optim.schedule="
            f"{o.schedule} changes it every step: set train.cuda_graphs=false (or auto)"
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
        and config.optim.schedule not in PER_STEP_SCHEDULES
    )


def channels_last(config: Config, device_type: str) -> bool:
    """Whether the learner and its batches use the channels-last memory format."""
    t = config.train
    return t.channels_last if device_type == "cuda" else t.cpu_channels_last
