"""A saln method in PyTorch Lightning (``pip install saln[lightning]``).

    curator = saln.Curator(len(train_set), "infobatch", epochs=E)
    loader = DataLoader(train_set, batch_sampler=curator.batch_sampler)   # yields indices too
    trainer = Trainer(max_epochs=E, callbacks=[CuratorCallback(curator)],
                      use_distributed_sampler=False)                     # the Curator shards
    trainer.fit(module, loader)

and in ``training_step``: ``return curator.loss(F.cross_entropy(out, y, reduction="none"),
indices)`` (with method ``proxy``, ``kept = curator.select(x, y, indices)`` first, and the
kept rows' losses; the proxy stays outside the module, so Lightning's DDP leaves it alone and
the Curator averages its gradients itself). The callback plans each epoch, hands InfoBatch
every rank's losses at its end, logs the epoch's planning statistics, keeps the Curator on
the module's device and its state in Lightning's checkpoints. Works with
``Trainer(strategy="ddp")``: the process group starts inside ``fit``, and the Curator follows
it from the first epoch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from saln.errors import InvalidInput
from saln.loop.curator import Curator


class CuratorCallback(pl.Callback):
    """Drives a :class:`~saln.loop.curator.Curator` from a Lightning ``Trainer``."""

    def __init__(self, curator: Curator) -> None:
        self.curator = curator

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            check_trainer(trainer, self.curator)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.curator.to(pl_module.device)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.curator.set_epoch(trainer.current_epoch)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        stats = self.curator.end_epoch()
        if stats:
            # every rank planned the same epoch: the mean over ranks is each rank's value
            pl_module.log_dict({f"saln/{k}": float(v) for k, v in stats.items()}, sync_dist=True)

    def state_dict(self) -> dict[str, Any]:
        state = self.curator.state_dict()
        return {**as_tensors(state), "proxy": state["proxy"]}  # the proxy's are tensors already

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        proxy = state_dict.get("proxy")
        self.curator.load_state_dict({**as_arrays(state_dict), "proxy": proxy})


def check_trainer(trainer: pl.Trainer, curator: Curator) -> None:
    """Refuse, before the first step, a Trainer that would train other rows than the Curator
    deals or another schedule than it plans."""
    connector = getattr(trainer, "_accelerator_connector", None)
    if trainer.world_size > 1 and getattr(connector, "use_distributed_sampler", False):
        raise InvalidInput(
            "the Curator's batch sampler deals each process its own batches, and Lightning "
            "would shard them again: pass Trainer(use_distributed_sampler=False)"
        )
    if curator.sampler.every_rank:
        raise InvalidInput("under Lightning build the Curator with sharded_by='saln' (the default)")
    if curator.method.selects_in == "epoch" and trainer.max_epochs != curator.epochs:
        raise InvalidInput(
            f"Trainer(max_epochs={trainer.max_epochs}) and Curator(epochs={curator.epochs}) "
            f"differ, and {curator.method.name} plans its epochs by the Curator's count: pass "
            "the same number to both"
        )


def as_tensors(state: Any) -> Any:
    """NumPy arrays as tensors, so the state loads under ``torch.load(weights_only=True)``."""
    if isinstance(state, dict):
        return {k: as_tensors(v) for k, v in state.items()}
    return torch.from_numpy(state.copy()) if isinstance(state, np.ndarray) else state


def as_arrays(state: Any) -> Any:
    if isinstance(state, dict):
        return {k: as_arrays(v) for k, v in state.items()}
    return state.cpu().numpy() if isinstance(state, torch.Tensor) else state
