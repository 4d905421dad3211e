"""Print the markdown tables of docs/benchmarks.md from the JSON results (no typed numbers).

python benchmarks/tables.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    print(f"### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()


def pair(a: float, b: float) -> str:
    return f"{a:.2f}x / {b:.2f}x"


def selection(name: str, data: dict[str, Any]) -> None:
    rows = []
    for r in data.get("cpu", []):
        ex, lz = r["exact"], r["lanczos"]
        rows.append(
            [
                str(r["n"]),
                str(r["d"]),
                f"{r['reference_ms']:.2f}",
                pair(ex["speedup_single"], ex["speedup_epoch_call"]),
                pair(lz["speedup_single"], lz["speedup_epoch_call"]),
                f"{ex['jaccard_mean']:.3f}",
                f"{lz['jaccard_mean']:.3f}",
            ]
        )
    header = [
        "n",
        "d",
        "reference ms/batch",
        "exact: single / epoch",
        "lanczos: single / epoch",
        "Jaccard exact",
        "Jaccard lanczos",
    ]
    table(f"{name} ({data['machine']['cpu']}, {data['machine']['date']})", header, rows)


def step(name: str, data: dict[str, Any]) -> None:
    rows = [
        [
            method,
            f"{r['loaded_batch']} / {r['kept_batch']}",
            f"{r['train']:.3f}",
            f"{r['epoch_time_vs_standard']:.2f}",
            f"{r['selection_share_of_step']:.2f}",
        ]
        for method, r in data["methods"].items()
    ]
    header = ["method", "loaded / trained rows", "epoch s", "epoch vs standard", "selection / step"]
    table(f"{name} (overrides: {' '.join(data['overrides']) or 'none'})", header, rows)


def features(name: str, data: dict[str, Any]) -> None:
    rows = [
        [
            r["loader"],
            f"{r['extraction_img_per_s']:.1f}",
            f"{r['pure_inference_img_per_s']:.1f}",
            f"{r['ratio']:.2f}",
        ]
        for r in data["rows"]
    ]
    header = ["loader", "extraction img/s", "pure inference img/s", "ratio"]
    table(
        f"{name} ({data['encoder']}, {data['image_size']} px, {data['images']} images)",
        header,
        rows,
    )


KINDS = {"selection": selection, "step": step, "features": features}

if __name__ == "__main__":
    for result in sorted(RESULTS.glob("*.json")):
        kind = result.stem.split("_")[0]
        if kind in KINDS:
            KINDS[kind](result.name, json.loads(result.read_text()))
