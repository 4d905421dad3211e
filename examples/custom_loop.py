"""A plain PyTorch training loop with saln's Curator: four lines change (the batch sampler,
``set_epoch``/``end_epoch``, the rows to forward and the loss), on scikit-learn's digits.

    python examples/custom_loop.py --method infobatch --epochs 8
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from digits import TRAIN, curator_options, images_and_labels, mlp, test_accuracy, train_set
from torch.utils.data import DataLoader

import saln


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="infobatch", help="any saln method but rho_loss/jest")
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args(argv)
    images, labels = images_and_labels()
    torch.manual_seed(0)
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    curator = saln.Curator(  # pixels as the reference features of the spectral methods
        TRAIN, args.method, epochs=args.epochs, features=images[:TRAIN].flatten(1),
        labels=labels[:TRAIN], **curator_options(args.method),
    )  # fmt: skip
    loader = DataLoader(train_set(images, labels), batch_sampler=curator.batch_sampler)
    for epoch in range(args.epochs):
        curator.set_epoch(epoch)
        trained = 0
        for x, y, indices in loader:
            kept = curator.select(x, y, indices)  # every row but with method proxy
            per_sample = F.cross_entropy(model(x[kept]), y[kept], reduction="none")
            loss = curator.loss(per_sample, indices[kept])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            trained += len(kept) if curator.last_kept is None else len(curator.last_kept)
        planned = curator.end_epoch()
        print(f"epoch {epoch + 1}: {trained} rows trained {planned}")
    accuracy = test_accuracy(model, images, labels)
    print(f"{args.method}: test accuracy {accuracy:.3f}")
    return accuracy


if __name__ == "__main__":
    main()
