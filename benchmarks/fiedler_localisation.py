"""How much of each batch's Fiedler vector sits on one sample, in trained SALN runs and in the
paper's own NumPy recipe on cached features.

    python -m benchmarks.fiedler_localisation RUN_DIR [RUN_DIR ...] \
        [--features CACHE.npy --rows 64,320 --batches 500] [--out benchmarks/results/X.json]

A unit Fiedler vector spread evenly over n rows puts 1/n of its squared mass on each; a vector
localised on one weakly linked sample puts nearly all of it there, and the other kept rows are
then ranked by entries close to zero. For each run (a ``saln`` run directory) this reads the
final epoch's ``spectral.json``: its ``top_entry_mass`` where the run recorded it,
else the share derived from the kept rows' |Fiedler| x sqrt(n), n from the run's config.
``--features`` repeats the measurement with ``saln.selection.reference_fiedler`` (NumPy eigh
on the dense Laplacian, as the paper computes it) on random batches of a feature cache, so the
result does not rest on our solvers, and asks which rows the other kept ones are: how much of
the kept set (``keep`` = n x (1 - filter ratio)) is the ``keep`` least connected rows, and the
top row with the ``keep - 1`` rows least similar to it. ``--variants`` measures every repaired
spectral ranking (``saln.selection.repaired``) on the same batches: the top-entry mass and how
much of its kept set is the batch's least connected rows (on the paper's cosine graph).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import machine, write_json
from saln import config as cfg
from saln.selection import reference_fiedler
from saln.selection.base import keep_count
from saln.train.methods import METHODS
from saln.train.setup import batch_shape


def summarise(top_mass: np.ndarray) -> dict[str, float]:
    return {
        "batches": len(top_mass),
        "median": float(np.median(top_mass)),
        "share_above_half": float(np.mean(top_mass > 0.5)),
        "share_above_0.9": float(np.mean(top_mass > 0.9)),
    }


def top_mass_of_run(run: Path) -> np.ndarray:
    """Per batch of the final epoch, the share of |Fiedler|^2 on the largest entry."""
    record = json.loads((run / "spectral.json").read_text())
    if "top_entry_mass" in record:
        return np.asarray(record["top_entry_mass"])
    rows, keep = batch_shape(cfg.load(run / "config.yaml"), METHODS.build("saln"))
    kept = np.asarray(record["abs_fiedler_kept"])  # |v| x sqrt(rows), batch after batch
    if len(kept) != len(record["gaps"]) * keep:
        raise SystemExit(f"{run}: the kept values were truncated; cannot group them by batch")
    return (kept.reshape(-1, keep) ** 2 / rows).max(axis=1)


def cosine(x: np.ndarray) -> np.ndarray:
    unit = x / np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-12)
    return unit @ unit.T


def kept_overlaps(sim: np.ndarray, kept: np.ndarray) -> dict[str, float]:
    """Share of ``kept`` (positions, largest |Fiedler| first) that is the ``len(kept)`` least
    connected rows of the similarity graph ``sim``, and that is ``kept[0]`` with the rows least
    similar to it."""
    keep = len(kept)
    least_connected = np.argsort(sim.sum(axis=1), kind="stable")[:keep]
    top = int(kept[0])
    unlike_top = [j for j in np.argsort(sim[top], kind="stable") if j != top][: keep - 1]
    return {
        "least_connected": len(set(kept) & set(least_connected)) / keep,
        "top_and_least_similar_to_it": len(set(kept) & {top, *unlike_top}) / keep,
    }


def oracle(
    features: np.ndarray, rows: int, batches: int, seed: int, filter_ratio: float = 0.8
) -> dict[str, float]:
    """The paper's recipe on random batches: top-entry mass, how often the largest entry is the
    batch's least connected sample (the lowest row sum of the cosine similarities), and what the
    kept rows are (:func:`kept_overlaps`; a random set of ``keep`` rows scores keep / rows)."""
    rng = np.random.default_rng(seed)
    keep = keep_count(rows, filter_ratio)
    masses, least_connected, overlaps = [], [], []
    for _ in range(batches):
        x = np.asarray(features[rng.choice(len(features), rows, replace=False)], np.float32)
        fiedler = reference_fiedler(x)
        squared = fiedler**2
        masses.append(squared.max() / squared.sum())
        sim = cosine(x)
        least_connected.append(squared.argmax() == sim.sum(axis=1).argmin())
        overlaps.append(kept_overlaps(sim, np.argsort(-np.abs(fiedler), kind="stable")[:keep]))
    return {
        **summarise(np.asarray(masses)),
        "share_top_is_least_connected": float(np.mean(least_connected)),
        "keep": keep,
        **{f"kept_vs_{k}": float(np.mean([o[k] for o in overlaps])) for k in overlaps[0]},
        "kept_vs_random_expected": keep / rows,
    }


# name -> GraphOptions of the repaired ranking; "paper" is SALN's own graph
VARIANTS: dict[str, dict[str, Any]] = {
    "paper": {"centre": False, "graph": "dense", "laplacian": "combinatorial"},
    "centred": {"centre": True, "graph": "dense", "laplacian": "combinatorial"},
    "knn": {"centre": False, "graph": "knn", "laplacian": "combinatorial"},
    "normalized": {"centre": False, "graph": "dense", "laplacian": "normalized"},
    "regularized": {"centre": False, "graph": "dense", "laplacian": "regularized"},
    "centred_knn_normalized": {"centre": True, "graph": "knn", "laplacian": "normalized"},
    "centred_knn_regularized (default)": {},
}


def variants(
    features: np.ndarray, rows: int, batches: int, seed: int, filter_ratio: float = 0.8
) -> dict[str, dict[str, float]]:
    """Each repaired ranking on the same random batches: its top-entry mass, and the share of
    its kept rows that are the batch's ``keep`` least connected rows (a random set: keep/rows)."""
    import torch

    from saln.selection.repaired import GraphOptions, repaired_select
    from saln.train.diagnostics import top_entry_mass

    rng = np.random.default_rng(seed)
    picks = [rng.choice(len(features), rows, replace=False) for _ in range(batches)]
    x = torch.from_numpy(np.stack([np.asarray(features[p], np.float32) for p in picks]))
    keep = keep_count(rows, filter_ratio)
    unit = torch.nn.functional.normalize(x, dim=-1)
    connection = (unit @ unit.transpose(1, 2)).sum(-1)
    least = torch.zeros(batches, rows, dtype=torch.bool)
    least.scatter_(1, connection.argsort(dim=-1, stable=True)[:, :keep], True)
    out = {}
    for name, options in VARIANTS.items():
        positions, stats = repaired_select(x, keep, GraphOptions(**options))
        overlap = least.gather(1, positions).float().mean(-1)
        out[name] = {
            **summarise(top_entry_mass(stats["abs_fiedler"]).numpy()),
            "kept_vs_least_connected": float(overlap.mean()),
        }
    out["random_expected"] = {"kept_vs_least_connected": keep / rows}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="*", type=Path, help="saln run directories")
    parser.add_argument("--features", type=Path, help="a feature cache (.npy) for the oracle")
    parser.add_argument(
        "--rows", default="64", help="rows per oracle batch, comma-separated for several"
    )
    parser.add_argument("--batches", type=int, default=500, help="oracle batches")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--variants", action="store_true", help="also every repaired spectral ranking"
    )
    parser.add_argument("--out", type=Path, help="write the result here as JSON")
    args = parser.parse_args()
    result: dict[str, Any] = {"benchmark": "fiedler_localisation", "machine": machine()}
    # named by their last three parts (cifar10_paper/runs/saln-seed0), wherever they were unpacked
    result["runs"] = {
        "/".join(run.parts[-3:]): summarise(top_mass_of_run(run)) for run in args.runs
    }
    if args.features is not None:
        features = np.load(args.features, mmap_mode="r")
        result["oracles"] = [
            {
                "features": args.features.name,
                "rows": rows,
                **oracle(features, rows, args.batches, args.seed),
            }
            for rows in map(int, args.rows.split(","))
        ]
        if args.variants:
            result["variants"] = {
                rows: variants(features, rows, args.batches, args.seed)
                for rows in map(int, args.rows.split(","))
            }
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))
    if args.out is not None:
        write_json(result, args.out)


if __name__ == "__main__":
    main()
