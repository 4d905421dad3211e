"""Hugging Face Accelerate with saln, on scikit-learn's digits: the Curator's sampler goes
through ``accelerator.prepare`` like any loader (built with ``sharded_by="accelerate"``, it
yields every process's batches and Accelerate deals them). Needs ``pip install
saln[accelerate]``; one process as is, several with ``accelerate launch`` or torchrun:

    torchrun --nproc_per_node 2 examples/accelerate_loop.py --method infobatch --epochs 8
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import saln

TRAIN = 1500  # the first 1,500 digits train, the other 297 test


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="infobatch", help="any saln method but rho_loss/jest")
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args(argv)
    accelerator = Accelerator(cpu=True)
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16
    labels = torch.tensor(digits.target)
    train = TensorDataset(images[:TRAIN], labels[:TRAIN], torch.arange(TRAIN))  # + its index
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    curator = saln.Curator(  # pixels as the reference features of the spectral methods
        TRAIN, args.method, epochs=args.epochs, features=images[:TRAIN].flatten(1),
        labels=labels[:TRAIN], sharded_by="accelerate", device=accelerator.device,
    )  # fmt: skip
    loader = DataLoader(train, batch_sampler=curator.batch_sampler)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    for epoch in range(args.epochs):
        curator.set_epoch(epoch)
        for x, y, indices in loader:
            per_sample = F.cross_entropy(model(x), y, reduction="none")
            optimizer.zero_grad()
            accelerator.backward(curator.loss(per_sample, indices))
            optimizer.step()
        planned = curator.end_epoch()
        accelerator.print(f"epoch {epoch + 1}: {planned}")
    with torch.no_grad():
        predicted = accelerator.unwrap_model(model)(images[TRAIN:]).argmax(1)
    accuracy = float((predicted == labels[TRAIN:]).float().mean())
    accelerator.print(f"{args.method}: test accuracy {accuracy:.3f}")
    return accuracy


if __name__ == "__main__":
    main()
