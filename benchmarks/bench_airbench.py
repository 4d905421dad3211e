"""saln's ``cifar10_airbench94`` beside airbench's own ``train94``, on one GPU, same process.

    pip install -e ".[bench]"        # airbench 0.1.8 (or PYTHONPATH to its unpacked sdist)
    python -m benchmarks.bench_airbench --seeds 10

airbench reads ``cifar10/train.pt`` and ``test.pt`` under the working directory (uint8 HWC
images, labels, class names) and would download them when missing; this writes them first from
the JPEG archive saln trains on (``--archive``), so nothing is downloaded and both train on the
same images. Each side gets one untimed warm-up run, then the runs alternate (airbench, saln,
airbench, ...) so a slow spell of the machine hits both. A run's time is its wall clock,
synchronised: for airbench, ``train94`` (its own timer leaves out the evaluation and the first
epoch's preprocessing; this counts everything it does); for saln, ``fit`` from the config to
the summary (data already decoded and cached, as airbench's are). Accuracy: test, with
airbench's TTA level 2 on both sides. JSON to ``benchmarks/results/airbench_side_by_side.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tarfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import RESULTS, machine, write_json
from saln.config import load
from saln.data import build_dataset
from saln.data.decode import decode_all
from saln.errors import InvalidInput
from saln.train.engine import fit

ARCHIVE = Path("../shared/data/cifar10-jpeg.tar.gz")
CONFIG = "cifar10_airbench94"


def airbench_module() -> Any:
    try:
        import airbench
    except ImportError:
        raise InvalidInput(
            'airbench is not installed: pip install -e ".[bench]" (airbench 0.1.8)'
        ) from None
    return airbench


def unpack(archive: Path, into: Path) -> Path:
    """The JPEG tree (``cifar10-jpeg/{train,test}/<class>/``) under ``into``, once."""
    root = into / "cifar10-jpeg"
    if not root.exists():
        with tarfile.open(archive) as tar:
            tar.extractall(into, filter="data")
    return root


def write_airbench_split(root: Path, split: str, out: Path) -> None:
    """airbench's ``{train,test}.pt``: uint8 (N, 32, 32, 3) images, int64 labels, class names,
    decoded from the JPEGs saln reads."""
    if out.exists():
        return
    bundle = build_dataset(f"imagefolder:{root}", "data", False)
    source = bundle.train if split == "train" else bundle.test
    images = decode_all(source, 32).permute(0, 2, 3, 1).contiguous()
    labels = torch.from_numpy(np.asarray(source.labels, dtype=np.int64))
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"images": images, "labels": labels, "classes": list(bundle.classes)}, out)


@contextlib.contextmanager
def working_directory(path: Path) -> Iterator[None]:
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def timed(fn: Callable[[], float]) -> dict[str, float]:
    torch.cuda.synchronize()
    start = time.perf_counter()
    accuracy = fn()
    torch.cuda.synchronize()
    return {"seconds": time.perf_counter() - start, "test_acc": accuracy}


def airbench_run(airbench: Any, run: int) -> float:
    model = airbench.train94(run=run, verbose=False)
    loader = airbench.CifarLoader("cifar10", train=False, batch_size=2000)
    return float(airbench.evaluate(model, loader, tta_level=2))


def saln_run(root: Path, runs: Path, seed: int) -> float:
    overrides = {"data.dataset": f"imagefolder:{root}", "train.seed": seed,
                 "train.progress": False}  # fmt: skip
    return fit(load(CONFIG, overrides), runs / f"seed{seed}", overwrite=True).test_acc_last


def summary(runs: list[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {"n": len(runs)}
    for key in ("seconds", "test_acc"):
        values = [r[key] for r in runs]
        out[f"{key}_mean"] = statistics.fmean(values)
        out[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="timed runs per side")
    parser.add_argument("--archive", type=Path, default=ARCHIVE)
    parser.add_argument("--work", type=Path, default=Path("runs/bench_airbench"))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("it times both trainers on a GPU, and none is visible: run it on one")
    try:
        airbench = airbench_module()
    except InvalidInput as err:
        parser.error(str(err))
    work = args.work.resolve()
    root = unpack(args.archive.resolve(), work)
    for split in ("train", "test"):
        write_airbench_split(root, split, work / "cifar10" / f"{split}.pt")
    results: dict[str, list[dict[str, float]]] = {"airbench_train94": [], "saln": []}
    with working_directory(work):
        airbench.warmup94(verbose=False)
        saln_run(root, work / "saln", seed=10_000)  # warm-up: decodes and caches the data
        for seed in range(args.seeds):
            results["airbench_train94"].append(timed(partial(airbench_run, airbench, seed)))
            results["saln"].append(timed(partial(saln_run, root, work / "saln", seed)))
            print(seed, results["airbench_train94"][-1], results["saln"][-1], flush=True)
    sides = {name: summary(runs) for name, runs in results.items()}
    ratio = sides["saln"]["seconds_mean"] / sides["airbench_train94"]["seconds_mean"]
    payload = {"machine": machine(), "config": CONFIG, "runs": results, "summary": sides,
               "saln_time_over_airbench": ratio}  # fmt: skip
    print(write_json(payload, RESULTS / "airbench_side_by_side.json"))


if __name__ == "__main__":
    main()
