"""A reference model's per-sample losses for ``rho_loss`` and ``jest`` in a loop of your own:
computed once, by global index, and cached on disk under the model's and the data's
fingerprint, so a cache written for other weights or another dataset is recomputed rather
than used.

    ref = saln.loop.reference_losses(reference_model, train_set, cache="runs/ref.pt")
    curator = saln.Curator(len(train_set), "rho_loss", epochs=E, ref_losses=ref)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sized
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from saln.errors import InvalidInput
from saln.io import exclusive, save_torch_atomic

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def fingerprint(model: nn.Module, size: int) -> str:
    """The model's weights and buffers, and the number of samples scored."""
    digest = hashlib.sha256(str(size).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:20]


@torch.no_grad()
def score(
    model: nn.Module, loader: DataLoader, device: torch.device, loss_fn: LossFn
) -> torch.Tensor:
    """Per-sample losses in the loader's order (it must not shuffle)."""
    was_training = model.training
    model.eval()
    losses = []
    for batch in loader:
        inputs, labels = batch[0].to(device), batch[1].to(device)
        per_sample = loss_fn(model(inputs), labels)
        if per_sample.shape != labels.shape[:1]:
            raise InvalidInput(
                f"loss_fn must return one loss per sample ({len(labels)},), got shape "
                f"{tuple(per_sample.shape)}: use reduction='none'"
            )
        losses.append(per_sample.float().cpu())
    model.train(was_training)
    return torch.cat(losses)


def reference_losses(
    model: nn.Module,
    dataset: Dataset[Any],
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    cache: str | Path | None = None,
    loss_fn: LossFn | None = None,
) -> torch.Tensor:
    """``model``'s loss on every sample of ``dataset`` (items ``(input, label, ...)``), as an
    (N,) tensor by index. With ``cache``, the losses are read from that file when it holds
    this model's and this dataset size's losses, and written to it (atomically) otherwise."""
    if not isinstance(dataset, Sized):
        raise TypeError("the dataset must have a length: the losses are indexed by sample")
    loss_fn = loss_fn or (lambda out, y: F.cross_entropy(out, y, reduction="none"))
    device = torch.device(device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    if cache is None:
        return score(model, loader, device, loss_fn)
    path, key = Path(cache), fingerprint(model, len(dataset))
    with exclusive(path.with_suffix(".lock")):
        if path.exists():
            cached = torch.load(path, map_location="cpu", weights_only=True)
            if cached.get("fingerprint") == key:
                return cached["losses"]
        losses = score(model, loader, device, loss_fn)
        save_torch_atomic(path, {"fingerprint": key, "losses": losses})
    return losses
