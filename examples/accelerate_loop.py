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
from digits import TRAIN, curator_options, images_and_labels, mlp, test_accuracy, train_set
from torch.utils.data import DataLoader

import saln


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="infobatch", help="any saln method but rho_loss/jest")
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args(argv)
    accelerator = Accelerator(cpu=True)
    images, labels = images_and_labels()
    torch.manual_seed(0)
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    curator = saln.Curator(  # pixels as the reference features of the spectral methods
        TRAIN, args.method, epochs=args.epochs, features=images[:TRAIN].flatten(1),
        labels=labels[:TRAIN], sharded_by="accelerate", device=accelerator.device,
        **curator_options(args.method),
    )  # fmt: skip
    loader = DataLoader(train_set(images, labels), batch_sampler=curator.batch_sampler)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    for epoch in range(args.epochs):
        curator.set_epoch(epoch)
        for x, y, indices in loader:
            kept = curator.select(x, y, indices)  # every row but with method proxy
            per_sample = F.cross_entropy(model(x[kept]), y[kept], reduction="none")
            optimizer.zero_grad()
            accelerator.backward(curator.loss(per_sample, indices[kept]))
            optimizer.step()
        planned = curator.end_epoch()
        accelerator.print(f"epoch {epoch + 1}: {planned}")
    accuracy = test_accuracy(accelerator.unwrap_model(model), images, labels)
    accelerator.print(f"{args.method}: test accuracy {accuracy:.3f}")
    return accuracy


if __name__ == "__main__":
    main()
