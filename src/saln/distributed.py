"""torchrun support: process-group set-up, rank-0 decisions and collectives.

Every helper is a no-op in a single process, so callers read the same either way. Launch:
``torchrun --nproc_per_node=N -m saln train ...`` (NCCL on CUDA, gloo on CPU); a failing rank
makes torchrun stop the others, and every collective has a timeout, so no rank hangs. This
module imports nothing else of saln, so any layer may use it.
"""

from __future__ import annotations

import ctypes
import datetime
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")
TIMEOUT = datetime.timedelta(seconds=int(os.environ.get("SALN_DIST_TIMEOUT_S", "600")))


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


PR_SET_PDEATHSIG = 1  # prctl option: a signal for this process when its parent dies


def die_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when its parent dies (a no-op elsewhere): a
    torchrun whose launcher was killed, or a rank whose torchrun was, must not train on."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def compute_init(device: str) -> DistInfo:
    """Join the process group torchrun describes in the environment; pin this rank's GPU."""
    if not launched_by_torchrun():
        return DistInfo()
    die_with_parent()
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
        except Exception as err:  # every rank raises it: none waits for a broadcast
            payload[0] = ("error", (type(err), str(err)))
    dist.broadcast_object_list(payload, src=0)
    status, value = payload[0]
    if status == "error":
        kind, message = value
        raise kind(message)
    return value


def differing_ranks(digest: str) -> list[int]:
    """The ranks whose ``digest`` differs from rank 0's (empty in one process)."""
    if not active():
        return []
    digests: list[str] = [""] * dist.get_world_size()
    dist.all_gather_object(digests, digest)
    return [r for r, d in enumerate(digests) if d != digests[0]]


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
