"""Channels-last against the default layout for CPU training steps (``train.cpu_channels_last``).

    python -m benchmarks.bench_channels_last

A fixed random batch, one optimizer step each: the airbench learner at the CPU recipe's widths
(batch 1024) and small_cnn (batch 64, cifar10_full_cpu's), both at 32 px, timed in interleaved
rounds. JSON to ``benchmarks/results/channels_last_cpu.json``.
"""

from __future__ import annotations

from typing import Any

import torch

from benchmarks.common import RESULTS, fixed_batch_step, interleaved_medians, machine, write_json
from saln import config as cfg

CASES: dict[str, tuple[str, int]] = {
    "airbench_32-64-64": ("cifar10_fast_cpu", 1024),
    "small_cnn": ("cifar10_full_cpu", 64),
}


def main() -> None:
    cpu = torch.device("cpu")
    results: dict[str, Any] = {}
    for name, (config_name, batch) in CASES.items():
        steps = {
            layout: fixed_batch_step(
                cfg.load(config_name, {"train.cpu_channels_last": layout == "channels_last"}),
                batch,
                cpu,
            )
            for layout in ("contiguous", "channels_last")
        }
        seconds = interleaved_medians(steps, repeats=5 if batch > 100 else 30)
        results[name] = {
            "batch": batch,
            "step_s": seconds,
            "speedup": seconds["contiguous"] / seconds["channels_last"],
        }
        print(name, results[name], flush=True)
    write_json({"machine": machine(), "cases": results}, RESULTS / "channels_last_cpu.json")


if __name__ == "__main__":
    main()
