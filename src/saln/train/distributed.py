"""torchrun support: process-group set-up, rank-0 decisions, collectives, global selection.

Every helper is a no-op in a single process, so the engine reads the same either way. Launch:
``torchrun --nproc_per_node=N -m saln train ...`` (NCCL on CUDA, gloo on CPU); a failing rank
makes torchrun stop the others, and every collective has a timeout, so no rank hangs.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from saln.config import Config, ConfigError
from saln.selection import BatchView, Selector

T = TypeVar("T")
TIMEOUT = datetime.timedelta(seconds=int(os.environ.get("SALN_DIST_TIMEOUT_S", "600")))


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def compute_init(device: str) -> DistInfo:
    """Join the process group torchrun describes in the environment; pin this rank's GPU."""
    if not launched_by_torchrun():
        return DistInfo()
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=TIMEOUT)
    return DistInfo(rank, world, local)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def barrier() -> None:
    if active():
        dist.barrier()


def all_reduce(values: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Reduced copy of ``values`` over all ranks (sum or max)."""
    if not active():
        return values
    out = values.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return out


def all_reduce_numpy(values: np.ndarray, op: str = "sum") -> np.ndarray:
    if not active():
        return values
    return all_reduce(torch.from_numpy(np.ascontiguousarray(values)).to(torch.int64), op).numpy()


def on_rank0(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and give every rank its result, or re-raise its error everywhere
    (as the same exception type), so a refusal on rank 0 never leaves the others waiting."""
    if not active():
        return fn()
    payload: list[Any] = [None]
    if rank() == 0:
        try:
            payload[0] = ("ok", fn())
        except (ValueError, TypeError, RuntimeError) as err:
            payload[0] = ("error", (type(err), str(err)))
    dist.broadcast_object_list(payload, src=0)
    status, value = payload[0]
    if status == "error":
        kind, message = value
        raise kind(message)
    return value


def check_same_config(config: Config) -> None:
    """Every rank must run the same config; differences are caught before any work."""
    if not active():
        return
    digest = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()
    digests: list[str] = [""] * dist.get_world_size()
    dist.all_gather_object(digests, digest)
    odd = [r for r, d in enumerate(digests) if d != digests[0]]
    if odd:
        raise ConfigError(
            f"ranks {odd} were started with a config that differs from rank 0's; "
            "launch every rank with the same --config and flags"
        )


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    if not active():
        return model
    if device.type != "cuda":
        return nn.parallel.DistributedDataParallel(model)
    ids = [device.index if device.index is not None else torch.cuda.current_device()]
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    inner = getattr(model, "module", model)
    return getattr(inner, "_orig_mod", inner)  # torch.compile wraps too


def gather_rows(values: torch.Tensor) -> torch.Tensor:
    """Concatenate equally sized per-rank tensors along dim 0, in rank order."""
    parts = [torch.empty_like(values) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, values.contiguous())
    return torch.cat(parts)


def global_select(
    selector: Selector, view: BatchView, keep: int, generator: torch.Generator | None
) -> tuple[torch.Tensor, float]:
    """Select ``keep * world`` rows over the union of every rank's loaded batch, exactly as one
    process would on that global batch (same scores, same seed), and return this rank's share:
    (local positions, loss scale). The scale makes the DDP-averaged gradient the mean over the
    global kept set, whatever each rank's share."""
    world, me, n = dist.get_world_size(), dist.get_rank(), len(view)
    device = view.losses.device if view.losses is not None else view.indices.device

    def joined(values: torch.Tensor | None) -> torch.Tensor | None:
        return None if values is None else gather_rows(values.to(device))

    global_view = BatchView(
        indices=gather_rows(view.indices.to(device)).cpu(),
        labels=gather_rows(view.labels.to(device)),
        losses=joined(view.losses),
        ref_losses=joined(view.ref_losses),
        epoch=view.epoch,
        step=view.step,
    )
    positions = selector.select(global_view, keep * world, generator=generator).positions
    mine = positions[(positions >= me * n) & (positions < (me + 1) * n)] - me * n
    return mine, len(mine) * world / (keep * world)


def launch_torchrun(config: Config, out: Path, nproc: int) -> None:
    """Run one training run as ``torchrun --nproc_per_node=nproc -m saln train`` and wait."""
    # torchrun's per-launch log folder defaults to a new /tmp/torchelastic_* it never removes.
    with tempfile.TemporaryDirectory(prefix="saln-torchrun-") as scratch:
        config_file = Path(scratch) / "config.yaml"
        config_file.write_text(config.to_yaml())
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={nproc}",
            "--standalone",
            f"--log-dir={scratch}",
            "-m",
            "saln",
            "train",
            "--config",
            str(config_file),
            "--out",
            str(out),
        ]
        if (out / "config.yaml").exists():
            command.append("--resume")
        done = subprocess.run(command, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"torchrun for {out} failed with exit code {done.returncode}; see its output above"
        )
