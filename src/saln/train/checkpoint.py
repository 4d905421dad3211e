"""Atomic per-epoch checkpoints; a killed run resumes from the last complete epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from saln.errors import InvalidInput
from saln.io import save_torch_atomic

CHECKPOINT = "checkpoint.pt"
BEST = "best_model.pt"


def save(run_dir: Path, state: dict[str, Any]) -> None:
    save_torch_atomic(run_dir / CHECKPOINT, state)


def load(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / CHECKPOINT
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # an atomic write cannot leave half a file; anything else is odd
        first = str(err).strip().partition(". ")[0] or type(err).__name__
        raise InvalidInput(
            f"checkpoint {path} cannot be read ({first}); it was damaged after it was written: "
            "rerun with --overwrite"
        ) from None


def save_best(run_dir: Path, model_state: dict[str, torch.Tensor]) -> None:
    save_torch_atomic(run_dir / BEST, model_state)


def load_best(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / BEST, map_location="cpu", weights_only=True)


def cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
