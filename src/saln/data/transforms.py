"""The paper's augmentation recipe with torchvision.transforms.v2 (the CPU DataLoader path)."""

from __future__ import annotations

from functools import lru_cache

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ROTATION_DEGREES = 15.0
JITTER = {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.1}


@lru_cache(maxsize=64)
def channel_constant(
    values: tuple[float, ...], device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """``values`` as a (C, 1, 1) tensor, built once per device and dtype. A fresh
    ``torch.tensor`` on a GPU is a pageable host copy that would synchronise every batch."""
    return torch.tensor(values, dtype=dtype, device=device)[:, None, None]


def fit_square(images: torch.Tensor, size: int) -> torch.Tensor:
    """The one image geometry of every loader: resize the short side to ``size`` (bilinear,
    antialiased) and centre-crop a ``size`` x ``size`` square, so a non-square image keeps its
    aspect ratio. ``images``: float (..., C, H, W); a square image is only resized."""
    if images.shape[-2:] == (size, size):
        return images
    return TF.center_crop(TF.resize(images, [size], antialias=True), [size, size])


class FitSquare(torch.nn.Module):
    """:func:`fit_square` as a transform (a module, so DataLoader workers can pickle it)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return fit_square(images, self.size)


def train_transform(image_size: int) -> v2.Compose:
    """Flip, rotation up to 15 degrees, colour jitter, :func:`fit_square` geometry, ImageNet
    normalisation."""
    return v2.Compose(
        [
            v2.PILToTensor(),
            v2.RandomHorizontalFlip(),
            v2.RandomRotation(ROTATION_DEGREES),
            v2.ColorJitter(**JITTER),
            v2.ToDtype(torch.float32, scale=True),
            FitSquare(image_size),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def eval_transform(image_size: int) -> v2.Compose:
    """:func:`fit_square` geometry and ImageNet normalisation, as the resident loader's."""
    return v2.Compose(
        [
            v2.PILToTensor(),
            v2.ToDtype(torch.float32, scale=True),
            FitSquare(image_size),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def describe(image_size: int) -> str:
    """A stable description of the eval transform, stored in the feature cache's metadata."""
    return f"shortside{image_size}-centercrop{image_size}-imagenet-norm"
