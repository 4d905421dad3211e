"""SALN selection speed and agreement against the paper's NumPy algorithm, in one run.

    python -m benchmarks.bench_selection [--out benchmarks/results/selection_cpu.json]
    python -m benchmarks.bench_selection --model-free-epoch   # only the selectors' epoch row
    python -m benchmarks.bench_selection --model-free-epoch --device cuda

CPU: one core (torch and BLAS pinned to one thread); ms per batch for the reference
(``reference_select``), the exact and the Lanczos solver, one batch per call and a whole epoch
per call; speed-ups are ratios against the reference measured in the same run, all candidates
timed in alternating rounds so that machine noise hits them alike. CUDA (when
present): one CIFAR-10 epoch of selections (176 super-batches of 256 rows, d = 2048) with the
batched Lanczos solver against batched ``torch.linalg.eigh`` on the same data.

Model-free epoch: one CIFAR-10 epoch of selections as the sampler makes it (625 batches of 64
rows, d = 1280 as EfficientNet-Lite0's features, filter ratio 0.8, one batched call) for every
model-free selector, as a ratio against ``saln`` with the exact solver in the same run.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.linalg.blas import ssyrk
from tests.conftest import clustered_features
from threadpoolctl import threadpool_limits

from benchmarks.common import (
    RESULTS,
    interleaved_medians,
    machine,
    median_seconds,
    sync,
    write_json,
)
from saln.selection.spectral import (
    reference_select,
    spectral_select,
    spectral_select_with_stats,
)

SOLVER_NAMES = ("exact", "lanczos")


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    sa, sb = set(a.tolist()), set(b.tolist())
    return len(sa & sb) / len(sa | sb)


def agreement(data: np.ndarray, solver: str, refs: list[np.ndarray]) -> dict[str, float]:
    positions, stats = spectral_select_with_stats(data, 0.8, solver=solver)
    scores = np.array([jaccard(p, r) for p, r in zip(positions, refs)])
    gaps = stats["gap"].numpy()
    clear = gaps > 1e-3
    disagree = scores < 1.0
    return {
        "jaccard_mean": float(scores.mean()),
        "jaccard_min": float(scores.min()),
        "jaccard_min_gap_above_1e-3": float(scores[clear].min()) if clear.any() else float("nan"),
        # How clear the clearest spectrum was on which the solver still chose differently.
        "largest_gap_with_disagreement": float(gaps[disagree].max()) if disagree.any() else 0.0,
    }


def each_batch(select: Callable[..., object], data: np.ndarray) -> list[object]:
    """One call per batch, as the published algorithm runs."""
    return [select(x, 0.8) for x in data]


def bench_cpu(batches: int, repeats: int) -> list[dict[str, Any]]:
    rows = []
    for d in (512, 2048):
        for n in (64, 128, 256, 512):
            data = clustered_features(batches, n, d, clusters=10, seed=n + d)
            refs = [reference_select(x, 0.8) for x in data]
            candidates: dict[str, Callable[[], object]] = {
                "reference": partial(each_batch, reference_select, data)
            }
            for solver in SOLVER_NAMES:
                one = partial(spectral_select, solver=solver)
                candidates[f"{solver}_single"] = partial(each_batch, one, data)
                candidates[f"{solver}_epoch"] = partial(one, data, 0.8)
            # The floor of every solver on the exact graph: the CPU path's Gram alone (SYRK).
            candidates["gram"] = partial(each_batch, lambda x, _: ssyrk(1.0, x.T, trans=1), data)
            ms = {k: 1e3 * v / batches for k, v in interleaved_medians(candidates, repeats).items()}
            row: dict[str, Any] = {
                "n": n,
                "d": d,
                "reference_ms": ms["reference"],
                "gram_ms": ms["gram"],
                "speedup_cap_from_gram": ms["reference"] / ms["gram"],
            }
            for solver in SOLVER_NAMES:
                single, epoch = ms[f"{solver}_single"], ms[f"{solver}_epoch"]
                row[solver] = {
                    "ms_per_batch_single": single,
                    "ms_per_batch_epoch_call": epoch,
                    "speedup_single": ms["reference"] / single,
                    "speedup_epoch_call": ms["reference"] / epoch,
                    **agreement(data, solver, refs),
                }
            rows.append(row)
            ex, lz = row["exact"], row["lanczos"]
            print(
                f"n={n:4d} d={d:4d} ref {ms['reference']:7.2f} ms"
                f" | exact x{ex['speedup_single']:.2f} (epoch x{ex['speedup_epoch_call']:.2f})"
                f" | lanczos x{lz['speedup_single']:.2f} (epoch x{lz['speedup_epoch_call']:.2f})"
                f" J={lz['jaccard_mean']:.3f}",
                flush=True,
            )
    return rows


MODEL_FREE = {  # name -> the registered selector's options
    "saln_exact": ("saln", {"solver": "exact"}),
    "uniform": ("uniform", {}),
    "spectral": ("spectral", {}),
    "spectral_strata": ("spectral_strata", {}),
    "class_stratified": ("class_stratified", {}),
}


def bench_model_free_epoch(repeats: int, device: str = "cpu") -> dict[str, Any]:
    """Seconds per epoch of selections for each model-free selector, and each one's time as a
    share of ``saln`` exact's (the issue's budget: at most 3x)."""
    from saln.selection import SELECTORS

    features = torch.from_numpy(clustered_features(625, 64, 1280, clusters=10, seed=11))
    features = features.to(device)
    labels = torch.randint(0, 10, (625, 64), generator=torch.Generator().manual_seed(0))
    labels = labels.to(device)
    keep = 12
    candidates: dict[str, Callable[[], object]] = {}
    for label, (name, options) in MODEL_FREE.items():
        selector: Any = SELECTORS.build(name, **options)
        extra = {"labels": labels} if "labels" in selector.needs else {}
        select = partial(selector.select_many, features, keep, generator=torch.Generator(), **extra)
        candidates[label] = partial(finished, select, features.device)
    seconds = interleaved_medians(candidates, repeats)
    base = seconds["saln_exact"]
    result = {
        "epoch_batches": 625, "n": 64, "d": 1280, "keep": keep, "device": device,
        "seconds": seconds,
        "time_vs_saln_exact": {k: v / base for k, v in seconds.items()},
    }  # fmt: skip
    print(result, flush=True)
    return result


def finished(fn: Callable[[], object], device: torch.device) -> object:
    """``fn``'s result once the device has computed it: CUDA returns before it has."""
    result = fn()
    sync(device)
    return result


