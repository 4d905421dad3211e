"""``airbench``: a fast CIFAR-10 learner in the style of airbench94 (Jordan 2024, arXiv
2404.00498), written here from its published description.

A frozen 2x2 whitening convolution whose filters are the eigenvectors of the training patches'
covariance, each scaled by ``1 / sqrt(eigenvalue + eps)``, and their negatives (2 * 3 * 4 = 24
channels; only its bias trains, and only for the first epochs); then three conv groups (conv,
max-pool, BatchNorm, GELU, conv, BatchNorm, GELU; depth 3 adds a third conv with a residual
connection) whose convolutions start as identities (dirac) and whose BatchNorm weights stay 1;
a global max-pool and a bias-free linear head scaled by 1/9. Widths 64/256/256 are airbench94's.

The whitening needs data: :meth:`Airbench.init_from_data` sets it from un-augmented training
images, once, before training (the engine calls it; see :class:`DataInitialised`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from saln.errors import InvalidInput

PATCH = 2  # the whitening filters' size
WHITEN_EPS = 5e-4  # keeps the directions of tiny variance from being blown up
HEAD_SCALE = 1 / 9
WIDTHS = (64, 256, 256)  # airbench94's
BN_MOMENTUM = 0.4  # torch's convention: the batch's share of the running statistics


def patch_whitening(
    images: torch.Tensor, patch: int = PATCH, eps: float = WHITEN_EPS
) -> torch.Tensor:
    """Whitening filters (2 * c * patch^2, c, patch, patch) of images (n, c, h, w): the
    eigenvectors of the covariance of every ``patch`` x ``patch`` patch, each scaled by
    ``1 / sqrt(eigenvalue + eps)``, followed by their negatives. Applied to centred patches
    the first half gives a covariance of ``diag(l / (l + eps))``: nearly the identity."""
    c = images.shape[1]
    windows = images.double().unfold(2, patch, 1).unfold(3, patch, 1)  # (n, c, h', w', p, p)
    rows = windows.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * patch * patch)
    centred = rows - rows.mean(0)
    covariance = centred.T @ centred / len(rows)
    values, vectors = torch.linalg.eigh(covariance)
    filters = (vectors.T / (values.clamp_min(0) + eps).sqrt()[:, None]).flip(0)
    filters = filters.reshape(-1, c, patch, patch).float()
    return torch.cat([filters, -filters])


def check_widths(widths: Sequence[int], depth: int) -> tuple[int, int, int]:
    if len(widths) != 3 or not all(isinstance(w, int) and w > 0 for w in widths):
        raise InvalidInput(f"model.widths must be three positive ints, got {list(widths)}")
    if depth not in (2, 3):
        raise InvalidInput(f"model.depth must be 2 or 3 (convs per group), got {depth}")
    return widths[0], widths[1], widths[2]


def _conv(cin: int, cout: int) -> nn.Conv2d:
    """A 3x3 convolution that starts as the identity on its first ``cin`` output channels."""
    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[: min(cin, cout)])
    return conv


def _norm(width: int) -> nn.BatchNorm2d:
    norm = nn.BatchNorm2d(width, momentum=BN_MOMENTUM)
    norm.weight.requires_grad_(False)  # scale fixed at 1: only the bias trains
    return norm


class ConvGroup(nn.Module):
    def __init__(self, cin: int, cout: int, depth: int) -> None:
        super().__init__()
        self.conv1, self.pool, self.norm1 = _conv(cin, cout), nn.MaxPool2d(2), _norm(cout)
        self.conv2, self.norm2 = _conv(cout, cout), _norm(cout)
        self.third = (
            nn.Sequential(_conv(cout, cout), _norm(cout), nn.GELU()) if depth == 3 else None
        )
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        x = self.act(self.norm2(self.conv2(x)))
        return x if self.third is None else x + self.third(x)


class Airbench(nn.Module):
    def __init__(
        self,
        num_classes: int,
        widths: Sequence[int] = WIDTHS,
        depth: int = 2,
        whiten_bias_epochs: int | None = None,
    ) -> None:
        super().__init__()
        self.whiten_bias_epochs = whiten_bias_epochs
        w1, w2, w3 = check_widths(widths, depth)
        whitened = 2 * 3 * PATCH * PATCH
        self.whiten = nn.Conv2d(3, whitened, PATCH, bias=True)
        self.whiten.weight.requires_grad_(False)
        self.layers = nn.Sequential(
            nn.GELU(),
            ConvGroup(whitened, w1, depth),
            ConvGroup(w1, w2, depth),
            ConvGroup(w2, w3, depth),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(w3, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(self.whiten(x))) * HEAD_SCALE

    def start_epoch(self, epoch: int) -> None:
        """The whitening bias trains for the first ``whiten_bias_epochs`` epochs only."""
        assert self.whiten.bias is not None
        last = self.whiten_bias_epochs
        self.whiten.bias.requires_grad_(last is None or epoch < last)

    def init_from_data(self, images: torch.Tensor) -> None:
        """Set the whitening filters from un-augmented training images (n, 3, h, w)."""
        with torch.no_grad():
            filters = patch_whitening(images.float().cpu())
            self.whiten.weight.copy_(filters.to(self.whiten.weight.device))
            assert self.whiten.bias is not None
            self.whiten.bias.zero_()
