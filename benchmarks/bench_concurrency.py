"""How separate processes share one GPU at the paper's small steps (decides gpu_compare.py's
``--parallel``).

    PYTHONPATH=src python -m benchmarks.bench_concurrency --out OUT/concurrency.json

Each worker process trains resnet18_cifar on one fixed batch already on the device (bf16,
channels_last, as the engine does). Workers warm up, report ready, then all start on one
signal and count steps for ``--seconds``. The result is the summed steps/s of P processes as a
ratio over one process alone, measured in the same run: near P means the GPU was idle between
launches; near 1 means it was already busy.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import RESULTS, fixed_batch_step, machine, sync, write_json
from saln import config as cfg


def worker(batch: int, seconds: float) -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    config = cfg.load(None, {"model.learner": "resnet18_cifar", "train.device": str(device)})
    step = fixed_batch_step(config, batch, device)
    for _ in range(5):
        step()
    sync(device)
    print("ready", flush=True)
    sys.stdin.readline()  # the parent's go, once every worker is ready
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10):
            step()
        sync(device)
        steps += 10
    print(json.dumps({"steps_per_s": steps / (time.perf_counter() - start)}), flush=True)


def together(processes: int, batch: int, seconds: float) -> list[float]:
    """Steps/s of each of ``processes`` workers running at the same time."""
    cmd = [sys.executable, __file__, "--worker", "--batch", str(batch), "--seconds", str(seconds)]
    workers = [
        subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    for w in workers:
        assert w.stdout is not None
        if w.stdout.readline().strip() != "ready":
            raise RuntimeError(f"a worker failed before it was ready (exit {w.wait()})")
    for w in workers:
        assert w.stdin is not None
        w.stdin.write("go\n")
        w.stdin.flush()
    outputs = [w.communicate()[0].strip().splitlines()[-1] for w in workers]
    return [json.loads(line)["steps_per_s"] for line in outputs]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "concurrency.json")
    parser.add_argument("--processes", default="1,4,12", help="comma-separated counts")
    parser.add_argument("--batches", default="12,64", help="rows per step (12 = 64 kept at 0.8)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=12, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.batch, args.seconds)
        return
    results: dict[str, Any] = {}
    for batch in (int(b) for b in args.batches.split(",")):
        alone = None
        for count in (int(p) for p in args.processes.split(",")):
            rates = together(count, batch, args.seconds)
            alone = alone or rates[0]  # the first count listed is the baseline (1)
            results[f"batch{batch}_x{count}"] = {
                "steps_per_s_each": rates,
                "steps_per_s_total": sum(rates),
                "total_vs_one_process": sum(rates) / alone,
            }
            print(batch, count, round(sum(rates), 1), round(sum(rates) / alone, 2), flush=True)
    payload = {"benchmark": "concurrency", "machine": machine(), "results": results}
    print(f"wrote {write_json(payload, args.out)}")


if __name__ == "__main__":
    main()
