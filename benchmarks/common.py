"""Shared benchmark helpers: machine description, timing, atomic JSON output."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from saln.config import Config, channels_last
from saln.io import write_json_atomic
from saln.runs.environment import loaded_code

RESULTS = Path(__file__).resolve().parent / "results"
loaded_code()  # the commit of the code this benchmark runs, pinned now, before it runs


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        **loaded_code(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
        info["driver"] = _nvidia_driver()
    return info


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def median_seconds(fn: Callable[[], object], repeats: int, sync: bool = False) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        if sync:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time of each ``fn``, timed in rounds that run every fn once (after one
    warm-up each), so a noisy spell on a shared machine hits all candidates alike. Each round
    starts one candidate later than the last, so no candidate always follows the same one (a
    large reference solve leaves the caches cold for whatever runs next)."""
    for fn in fns.values():
        fn()
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(times[name]) for name in names}


def write_json(payload: dict[str, Any], path: Path) -> Path:
    return write_json_atomic(path, payload)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def fixed_batch_step(
    config: Config, batch: int, device: torch.device, graphed: bool = False
) -> Callable[[], object]:
    """One train step of the configured learner on a fixed random batch already on the
    device, built as the engine builds it (optimizer, channels_last; CUDA graphs with
    ``graphed``): a model's compute limit, with no data path."""
    from saln.train.graphs import GraphedStep
    from saln.train.setup import build_optimizer, new_learner
    from saln.train.step import eager_step

    model = new_learner(config, 10, device)
    optimizer, _ = build_optimizer(model, config, batch)
    amp = config.train.amp
    step = GraphedStep(model, optimizer, amp) if graphed else eager_step(model, optimizer, amp)
    size = config.data.image_size
    images = torch.randn(batch, 3, size, size, device=device)
    if channels_last(config, device.type):
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch,), device=device)
    return lambda: step(images, labels, 1.0)