def bench_cuda(repeats: int) -> dict[str, Any]:
    data = torch.from_numpy(clustered_features(176, 256, 2048, clusters=10, seed=7)).cuda()
    lanczos = median_seconds(
        lambda: spectral_select(data, 0.8, solver="lanczos"), repeats, sync=True
    )
    eigh = median_seconds(lambda: spectral_select(data, 0.8, solver="exact"), repeats, sync=True)
    # median_seconds' warm-up call solves eagerly and its first timed call captures; with three
    # or more repeats the median is a replay's time.
    graphed = median_seconds(
        lambda: spectral_select(data, 0.8, solver="lanczos", cuda_graph=True),
        max(repeats, 3),
        sync=True,
    )
    replayed = spectral_select(data, 0.8, solver="lanczos", cuda_graph=True).cpu().numpy()
    fast = spectral_select(data, 0.8, solver="lanczos").cpu().numpy()
    exact, stats = spectral_select_with_stats(data, 0.8, solver="exact")
    scores = np.array([jaccard(a, b) for a, b in zip(fast, exact.cpu().numpy())])
    result = {
        "epoch_batches": 176,
        "n": 256,
        "d": 2048,
        "lanczos_epoch_ms": 1e3 * lanczos,
        "torch_eigh_epoch_ms": 1e3 * eigh,
        "speedup_vs_torch_eigh": eigh / lanczos,
        "lanczos_cuda_graph_epoch_ms": 1e3 * graphed,
        "cuda_graph_speedup_vs_eager_lanczos": lanczos / graphed,
        "jaccard_cuda_graph_vs_eager_mean": float(
            np.mean([jaccard(a, b) for a, b in zip(replayed, fast)])
        ),
        "jaccard_vs_eigh_mean": float(scores.mean()),
        "jaccard_vs_eigh_min_gap_above_1e-3": float(
            scores[(stats["gap"] > 1e-3).cpu().numpy()].min()
        ),
    }
    print(result, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON path (default: results/selection_<device>.json)",
    )
    parser.add_argument("--batches", type=int, default=32, help="batches per (n, d) cell")
    parser.add_argument(
        "--repeats", type=int, default=7, help="timed repeats; the median is reported"
    )
    parser.add_argument("--skip-cpu", action="store_true", help="only the CUDA measurement")
    parser.add_argument(
        "--model-free-epoch", action="store_true", help="only the model-free selectors' epoch"
    )
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu", help="for --model-free-epoch"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    threadpool_limits(limits=1, user_api="blas")  # this process is the benchmark's own
    payload: dict[str, Any] = {"benchmark": "selection", "machine": machine(), "threads": 1}
    if args.model_free_epoch:
        payload["model_free_epoch"] = bench_model_free_epoch(args.repeats, args.device)
        default = RESULTS / f"selection_model_free_{args.device}.json"
        out = write_json(payload, args.out or default)
        print(f"wrote {out}")
        return
    if not args.skip_cpu:
        payload["cpu"] = bench_cpu(args.batches, args.repeats)
    if torch.cuda.is_available():
        payload["cuda"] = bench_cuda(args.repeats)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = write_json(payload, args.out or RESULTS / f"selection_{device}.json")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
