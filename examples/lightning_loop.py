"""PyTorch Lightning with saln: the Curator's batch sampler, its loss in ``training_step`` and
``CuratorCallback``, on scikit-learn's digits. ``--devices 2`` trains with
``Trainer(strategy="ddp")`` on CPU (gloo); needs ``pip install saln[lightning]``.

    python examples/lightning_loop.py --method infobatch --epochs 8 --devices 2
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import digits
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import saln
from saln.loop.lightning import CuratorCallback


class DigitsModule(pl.LightningModule):
    def __init__(self, curator: saln.Curator) -> None:
        super().__init__()
        self.curator = curator
        self.net = digits.mlp()

    def training_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels, indices = batch
        kept = self.curator.select(images, labels, indices)  # every row but with method proxy
        per_sample = F.cross_entropy(self.net(images[kept]), labels[kept], reduction="none")
        return self.curator.loss(per_sample, indices[kept])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def build(
    method: str, epochs: int, devices: int, callbacks: Sequence[pl.Callback] = ()
) -> tuple[pl.Trainer, DigitsModule, DataLoader]:
    images, labels = digits.images_and_labels()
    train = digits.TRAIN
    curator = saln.Curator(  # pixels as the reference features of the spectral methods
        train, method, epochs=epochs, features=images[:train].flatten(1), labels=labels[:train],
        **digits.curator_options(method),
    )  # fmt: skip
    loader = DataLoader(digits.train_set(images, labels), batch_sampler=curator.batch_sampler)
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        use_distributed_sampler=False,  # the Curator deals each process its batches
        callbacks=[CuratorCallback(curator), *callbacks],
        logger=False,
        enable_checkpointing=any(isinstance(c, pl.callbacks.ModelCheckpoint) for c in callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    pl.seed_everything(0, verbose=False)
    return trainer, DigitsModule(curator), loader


def test_accuracy(module: DigitsModule) -> float:
    return digits.test_accuracy(module.net, *digits.images_and_labels())


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="infobatch", help="any saln method but rho_loss/jest")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--devices", type=int, default=1, help="processes (ddp above 1)")
    args = parser.parse_args(argv)
    trainer, module, loader = build(args.method, args.epochs, args.devices)
    trainer.fit(module, loader)
    accuracy = test_accuracy(module)
    if trainer.is_global_zero:
        print(f"{args.method}: test accuracy {accuracy:.3f}")
    return accuracy


if __name__ == "__main__":
    main()
