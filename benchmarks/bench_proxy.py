"""Method proxy's share of a CPU step on the strong recipe, and whether its steps can pay.

    python -m benchmarks.bench_proxy

On ``cifar10_fast_cpu`` (the airbench learner at 32/64/64, batch 1024, channels-last) with
filter ratio 0.5, timed in interleaved rounds on fixed random batches: the learner's training
step on 1024 rows (standard's step) and on the 512 kept rows; for each proxy option (widths x
scoring resolution), the proxy's no-grad forward over the 1024 loaded rows and its training step
on the 512 kept rows, the latter counted once every ``proxy_every`` (4) steps. A proxy step
costs ``proxy + learner(512)``; it pays only if that is below ``learner(1024)``. JSON to
``benchmarks/results/proxy_step_cpu.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from benchmarks.common import RESULTS, fixed_batch_step, interleaved_medians, machine, write_json
from saln import config as cfg
from saln.train.proxy import build_proxy

LOADED, KEPT, EVERY = 1024, 512, 4
OPTIONS = {  # name -> (proxy widths, scoring resolution)
    "8-16-16@32": ([8, 16, 16], 32),
    "8-16-16@16": ([8, 16, 16], 16),
    "16-32-32@32": ([16, 32, 32], 32),
    "16-32-32@16": ([16, 32, 32], 16),
    "4-8-8@16": ([4, 8, 8], 16),
}


def proxy_parts(widths: list[int], resolution: int) -> dict[str, Callable[[], object]]:
    """The proxy's scoring forward over the loaded rows and its step on the kept rows."""
    config = cfg.load("cifar10_fast_cpu", {
        "train.method": "proxy", "train.filter_ratio": 0.5, "selection.proxy_widths": widths,
        "selection.proxy_resolution": resolution, "selection.proxy_every": 1,
    })  # fmt: skip
    proxy = build_proxy(config, 10, torch.device("cpu"), KEPT)
    images = torch.randn(LOADED, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (LOADED,))
    return {
        "score": lambda: proxy.score(images, labels),
        "learn": lambda: proxy.learn(images[:KEPT], labels[:KEPT]),
    }


def main() -> None:
    cpu = torch.device("cpu")
    learner = cfg.load("cifar10_fast_cpu")
    fns: dict[str, Callable[[], object]] = {
        "learner_1024": fixed_batch_step(learner, LOADED, cpu),
        "learner_512": fixed_batch_step(learner, KEPT, cpu),
    }
    for name, (widths, resolution) in OPTIONS.items():
        for part, fn in proxy_parts(widths, resolution).items():
            fns[f"{name}:{part}"] = fn
    seconds = interleaved_medians(fns, repeats=7)
    full, kept = seconds["learner_1024"], seconds["learner_512"]
    options: dict[str, Any] = {}
    for name in OPTIONS:
        proxy = seconds[f"{name}:score"] + seconds[f"{name}:learn"] / EVERY
        options[name] = {
            "proxy_s": proxy,
            "proxy_share_of_step": proxy / (proxy + kept),
            "step_vs_standard": (proxy + kept) / full,
        }
        print(name, {k: round(v, 3) for k, v in options[name].items()}, flush=True)
    payload = {
        "machine": machine(),
        "config": "cifar10_fast_cpu",
        "loaded": LOADED,
        "kept": KEPT,
        "proxy_every": EVERY,
        "step_s": seconds,
        "kept_step_vs_full": kept / full,
        "options": options,
    }
    print("learner 512 vs 1024:", round(kept / full, 3))
    write_json(payload, RESULTS / "proxy_step_cpu.json")


if __name__ == "__main__":
    main()
