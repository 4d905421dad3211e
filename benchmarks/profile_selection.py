"""Where an epoch's graphed SALN selection spends its time on a GPU (torch.profiler).

    PYTHONPATH=src python -m benchmarks.profile_selection --out OUT/selection_profile.json

bench_gpu.py measured 11.6 ms per 224 px epoch of selections (63 super-batches of 640 rows,
1,280-d features, plus a 320-row tail) against a 2.8 ms memory-traffic floor. This profiles the
same calls as the sampler makes them (``select_many`` on the full batches, ``select`` on the
tail, positions read back to the host) and writes the operators that take the time, by device
and by host time. On CPU it runs the same code on small shapes, to check the script.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.common import RESULTS, machine, sync, write_json
from saln.selection.spectral import SpectralSelector

# (label, full super-batches, rows, tail rows, feature dim): bench_gpu.py's fixed-batch epochs.
SHAPES = {
    "cuda": [("224px", 63, 640, 320, 1280), ("32px", 31, 1280, 320, 1280)],
    "cpu": [("smoke", 4, 64, 32, 32)],
}
ROWS_SHOWN = 15


def epoch_of_selections(
    selector: SpectralSelector, full: torch.Tensor, tail: torch.Tensor, keep: int
) -> None:
    """What the sampler does per epoch: one batched call, one tail call, both read back."""
    positions, _ = selector.select_many(full, keep)
    positions.cpu()
    tail_keep = max(1, tail.shape[1] * keep // full.shape[1])
    positions, _ = selector.select_many(tail, tail_keep)
    positions.cpu()


def top_operators(prof: Any, key: str, calls: int) -> list[dict[str, Any]]:
    rows = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)
    return [
        {
            "name": e.key,
            "count_per_epoch": e.count / calls,
            "device_ms_per_epoch": e.device_time_total / 1e3 / calls,
            "host_ms_per_epoch": e.cpu_time_total / 1e3 / calls,
            "self_host_ms_per_epoch": e.self_cpu_time_total / 1e3 / calls,
        }
        for e in rows[:ROWS_SHOWN]
    ]


def profile_shape(
    device: torch.device, full_batches: int, rows: int, tail_rows: int, dim: int, calls: int
) -> dict[str, Any]:
    gen = torch.Generator(device=device).manual_seed(0)
    full = torch.randn(full_batches, rows, dim, device=device, generator=gen).abs()
    tail = torch.randn(1, tail_rows, dim, device=device, generator=gen).abs()
    selector = SpectralSelector(cuda_graph=device.type == "cuda")
    keep = rows // 5
    for _ in range(3):  # eager, capture, first replay
        epoch_of_selections(selector, full, tail, keep)
    sync(device)
    start = time.perf_counter()
    for _ in range(calls):
        epoch_of_selections(selector, full, tail, keep)
    sync(device)
    epoch_ms = (time.perf_counter() - start) * 1e3 / calls
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(calls):
            epoch_of_selections(selector, full, tail, keep)
        sync(device)
    return {
        "shape": {"full_batches": full_batches, "rows": rows, "tail_rows": tail_rows, "dim": dim},
        "epoch_ms_unprofiled": epoch_ms,
        "by_device_time": top_operators(prof, "device_time_total", calls),
        "by_host_time": top_operators(prof, "cpu_time_total", calls),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=RESULTS / "selection_profile.json")
    parser.add_argument("--calls", type=int, default=5, help="epochs of selections profiled")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    payload: dict[str, Any] = {"benchmark": "selection_profile", "machine": machine()}
    for label, full_batches, rows, tail_rows, dim in SHAPES[device.type]:
        result = profile_shape(device, full_batches, rows, tail_rows, dim, args.calls)
        payload[label] = result
        print(f"{label}: {result['epoch_ms_unprofiled']:.2f} ms per epoch of selections")
        by = "by_device_time" if device.type == "cuda" else "by_host_time"
        for row in result[by][:8]:
            print(
                f"  {row['device_ms_per_epoch']:7.3f} ms device  {row['host_ms_per_epoch']:7.3f}"
                f" ms host  x{row['count_per_epoch']:.0f}  {row['name']}"
            )
        write_json(payload, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
