"""airbench's training augmentation on a resident batch: alternating flip and translation.

Every image gets one random mirror for the whole run (drawn from the run's seed, by global
index); in odd epochs every image is mirrored relative to that, so each image is seen both ways
in every two epochs, where independent coin flips would show some images one way only (Jordan
2024, "alternating flip"). Then each image is shifted by up to 2 px in each direction, the
border reflected, drawn per image and epoch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from saln.data.gpu import flip, normalise
from saln.data.transforms import fit_square

TRANSLATE_PX = 2


def alternating_flips(first: torch.Tensor, epoch: int) -> torch.Tensor:
    """Which images to mirror in ``epoch``: the run's first draw, inverted in odd epochs."""
    return first ^ bool(epoch % 2)


def translate(x: torch.Tensor, pad: int, generator: torch.Generator | None) -> torch.Tensor:
    """Each image shifted by its own offset in [-pad, pad] px down and across, the border
    reflected (a random crop of the reflect-padded image)."""
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect").permute(0, 2, 3, 1)
    dy, dx = torch.randint(0, 2 * pad + 1, (2, b), generator=generator, device=x.device)
    rows = dy[:, None] + torch.arange(h, device=x.device)
    cols = dx[:, None] + torch.arange(w, device=x.device)
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


class FlipTranslate:
    """The augmentation of training batches of a source of ``rows`` images."""

    def __init__(self, image_size: int, rows: int, seed: int, device: torch.device) -> None:
        draw = torch.rand(rows, generator=torch.Generator().manual_seed(seed)) < 0.5
        self.first_flip = draw.to(device)
        self.image_size = image_size

    def __call__(
        self,
        images: torch.Tensor,
        generator: torch.Generator | None = None,
        order: torch.Generator | None = None,  # unused: no op order to draw
        *,
        indices: torch.Tensor,
        epoch: int,
    ) -> torch.Tensor:
        x = fit_square(images.float().div_(255), self.image_size)
        x = flip(x, alternating_flips(self.first_flip[indices], epoch))
        return normalise(translate(x, TRANSLATE_PX, generator))
