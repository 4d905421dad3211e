"""What the examples share: scikit-learn's digits (the first 1,500 train, the other 297 test),
a dataset that returns each sample's index beside it, a small MLP, and method proxy's smaller
one."""

from __future__ import annotations

from typing import Any

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import TensorDataset

TRAIN = 1500


def images_and_labels() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16
    return images, torch.tensor(data.target)


def train_set(images: torch.Tensor, labels: torch.Tensor) -> TensorDataset:
    """(image, label, global index): the Curator needs each row's index."""
    return TensorDataset(images[:TRAIN], labels[:TRAIN], torch.arange(TRAIN))


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


def curator_options(method: str) -> dict[str, Any]:
    """Method proxy's scoring network (an MLP a eighth of the learner's width) and its
    optimizer; nothing for the others. Seeded apart, so every loop builds the same proxy
    whatever it seeded before."""
    if method != "proxy":
        return {}
    with torch.random.fork_rng():
        torch.manual_seed(1)
        net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    return {"proxy": net, "proxy_optimizer": torch.optim.SGD(net.parameters(), lr=0.1)}


def test_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        predicted = model(images[TRAIN:]).argmax(1)
    return float((predicted == labels[TRAIN:]).float().mean())
