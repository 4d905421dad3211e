"""Where the sampler reads reference features: ``get(indices)`` over any (N, d) table."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch

from saln.errors import InvalidInput


class FeatureSource(Protocol):
    def get(self, indices: np.ndarray) -> torch.Tensor: ...


class ArrayFeatures:
    """Adapts an (N, d) array or tensor, indexed by global index, to ``get(indices)``."""

    def __init__(self, table: np.ndarray | torch.Tensor) -> None:
        self.table = table

    def __len__(self) -> int:
        return len(self.table)

    def get(self, indices: np.ndarray) -> torch.Tensor:
        if isinstance(self.table, torch.Tensor):
            return self.table[torch.as_tensor(indices, device=self.table.device)]
        return torch.as_tensor(np.asarray(self.table[indices]))


def as_feature_source(features: Any, device: torch.device) -> FeatureSource | None:
    """A ``get(indices)`` view of the features. On CUDA the whole table moves to the GPU once,
    so an epoch's gather is one kernel instead of a host gather and copy that would cost more
    than the selection itself."""
    if features is None:
        return None
    if isinstance(features, torch.Tensor):
        features = features.detach()  # fixed reference features: selection never backpropagates
    if isinstance(features, (np.ndarray, torch.Tensor)):
        if features.ndim != 2:
            shape = tuple(features.shape)
            raise InvalidInput(f"features must be an (N, d) table, got shape {shape}")
        table: Any = features
    elif hasattr(features, "get"):
        if device.type != "cuda" or not hasattr(features, "numpy"):
            return features
        table = features.numpy()
    else:
        raise TypeError(
            "features must be an (N, d) array/tensor or have .get(indices), "
            f"got {type(features).__name__}"
        )
    if device.type == "cuda":
        host = np.array(table) if isinstance(table, np.ndarray) else table
        table = torch.as_tensor(host).to(device)
    return ArrayFeatures(table)


def gather(source: FeatureSource | None, indices: np.ndarray, device: torch.device) -> torch.Tensor:
    """Features of ``indices`` (any shape) as float32 on ``device``, shaped (*indices, d); a
    zero column where there are no features (selectors that read none)."""
    if source is None:
        return torch.zeros(*indices.shape, 1)
    flat = source.get(indices.reshape(-1))
    return flat.reshape(*indices.shape, flat.shape[-1]).to(device, torch.float32)
