"""The paper's augmentation recipe with torchvision.transforms.v2 (the CPU DataLoader path)."""

from __future__ import annotations

from functools import lru_cache

import torch
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


def train_transform(image_size: int) -> v2.Compose:
    """Flip, rotation up to 15 degrees, colour jitter, resize, ImageNet normalisation."""
    return v2.Compose(
        [
            v2.PILToTensor(),
            v2.RandomHorizontalFlip(),
            v2.RandomRotation(ROTATION_DEGREES),
            v2.ColorJitter(**JITTER),
            v2.Resize((image_size, image_size), antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def eval_transform(image_size: int) -> v2.Compose:
    """Resize (short side), centre crop, ImageNet normalisation."""
    return v2.Compose(
        [
            v2.PILToTensor(),
            v2.Resize(image_size, antialias=True),
            v2.CenterCrop(image_size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def describe(image_size: int) -> str:
    """A stable description of the eval transform, stored in the feature cache's metadata."""
    return f"resize{image_size}-centercrop{image_size}-imagenet-norm"
