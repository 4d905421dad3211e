"""Resident images and batched augmentation: the path that keeps a GPU fed.

Decoded uint8 images (:mod:`saln.data.decode`) are held on the device once (CIFAR-10 train is
150 MB; Pets at 224 px about 0.55 GB), and the paper's augmentation is applied to a whole batch
at once with independent random parameters per sample, the same distribution as the per-image v2
pipeline. It also runs on CPU, where it beats a DataLoader for small images (digits, CIFAR-10 at
32 px).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from saln.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    JITTER,
    ROTATION_DEGREES,
    channel_constant,
    fit_square,
)

GREY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


def flip(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask[:, None, None, None], x.flip(-1), x)


def rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image about its centre, nearest neighbour, zero fill (as v2.RandomRotation)."""
    rad = degrees * (math.pi / 180.0)
    cos, sin = torch.cos(rad), torch.sin(rad)
    zero = torch.zeros_like(cos)
    # affine_grid maps output to input coordinates; this rotates counter-clockwise as
    # torchvision does for a positive angle.
    theta = torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def _grey(x: torch.Tensor) -> torch.Tensor:
    return (x * channel_constant(GREY_WEIGHTS, x.device, x.dtype)).sum(-3, keepdim=True)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    f = factor[:, None, None, None]
    return (f * x + (1 - f) * other).clamp_(0, 1)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(x, torch.zeros_like(x), factor)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(x, _grey(x).mean((-1, -2), keepdim=True), factor)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(x, _grey(x), factor)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate hue by ``shift`` (fraction of a turn) per image, via HSV as torchvision does."""
    r, g, b = x.unbind(-3)
    maxc, minc = x.max(-3).values, x.min(-3).values
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    hue = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = torch.where(delta > 0, hue / 6.0, torch.zeros_like(hue))
    hue = (hue + shift[:, None, None]) % 1.0
    sat = torch.where(
        maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), maxc * 0
    )
    return _hsv_to_rgb(hue, sat, maxc)


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int64) % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = torch.stack(
        [
            torch.stack(c, -3)
            for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))
        ]
    )  # (6, B, 3, H, W)
    return table.gather(0, i[None, :, None].expand(1, -1, 3, -1, -1)).squeeze(0)


JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def normalise(x: torch.Tensor) -> torch.Tensor:
    mean = channel_constant(IMAGENET_MEAN, x.device, x.dtype)
    return (x - mean) / channel_constant(IMAGENET_STD, x.device, x.dtype)


class BatchAugment:
    """The paper's train augmentation on a uint8 batch, with per-sample random parameters.

    As torchvision's ColorJitter, the four colour ops run in a random order, drawn once per
    call here (once per image there; the resident pipeline augments up to 16 consecutive
    batches in one call); their factors are drawn per image. Per-sample parameters
    come from ``generator`` on the images' device, so a GPU batch needs no host transfer (a
    pageable host-to-device copy would synchronise the stream); the op order comes from the CPU
    generator ``order``.
    """

    def __init__(self, image_size: int, train: bool) -> None:
        self.image_size, self.train = image_size, train

    def __call__(
        self,
        images: torch.Tensor,
        generator: torch.Generator | None = None,
        order: torch.Generator | None = None,
        *,
        indices: torch.Tensor | None = None,  # unused: every draw is per call
        epoch: int = 0,
    ) -> torch.Tensor:
        x = images.float().div_(255)
        if self.train:
            x = self._augment(x, generator, order)
        return normalise(fit_square(x, self.image_size))

    def _augment(
        self, x: torch.Tensor, gen: torch.Generator | None, order: torch.Generator | None
    ) -> torch.Tensor:
        b = x.shape[0]

        def uniform(low: float, high: float) -> torch.Tensor:
            return torch.rand(b, generator=gen, device=x.device) * (high - low) + low

        x = flip(x, torch.rand(b, generator=gen, device=x.device) < 0.5)
        x = rotate(x, uniform(-ROTATION_DEGREES, ROTATION_DEGREES))
        keys = ("brightness", "contrast", "saturation")
        factors = [uniform(1 - JITTER[k], 1 + JITTER[k]) for k in keys]
        factors.append(uniform(-JITTER["hue"], JITTER["hue"]))
        for op in torch.randperm(4, generator=order).tolist():
            x = JITTER_OPS[op](x, factors[op])
        return x
