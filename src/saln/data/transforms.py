"""The paper's augmentation recipe with torchvision.transforms.v2 (the CPU DataLoader path),
and the one image geometry every loader shares.

torchvision is imported where a transform is built: importing it costs seconds (its ops pull in
torch's compiler stack), and the resident loaders, which most runs use, need only the geometry.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from torchvision.transforms import v2

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
    height, width = images.shape[-2:]
    if (height, width) == (size, size):
        return images
    # torchvision's resize rule: the long side scaled by size / short side, truncated.
    short, long = min(height, width), max(height, width)
    resized = int(size * long / short)
    new_height, new_width = (resized, size) if width <= height else (size, resized)
    if (new_height, new_width) != (height, width):
        channels, lead = images.shape[-3], images.shape[:-3]
        flat = images.reshape(-1, channels, height, width)  # interpolate wants (N, C, H, W)
        flat = F.interpolate(
            flat, size=[new_height, new_width], mode="bilinear", align_corners=False,
            antialias=True,
        )  # fmt: skip
        images = flat.reshape(*lead, channels, new_height, new_width)
    top, left = round((new_height - size) / 2), round((new_width - size) / 2)
    return images[..., top : top + size, left : left + size]


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
    from torchvision.transforms import v2

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
    from torchvision.transforms import v2

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
